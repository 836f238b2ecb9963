"""The monitoring files under infra/: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`), the Prometheus config is valid, the Grafana dashboard queries only metrics the
services export, and docker compose provisions them. Without promtool the rules get a structural check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "infra" / "prometheus"
GRAFANA = ROOT / "infra" / "grafana"
# what the services export (shared/kit/web.py; tests/integration/test_metrics_conventions.py checks the
# exposition) plus what Prometheus adds itself
EXPORTED = {"safe_stream_lag", "safe_stream_pending", "safe_stream_oldest_pending_age_seconds", "safe_stream_length",
            "safe_dead_letters_open", "safe_outbox_unsent", "safe_messages_processed_total",
            "safe_messages_failed_total", "safe_messages_duplicates_total", "safe_message_batches_total",
            "http_requests_total", "http_request_duration_seconds_bucket", "process_resident_memory_bytes",
            "process_cpu_seconds_total", "safe_registry_replica_ready", "safe_cases_over_sla", "up"}
NOT_METRICS = {"by", "without", "on", "ignoring", "bool", "and", "or", "unless"}


def metrics_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, grouping labels,
    label matchers, ranges or keywords."""
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    return {m for m in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
            if m not in NOT_METRICS and not m.startswith("$")}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (infra/scripts/ensure-promtool.sh)")
def test_promtool_checks_the_rules_their_unit_tests_and_the_config():
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"],
                 ["check", "config", "prometheus.yml"]):
        r = subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_rule_is_complete_and_uses_exported_metrics():
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 8
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
        assert metrics_in(r["expr"]) and metrics_in(r["expr"]) <= EXPORTED, (r["alert"], metrics_in(r["expr"]))
    # every alert has a unit test that makes it fire, or is documented as untested here
    tested = {t["alertname"] for t in yaml.safe_load((PROM / "alerts.test.yml").read_text())["tests"][0]
              ["alert_rule_test"]}
    # the SLA alerts read the gauge tests/integration/test_sla.py checks with an injected clock
    assert set(names) - tested <= {"SafeHttpSlow", "SafeRegistryReplicaNotReady", "SafeCasesOverSla",
                                   "SafeLoanRequestsStuck", "SafeReviewsOverdue"}


def test_the_dashboard_queries_exported_metrics_only():
    dash = json.loads((GRAFANA / "dashboards" / "safe-procurement.json").read_text())
    assert dash["uid"] == "safe-procurement"
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = set().union(*(metrics_in(e) for e in exprs))
    assert used <= EXPORTED, used - EXPORTED
    assert {"http_requests_total", "safe_stream_lag", "safe_stream_pending", "process_resident_memory_bytes"} <= used
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_provisions_prometheus_and_grafana_on_loopback():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    prom, graf = services["prometheus"], services["grafana"]
    assert "./infra/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prom["volumes"]
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in graf["volumes"]
    assert "./infra/grafana/dashboards:/var/lib/grafana/dashboards:ro" in graf["volumes"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "safe-procurement.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    for svc in (prom, graf):
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", svc["image"]), svc["image"]  # pinned to a version
        assert all(p.startswith("${SAFE_BIND_ADDRESS:-127.0.0.1}:") for p in svc["ports"])
    scrape = yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"][0]
    targets = set(scrape["static_configs"][0]["targets"])
    platform = {n for n, s in services.items() if "build" in s and n != "console"}  # the console handles no messages
    assert {t.split(":")[0] for t in targets} == platform
