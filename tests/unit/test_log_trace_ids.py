"""The per-message log lines name the trace of their message, not whatever span is current when they are written:
"handled" its message's span (closed by then, under the batch's span), "published" the trace context its event
was recorded with (the relay runs in a round of its own)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from safe_procurement.shared.kit import logs

MESSAGE_TRACE = "0af7651916cd43dd8448eb211c80319c"
MESSAGE_SPAN = "b7ad6b7169203331"
BATCH = NonRecordingSpan(SpanContext(int("1" * 32, 16), int("2" * 16, 16), is_remote=False,
                                     trace_flags=TraceFlags(TraceFlags.SAMPLED)))


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter("svc"))
    level, propagate = logs.MESSAGES.level, logs.MESSAGES.propagate
    logs.MESSAGES.addHandler(handler)
    logs.MESSAGES.setLevel(logging.INFO)
    logs.MESSAGES.propagate = False
    try:
        yield out
    finally:
        logs.MESSAGES.removeHandler(handler)
        logs.MESSAGES.setLevel(level)
        logs.MESSAGES.propagate = propagate


def _last(out: io.StringIO) -> dict:
    return json.loads(out.getvalue().splitlines()[-1])


def test_handled_names_the_messages_span_while_the_batchs_span_is_current(lines: io.StringIO) -> None:
    message = NonRecordingSpan(SpanContext(int(MESSAGE_TRACE, 16), int(MESSAGE_SPAN, 16), is_remote=True))
    with trace.use_span(BATCH):
        logs.handled(message, event_id="e1", correlation_id="case-1", stream="s")
    line = _last(lines)
    assert (line["trace_id"], line["span_id"]) == (MESSAGE_TRACE, MESSAGE_SPAN)
    assert (line["message"], line["event_id"], line["correlation_id"]) == ("handled", "e1", "case-1")


def test_handled_without_a_span_names_no_trace_rather_than_the_batchs(lines: io.StringIO) -> None:
    with trace.use_span(BATCH):
        logs.handled(trace.INVALID_SPAN, event_id="e1", correlation_id="case-1", stream="s")
    assert "trace_id" not in _last(lines)


def test_published_names_the_trace_its_event_was_recorded_in(lines: io.StringIO) -> None:
    payload = json.dumps({"event_id": "e1", "trace_context": {"traceparent": f"00-{MESSAGE_TRACE}-{MESSAGE_SPAN}-01"}})
    with trace.use_span(BATCH):
        logs.published(payload, event_id="e1", correlation_id="case-1", stream="s", event_type="T")
    line = _last(lines)
    assert (line["trace_id"], line["span_id"]) == (MESSAGE_TRACE, MESSAGE_SPAN)
    assert line["event_type"] == "T"


@pytest.mark.parametrize("payload", ['{"event_id": "e1", "trace_context": null}', "[1]", "not json"])
def test_published_without_a_trace_context_names_no_trace(lines: io.StringIO, payload: str) -> None:
    with trace.use_span(BATCH):
        logs.published(payload, event_id="e1", correlation_id="case-1", stream="s", event_type="T")
    assert "trace_id" not in _last(lines)


def test_other_lines_name_the_current_span(lines: io.StringIO) -> None:
    with trace.use_span(BATCH):
        logs.MESSAGES.info("anything")
    assert _last(lines)["trace_id"] == "1" * 32


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "AlwaysOnSampler"),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, "AlwaysOffSampler"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, "TraceIdRatioBased{0.25}"),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "AlwaysOnSampler"),
    ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "AlwaysOnSampler"),
])
def test_the_root_sampler_follows_the_standard_variables(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                          expected: str) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert logs._root_sampler().get_description() == expected


def test_a_line_about_a_message_can_name_the_trace_its_payload_carries(lines: io.StringIO) -> None:
    payload = json.dumps({"trace_context": {"traceparent": f"00-{MESSAGE_TRACE}-{MESSAGE_SPAN}-01"}}).encode()
    with trace.use_span(BATCH):
        logs.MESSAGES.warning("message failed", extra={"_trace": logs.payload_ids(payload)})
        logs.MESSAGES.warning("message failed", extra={"_trace": logs.payload_ids(b"\xff not json")})
    first, second = (json.loads(x) for x in lines.getvalue().splitlines()[-2:])
    assert first["trace_id"] == MESSAGE_TRACE
    assert "trace_id" not in second
