"""The kit's HTTP server and message consumer spans when nothing records spans: no span is made, an incoming
trace goes on."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from safe_procurement.shared.kit import logs

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def not_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_recording", lambda: False)


def test_without_a_traceparent_no_span_is_made_and_no_context_goes_on(not_recording: None) -> None:
    with logs.server_span("POST", "/procurements", {}) as span:
        assert span is trace.INVALID_SPAN
        assert logs.current_trace_context() is None


def test_an_incoming_traceparent_is_current_inside_and_gone_after(not_recording: None) -> None:
    with logs.server_span("POST", "/procurements", {"traceparent": PARENT}) as span:
        assert f"{span.get_span_context().trace_id:032x}" == TRACE_ID
        carried = logs.current_trace_context()
        assert carried is not None and carried["traceparent"] == PARENT  # what the events written here carry
    assert logs.current_trace_context() is None


class _Event:
    def __init__(self, trace_context: dict[str, str] | None) -> None:
        self.trace_context = trace_context
        self.correlation_id = "c"


async def test_a_message_without_trace_context_gets_no_span_and_passes_none_on(not_recording: None) -> None:
    async with logs.consumer_span("s", "stream", _Event(None), "e1") as span:
        assert span is trace.INVALID_SPAN
        assert logs.current_trace_context() is None


async def test_a_message_with_trace_context_passes_it_on_while_handled(not_recording: None) -> None:
    async with logs.consumer_span("s", "stream", _Event({"traceparent": PARENT}), "e1") as span:
        assert f"{span.get_span_context().trace_id:032x}" == TRACE_ID
        carried = logs.current_trace_context()
        assert carried is not None and carried["traceparent"] == PARENT
    assert logs.current_trace_context() is None


async def test_a_handler_error_goes_through_the_no_span_context(not_recording: None) -> None:
    with pytest.raises(ValueError, match="handler"):
        async with logs.consumer_span("s", "stream", _Event(None), "e1"):
            raise ValueError("handler failed")
