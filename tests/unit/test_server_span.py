"""The kit's HTTP server span when nothing records spans: no span is made, an incoming trace goes on."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from shared.kit import logs

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
