"""The built wheel, installed into a fresh virtual environment inside another project that has packages of its
own called `services` and `shared`, clashes with neither: that project's harness test (the README's example,
with the one setting the README names) starts the platform with the plugin, runs a case to its loan, and still
imports its own `services` and `shared`; the console script starts from that project's directory too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")


def run(args: list[str], **kw) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(args, capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)
    assert r.returncode == 0, f"{args[:3]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def dev_pin(name: str) -> str:
    """The version requirements-dev.lock pins for `name` (the fresh environment gets the same test tools)."""
    m = re.search(rf"^{re.escape(name)}==([^\s\\]+)", (ROOT / "requirements-dev.lock").read_text(), re.M)
    assert m, f"{name} is not in requirements-dev.lock"
    return f"{name}=={m.group(1)}"


@pytest.fixture(scope="module")
def their_project(tmp_path_factory) -> Path:
    """Another team's project: its own `services` and `shared` packages, and a venv with only the built wheel,
    its locked dependencies, pytest and pytest-asyncio."""
    if not UV.exists():  # pragma: no cover - uv is a dev dependency in requirements-dev.lock
        pytest.fail(f"uv not found beside {sys.executable}; run `make venv`")
    work = tmp_path_factory.mktemp("theirs")
    dist = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)])
    wheel = next(dist.glob("safe_procurement-*.whl"))
    project = work / "project"
    for pkg, text in (("services", "OWNER = 'the ministry'\n"), ("shared", "UNITS = ('EUR',)\n")):
        (project / pkg).mkdir(parents=True)
        (project / pkg / "__init__.py").write_text(text)
    (project / "services" / "payments.py").write_text("def pay() -> str:\n    return 'paid'\n")
    (project / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    run([sys.executable, "-m", "venv", "--without-pip", str(project / ".venv")])
    python = project / ".venv" / "bin" / "python"
    run([str(UV), "pip", "install", "-q", "--python", str(python), "-r", str(ROOT / "requirements.lock")])
    run([str(UV), "pip", "install", "-q", "--python", str(python), "--no-deps", str(wheel)])
    run([str(UV), "pip", "install", "-q", "--python", str(python), dev_pin("pytest"), dev_pin("pytest-asyncio")])
    return project


def test_the_wheel_installs_only_its_own_import_name(their_project):
    python = their_project / ".venv" / "bin" / "python"
    r = run([str(python), "-c", "import importlib.metadata as m; print(m.distribution('safe-procurement')"
             ".read_text('top_level.txt'))"], cwd=their_project)
    assert r.stdout.split() == ["safe_procurement"]


def test_their_harness_test_runs_the_platform_beside_their_own_services_package(their_project, redis_url):
    demo = (ROOT / "services" / "demo" / "proposal.json").read_text()
    (their_project / "test_loan.py").write_text(textwrap.dedent(f'''
        import json
        import uuid

        import services
        import shared
        from services.payments import pay

        PROPOSAL = json.loads({demo!r})


        async def test_our_ministry_system_gets_a_loan(safe_stack):
            body = {{**PROPOSAL, "reference": "THEIRS-" + uuid.uuid4().hex[:8]}}
            async with safe_stack.client() as client:
                r = await client.submit(body)
                case = await client.wait_for_status(r.json()["id"], timeout=90)
            assert case["status"] == "loan_approved"
            assert (services.OWNER, shared.UNITS, pay()) == ("the ministry", ("EUR",), "paid")
    '''))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["REDIS_URL"] = redis_url
    python = their_project / ".venv" / "bin" / "python"
    r = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_loan.py"],
                       cwd=their_project, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout


def test_the_console_script_starts_from_their_directory(their_project):
    script = their_project / ".venv" / "bin" / "safe-procurement"
    r = run([str(script), "--version"], cwd=their_project)
    assert r.stdout.startswith("safe-procurement ")
    r = run([str(script), "up", "--help"], cwd=their_project)
    assert "usage" in r.stdout.lower()
    assert shutil.which("safe-procurement", path=str(script.parent)) == str(script)
