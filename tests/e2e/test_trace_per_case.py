"""One trace per case across every hop: the four services as real processes, exporting by the standard OTEL_*
variables only to a small OTLP/HTTP receiver on loopback. The caller's trace continues through HTTP and through
every event of the case (the trace context is recorded with the event in the outbox and continued by the
consumer), each service under its own service.name, health probes excluded; every log line of the case (the
per-message "handled" and "published" lines included) carries the same trace id."""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path

import pytest

from safe_procurement.services.launcher import SERVICES
from safe_procurement.services.testing.plugin import make_stack
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from tests import builders, dbs
from tests.otlp import Receiver

pytestmark = pytest.mark.e2e


# the hops of an approved case, as (service, consumed stream)
HOPS = {
    ("origin_verification", streams.PROCUREMENT_SUBMITTED),
    ("applications", streams.ORIGIN_VERIFICATION_COMPLETED),
    ("loan_disbursement", streams.LOAN_REQUESTED),
    ("applications", streams.LOAN_APPROVED),
    ("origin_verification", streams.PARTNER_AGREEMENT_RECORDED),
}


def _log_lines(var_dir: Path) -> list[dict]:
    lines = []
    for path in sorted((var_dir / "logs").glob("*.log")):
        for raw in path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
    return lines


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.shutdown()


@pytest.fixture(params=["sqlite", "postgres"])
def traced_stack(request, tmp_path, receiver):
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "one-name-for-all-that-each-service-overrides",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "SAFE_LOG_MESSAGES": "1",
    }
    with contextlib.ExitStack() as resources:
        urls = None
        if request.param == "postgres":
            request.getfixturevalue("pg_admin_url")  # skips (or fails under SAFE_REQUIRE_PG=1) without PostgreSQL
            urls = resources.enter_context(dbs.pg_databases(SERVICES))
        stack = make_stack(tmp_path / "stack", console=False, database_urls=urls, extra_env=env)
        stack.start()
        try:
            yield stack
        finally:
            stack.stop()


async def test_one_case_is_one_trace_across_the_four_services_and_its_log_lines_carry_it(traced_stack, receiver):
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    body = builders.proposal(tag="TRACE")
    async with traced_stack.client() as client:
        client.http.headers["traceparent"] = traceparent
        # the operator's one operation: the registry records an agreement the case relies on, then the case goes in
        r = await client.post_agreement({
            "country": "JP", "kind": "safe_participation", "effective_from": "2026-11-01",
            "content_counts_as_eligible": True, "max_content_share": "0.50", "entities_eligible": False,
            "source": "test: one trace per case",
        })
        assert r.status_code == 201, r.text
        r = await client.submit(body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        del client.http.headers["traceparent"]
        case = await client.wait_for_status(case_id, timeout=90)
        assert case["status"] == "loan_approved", case

    def consumed() -> set[tuple[str, str]]:
        return {(s.service, s.attributes.get("messaging.destination.name", ""))
                for s in receiver.received() if s.kind == "CONSUMER" and s.trace_id == trace_id}

    async def all_hops() -> bool:
        return HOPS <= consumed()

    await wait_for(all_hops, timeout=30, message=f"a consumer span of every hop in trace {trace_id}")
    spans = receiver.received()
    # kept beside the logs for a failure's diagnosis
    (traced_stack.var_dir / "spans.json").write_text(json.dumps([vars(s) for s in spans], indent=1))
    ours = [s for s in spans if s.trace_id == trace_id]
    assert {s.service for s in ours} == set(SERVICES), ours
    # the requests' server spans continue the caller's trace
    assert {(s.service, s.kind) for s in ours if s.kind == "SERVER"} >= {
        ("partner_registry", "SERVER"), ("applications", "SERVER")}, ours
    # a message's span links the span of the batch it came in (FastStream's, in a trace of its own)
    by_id = {s.span_id: s for s in spans}
    handles = [s for s in ours if s.kind == "CONSUMER" and s.name.endswith(" handle")]
    assert handles and all(len(s.links) == 1 for s in handles), handles
    batches = [by_id[s.links[0]] for s in handles if s.links[0] in by_id]
    assert batches and all(b.trace_id != trace_id and b.name.endswith(" process") for b in batches), batches
    # the instrumented SQL statements of the request are in the case's trace (a batch's commit is in the batch's)
    assert [s for s in ours if s.service == "applications" and s.kind == "CLIENT"
            and s.attributes.get("db.system") in ("sqlite", "postgresql")], ours
    # nothing of the case went into another trace
    strays = [s for s in spans if s.trace_id != trace_id
              and s.attributes.get("messaging.message.conversation_id") == case_id]
    assert not strays, strays
    # every span of the trace has its parent in the trace, but the first ones, children of the caller's span
    ids = {s.span_id for s in ours}
    roots = [s for s in ours if s.parent_span_id not in ids]
    assert {s.parent_span_id for s in roots} == {traceparent.split("-")[2]}, roots
    assert not [s for s in spans if "/health" in s.name or "/metrics" in s.name], "probes make no trace"

    # every log line of the case carries its trace id, the per-message lines included
    def case_lines() -> list[dict]:
        return [x for x in _log_lines(traced_stack.var_dir) if case_id in (x.get("correlation_id"), x.get("case_id"))]

    async def every_hop_logged() -> list[dict]:
        lines = case_lines()
        handled = {(x["service"], x["stream"]) for x in lines if x["message"] == "handled"}
        published = {x["stream"] for x in lines if x["message"] == "published"}
        hops = {hop for hop in HOPS if hop[1] != streams.PARTNER_AGREEMENT_RECORDED}
        return lines if hops <= handled and {stream for _, stream in hops} <= published else []

    lines = await wait_for(every_hop_logged, timeout=30, message="a handled and a published line of every hop")
    assert [x for x in lines if x.get("trace_id") != trace_id] == [], lines
