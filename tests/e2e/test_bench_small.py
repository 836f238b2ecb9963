"""`make bench` in miniature: the benchmark runs end to end and reports every figure. It asserts no speed
(this machine is shared); it does assert that no case was lost or doubled under load."""

from __future__ import annotations

import json

import pytest

from safe_procurement.services.launcher import SERVICES
from tests.bench import run as bench

pytestmark = pytest.mark.e2e


def test_the_bench_reports_every_figure_and_loses_no_case(tmp_path, redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    report = bench.main(["--quick", "--cases", "20", "--rates", "0.5", "--rate-seconds", "1", "--repeat", "2", "--baseline-messages", "500",
                         "--list-cases", "1000", "--out", str(tmp_path)])

    assert report["baseline"]["messages_per_s"] > 0 and report["baseline"]["hops"] == 4
    p = report["platform"]
    for phase in ("http_saturation", "xadd_saturation"):
        assert p[phase]["final"] == p[phase]["cases"] == 20, p[phase]
        assert p[phase]["cases_per_s"] > 0
        assert p[phase]["errors"] == 0
        # --repeat 2: two runs of each saturation phase; the reported one is among them
        assert len(p[phase]["runs"]) == 2 and p[phase]["cases_per_s"] in p[phase]["runs"]
        assert p[phase]["range"] == [min(p[phase]["runs"]), max(p[phase]["runs"])]
    assert set(report["ratios"]) == {"http_saturation", "xadd_saturation"}
    [at50] = p["offered"]
    assert at50["fraction"] == 0.5 and at50["final"] == at50["cases"]
    assert len(at50["runs"]) == 2 and at50["p99_range"][0] <= at50["latency_ms"]["p99"] <= at50["p99_range"][1]
    assert all(at50["latency_ms"][k] > 0 for k in ("p50", "p95", "p99"))
    # where each case's time went, hop by hop (every case of the run is approved, so each has every hop)
    hops = at50["hops_ms"]
    assert list(hops) == ["intake", "verification", "verdict→loan request", "loan decision", "final"]
    assert all(h["n"] == at50["final"] and 0 <= h["p50"] <= h["p99"] for h in hops.values()), hops
    # the mean batch size of each stream of the flow, from the services' /metrics
    assert {k for k in at50["batch_size"]} >= {
        "applications origin-verification.origin-verification-completed", "applications loan-disbursement.loan-approved",
        "origin_verification applications.procurement-submitted", "loan_disbursement applications.loan-requested"}
    assert all(v >= 1 for v in at50["batch_size"].values())
    assert set(p["cpu_ms_per_case_http"]) == {*SERVICES, "redis"} == set(p["cpu_ms_per_case_xadd"])
    assert set(p["peak_rss_mb"]) == set(SERVICES)
    assert all(v > 0 for v in p["peak_rss_mb"].values())

    integrity = p["integrity"]
    assert integrity["ok"], integrity
    assert integrity["lost"] == integrity["not_final"] == integrity["doubled"] == 0
    assert integrity["approved_cases"] == integrity["loan_approved_events"]

    costs = report["batch_cost"]
    assert {(s, h) for s, hs in costs.items() for h in hs} == {
        ("applications", "SubmitProcurement"), ("applications", "OriginVerificationCompleted"),
        ("applications", "LoanApproved"),
        ("origin_verification", "ProcurementSubmitted"), ("loan_disbursement", "LoanRequested")}
    assert all(f["batch_of_1_ms"] > 0 and f["batch_of_50_ms"] > 0 for hs in costs.values() for f in hs.values())
    assert report["bom"]["components"] == 10_000 and report["bom"]["median_ms"] > 0
    assert report["list"]["first_page"]["median_ms"] > 0 and report["list"]["deep_page"]["median_ms"] > 0
    assert {t["target"] for t in report["targets"]} >= {"cases/s at saturation (HTTP)", "p99 ms at 50 % of saturation",
                                                        "10k-component BOM ms (median)", "list deep page ms (median)"}
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert saved["platform"]["integrity"]["ok"]
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_the_soak_samples_every_process_memory_over_stored_cases_and_loses_no_case(tmp_path, redis_url, monkeypatch):
    """`make soak` in small: 20 s of half the measured saturation, with 500 cases stored beforehand (--preload)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    report = bench.main(["--quick", "--cases", "20", "--soak", "20", "--soak-sample", "1", "--preload", "500",
                         "--only", "platform", "--out", str(tmp_path)])

    p = report["platform"]
    assert p["preload"]["cases"] == 500
    assert p["preload"]["rows"]["cases"] == 500 and p["preload"]["rows"]["case_participants"] >= 500
    assert p["preload"]["rows"]["timeline"] >= 500 and p["preload"]["rows"]["outbox"] >= 500
    soak = p["soak"]
    assert soak["offered_per_s"] == round(p["http_saturation"]["cases_per_s"] * 0.5, 1)
    assert soak["final"] == soak["cases"] > 0 and soak["errors"] == 0
    assert p["integrity"]["ok"], p["integrity"]
    # a sample about every second, of every service process
    assert len(soak["samples"]) >= 10
    assert set(soak["samples"][-1]["rss_mb"]) == {f"{s}#1" for s in SERVICES}
    assert set(soak["rss_growth"]) == {f"{s}#1" for s in SERVICES}
    assert all(g["peak_mb"] >= g["warm_mb"] > 0 for g in soak["rss_growth"].values())
    assert soak["windows"] and sum(w["cases"] for w in soak["windows"]) == soak["final"]
    saved = json.loads((tmp_path / "soak.json").read_text())
    assert saved["soak"]["samples"] == soak["samples"] and saved["integrity"]["ok"]
    assert (tmp_path / "soak.png").stat().st_size > 0
