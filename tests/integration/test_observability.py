"""Observability: Prometheus metrics per service, JSON logs on handle and publish, and one OpenTelemetry
trace that follows a case from one service to another."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.app import ServiceSpec, create_app
from safe_procurement.shared.kit.logs import JsonFormatter
from safe_procurement.shared.kit.messaging import Messaging
from safe_procurement.shared.kit.settings import ServiceSettings
from safe_procurement.shared.kit.uow import UnitOfWork
from tests import dbs
from tests.builders import proposal
from tests.integration.helpers import FAST, read_all, xadd

APPLICATIONS_MIGRATIONS = str(Path(__file__).resolve().parents[2] / "services" / "applications" / "migrations")


def applications(tmp_path: Path, prefix: str, **overrides: Any) -> Any:
    return build_app(Settings(database_url=dbs.url(tmp_path, "apps"), stream_prefix=prefix,
                              consumer_name="t1", **(FAST | overrides)))


# --- metrics ----------------------------------------------------------------------------------------------


async def test_metrics_show_faststream_stream_health_dead_letters_outbox_and_cases(tmp_path, prefix, redis_client):
    async with running(applications(tmp_path, prefix)) as (client, _rt):
        case = (await client.post("/procurements", json=proposal())).json()["id"]
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, proposal())
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, "{not json")

        async def metrics() -> dict[str, list[Any]] | None:
            r = await client.get("/metrics", headers={"Authorization": ""})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            families = {f.name: f.samples for f in text_string_to_metric_families(r.text)}
            dead = [s.value for s in families.get("safe_dead_letters_open", [])]
            done = [s.value for s in families.get("safe_messages_processed", [])
                    if s.labels["stream"] == streams.SUBMIT_PROCUREMENT and s.name.endswith("_total")]
            return families if dead == [1.0] and done == [2.0] and "faststream_received_messages" in families else None

        families = await wait_for(metrics, message="metrics after a dead letter")
        for name in ("safe_stream_pending", "safe_stream_lag", "safe_stream_oldest_pending_age_seconds",
                     "safe_dead_letters_open", "safe_outbox_unsent", "safe_cases",
                     "faststream_received_messages", "faststream_received_processed_messages_duration_seconds"):
            assert name in families, name
        submit = [s for s in families["safe_stream_pending"] if s.labels["stream"] == streams.SUBMIT_PROCUREMENT]
        assert submit and submit[0].labels["service"] == "applications"
        assert {s.labels["stream"] for s in families["safe_stream_lag"]} >= {
            streams.SUBMIT_PROCUREMENT, streams.ORIGIN_VERIFICATION_COMPLETED, streams.LOAN_APPROVED}
        # the mean batch size is processed / batches: two entries of the command stream, in one batch or two
        batches = {s.labels["stream"]: s.value for s in families["safe_message_batches"]
                   if s.name == "safe_message_batches_total"}
        assert 1 <= batches[streams.SUBMIT_PROCUREMENT] <= 2
        assert batches[streams.LOAN_APPROVED] == 0
        cases = {s.labels["status"]: s.value for s in families["safe_cases"]}
        assert sum(cases.values()) == 2 and set(cases) <= {"submitted", "verifying"}
        assert case


# --- logs ---------------------------------------------------------------------------------------------------


@contextmanager
def captured() -> Iterator[io.StringIO]:
    """The JSON formatter's output of every log record while the block runs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("applications"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)


def lines(out: io.StringIO, message: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return [r for r in records if r["message"] == message]


async def test_handle_and_publish_log_lines_carry_service_event_id_and_correlation_id(tmp_path, prefix, redis_client):
    async with running(applications(tmp_path, prefix, log_messages=True)) as (client, _rt):
        with captured() as out:
            case = (await client.post("/procurements", json=proposal())).json()["id"]
            await wait_for(lambda: read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED), message="published")
            action = contracts.OperatorActionRecorded(
                correlation_id=case, case_id=case, producer="loan_disbursement", action="facility.update",
                actor="operator", target="facilities/PL",
            )
            await xadd(redis_client, prefix, streams.OPERATOR_ACTION_RECORDED["loan_disbursement"], action)
            stream = streams.OPERATOR_ACTION_RECORDED["loan_disbursement"]

            async def action_handled() -> bool:
                return any(r.get("stream") == stream for r in lines(out, "handled"))
            await wait_for(action_handled, message="the operator action's handled line")
        published = [r for r in lines(out, "published") if r["event_type"] == "ProcurementSubmitted"]
        assert published and published[0]["service"] == "applications"
        assert published[0]["correlation_id"] == case and uuid.UUID(published[0]["event_id"])
        assert published[0]["stream"] == streams.PROCUREMENT_SUBMITTED
        # (the service also handles its own ProcurementSubmitted: the case is then verifying)
        handled = [r for r in lines(out, "handled") if r["stream"] == stream]
        assert handled[0]["service"] == "applications" and handled[0]["event_id"] == str(action.event_id)
        assert handled[0]["correlation_id"] == case and handled[0]["logger"] == "safe.messages"


async def _logged(out: io.StringIO, message: str) -> bool:
    return bool(lines(out, message))


async def test_per_message_lines_are_off_by_default(tmp_path, prefix, redis_client):
    async with running(applications(tmp_path, prefix)) as (client, _rt):
        assert not logging.getLogger("safe.messages").isEnabledFor(logging.INFO)
        with captured() as out:
            await client.post("/procurements", json=proposal())
            await wait_for(lambda: read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED), message="published")
        assert lines(out, "published") == [] and lines(out, "handled") == []


# --- tracing ------------------------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every finished span of this test. The SDK provider is process-wide (a service's lifespan installs one
    when none is), so the exporter is added to whichever provider is there."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()  # detaches the exporter; the provider keeps running for other tests


def probe_service(tmp_path: Path, prefix: str, seen: list[dict[str, Any]]) -> Any:
    """A second service: another Messaging instance reading ProcurementSubmitted in its own group."""
    settings = ServiceSettings(service_name="probe", database_url=dbs.url(tmp_path, "probe"),
                               stream_prefix=prefix, consumer_name="p1", **FAST)

    def setup(m: Messaging, _rt: Any) -> None:
        @m.subscribe(streams.PROCUREMENT_SUBMITTED, contracts.ProcurementSubmitted)
        async def on_procurement_submitted(event: contracts.ProcurementSubmitted, _uow: UnitOfWork) -> None:
            """Record the span the kit opened for this message."""
            span = trace.get_current_span().get_span_context()
            seen.append({"case": event.case_id, "trace_id": span.trace_id, "span_id": span.span_id})

    spec = ServiceSpec(name="probe", title="probe", description="a second service", settings=settings,
                       migrations=APPLICATIONS_MIGRATIONS)
    return create_app(spec, messaging_setup=setup)


async def test_one_trace_follows_a_case_from_applications_to_the_next_service(
    tmp_path, prefix, redis_client, spans
):
    seen: list[dict[str, Any]] = []
    async with running(applications(tmp_path, prefix)) as (client, _rt), running(probe_service(tmp_path, prefix, seen)):
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("operator submits") as root:
            traceparent = f"00-{root.get_span_context().trace_id:032x}-{root.get_span_context().span_id:016x}-01"
            r = await client.post("/procurements", json=proposal(), headers={"traceparent": traceparent})
        case = r.json()["id"]
        await wait_for(lambda: _seen(seen, case), message="the probe service handled the case")

    trace_id = root.get_span_context().trace_id
    # the event on the wire carries the trace context of the request that wrote it
    event = (await read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED))[0]
    assert event["trace_context"]["traceparent"].split("-")[1] == f"{trace_id:032x}"
    # the second service's span for the message belongs to the same trace, as a child of the producer's span
    handled = [s for s in seen if s["case"] == case][0]
    assert handled["trace_id"] == trace_id
    finished = {s.context.span_id: s for s in spans.get_finished_spans()}
    consumer = finished[handled["span_id"]]
    assert consumer.kind == trace.SpanKind.CONSUMER
    assert consumer.attributes["safe.service"] == "probe"
    assert consumer.attributes["messaging.message.conversation_id"] == case
    http = [s for s in finished.values() if s.name == "POST /procurements"]
    assert http and http[0].context.trace_id == trace_id and http[0].parent.span_id == root.get_span_context().span_id
    # its parent is the request's span (or a span inside the request, e.g. FastAPI's endpoint span)
    ancestors, parent = [], consumer.parent
    while parent is not None and parent.span_id in finished:
        ancestors.append(parent.span_id)
        parent = finished[parent.span_id].parent
    assert http[0].context.span_id in ancestors


async def _seen(seen: list[dict[str, Any]], case: str) -> bool:
    return any(s["case"] == case for s in seen)


def test_an_event_without_trace_context_is_still_valid_and_the_field_is_documented():
    event = contracts.ProcurementWithdrawn.model_validate_json(
        json.dumps({"event_type": "ProcurementWithdrawn", "correlation_id": "c", "producer": "applications",
                    "case_id": "c", "reason": "r"})
    )
    assert event.trace_context is None
    assert contracts.Event.model_fields["trace_context"].description
    assert db  # the kit's db module is importable without I/O
