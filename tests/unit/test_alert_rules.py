"""infra/prometheus/alerts.yml: valid Prometheus rules (promtool when installed, and our own parser check), about
metrics the services really export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "alerts.yml"
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


def exported_metrics() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.joinpath("shared").rglob("*.py"), *ROOT.joinpath("services").rglob("*.py")]:
        names |= set(re.findall(r"[\"'](safe_[a-z_]+)[\"']", path.read_text()))
    return names


def test_every_alert_rule_is_well_formed_and_names_a_metric_the_services_export() -> None:
    doc = yaml.safe_load(RULES.read_text())
    exported = exported_metrics()
    alerts = []
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            alerts.append(rule["alert"])
            assert DURATION.match(rule["for"]), rule
            assert rule["labels"]["severity"] in {"page", "ticket", "warning", "critical"}
            assert rule["annotations"]["summary"]
            expr = rule["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            # a Counter registered as "safe_x" is exported as safe_x_total
            metrics = {re.sub(r"_total$", "", m) for m in re.findall(r"\b(safe_[a-z_]+)\b", expr)}
            assert metrics <= exported, f"{rule['alert']}: {metrics - exported} not exported"
    assert len(alerts) == len(set(alerts))
    assert any("safe_cases_over_sla" in r["expr"] for g in doc["groups"] for r in g["rules"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (infra/scripts/ensure-promtool.sh)")
def test_promtool_accepts_the_rules_and_refuses_a_broken_copy(tmp_path) -> None:
    ok = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("max by (status) (safe_cases_over_sla) > 0", "max by (status (x > 0"))
    bad = subprocess.run(["promtool", "check", "rules", str(broken)], capture_output=True, text=True)
    assert bad.returncode != 0
