"""The built wheel describes itself (README, licence, classifiers) and carries the example scenarios."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_has_complete_metadata_and_ships_the_scenarios(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("safe_procurement-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = Parser().parsestr(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip()  # the README is the long description
    assert meta["License-Expression"] == "EUPL-1.2"
    assert "Framework :: Pytest" in meta.get_all("Classifier")
    shipped = {Path(n).name for n in names if n.startswith("safe_procurement/services/scenarios/")}
    examples = {p.name for p in (ROOT / "services" / "scenarios").iterdir() if p.suffix in (".json", ".md")}
    assert examples and examples <= shipped
    console = ROOT / "services" / "console"  # the console's pages and assets, without which it cannot start
    assets = {"safe_procurement/services/console/" + str(f.relative_to(console)) for d in ("static", "templates")
              for f in (console / d).rglob("*") if f.is_file()}
    assert assets and assets <= set(names), sorted(assets - set(names))
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"safe_procurement"}  # never a top-level `services` or `shared` in the user's site-packages
