"""JSON logs with `service`, and `event_id` / `correlation_id` where a record has them; trace context.

Tracing: FastStream's `RedisTelemetryMiddleware` traces the broker's reads, but our outbox relay publishes
with a raw XADD, so the W3C trace context travels inside the event (`Event.trace_context`): it is injected
when the outbox row is written and extracted by the kit consumer, which starts one span per handled message
as a child of the producer's span (linked to FastStream's span of the batch). One trace then follows a case
across services, and the per-message log lines written outside that span name its trace explicitly (`_trace`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_tracer = trace.get_tracer("safe.kit")

# per-message log lines ("handled", "published") go to this logger; off unless SAFE_LOG_MESSAGES=1
MESSAGES = logging.getLogger("safe.messages")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # the trace a line belongs to: the one its record names (`_trace`, see `span_ids`), else the current span's
        ids = record.__dict__["_trace"] if "_trace" in record.__dict__ else span_ids(trace.get_current_span())
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def span_ids(span: trace.Span) -> tuple[str, str] | None:
    """(trace id, span id) in hex of a span, or None for no span (`trace.INVALID_SPAN`)."""
    ctx = span.get_span_context()
    return (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")) if ctx.is_valid else None


def carrier_ids(carrier: dict[str, str] | None) -> tuple[str, str] | None:
    """(trace id, span id) of a W3C trace context carrier (`Event.trace_context`), or None."""
    return span_ids(trace.get_current_span(propagate.extract(carrier))) if carrier else None


def handled(span: trace.Span, **fields: Any) -> None:
    """The per-message "handled" line, in the trace of the message's span (written once that span has closed,
    when the batch's span may be current)."""
    MESSAGES.info("handled", extra={**fields, "_trace": span_ids(span)})


def payload_ids(payload: str | bytes | None) -> tuple[str, str] | None:
    """(trace id, span id) of the trace context an event's JSON carries (`trace_context`), or None (none, or not
    an event's JSON). For a line about a message written outside its span: `extra={"_trace": payload_ids(…)}`."""
    try:
        carrier = json.loads(payload).get("trace_context") if payload else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return carrier_ids(carrier) if isinstance(carrier, dict) else None


def published(payload: str, **fields: Any) -> None:
    """The per-message "published" line of an outbox row, in the trace the event was recorded in (the relay
    publishes in a round of its own, within no span of the event's)."""
    MESSAGES.info("published", extra={**fields, "_trace": payload_ids(payload)})


def configure(service: str, level: str = "INFO", *, per_message: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # a line per message costs a large share of throughput: off unless asked for (SAFE_LOG_MESSAGES=1)
    MESSAGES.setLevel(logging.INFO if per_message else logging.WARNING)
    for noisy in ("uvicorn.access", "faststream", "faststream.access", "faststream.access.redis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # every library's lines in the same JSON: uvicorn's and alembic's loggers lose their own (plain text)
    # handlers and go through the root's; alembic's per-start INFO lines (context, DDL mode) are left out
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "alembic.runtime.migration"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)


# --- tracing ----------------------------------------------------------------------------------------------


def _recording() -> bool:
    """Whether spans are recorded: an SDK tracer provider is installed (by `configure_tracing` or a test)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


class _SkipProbes:
    """A root sampler that drops the server spans of health probes and metric scrapes, else delegates."""

    PATHS = ("/health", "/metrics")

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None) -> Any:
        from opentelemetry.sdk.trace.sampling import Decision, SamplingResult

        attrs = attributes or {}
        path = str(attrs.get("url.path") or attrs.get("http.route") or attrs.get("http.target") or "")
        if path.startswith(self.PATHS) or any(f" {p}" in name for p in self.PATHS):
            return SamplingResult(Decision.DROP)
        # a Redis command or SQL statement outside any request or message (stream polling, relay rounds,
        # the reclaimer, the Redis guard): a trace per call is noise, and a traced case's calls have a parent
        if kind == trace.SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"SkipProbes({self.inner.get_description()})"


def _root_sampler() -> Any:
    """The decision for a trace's first span from the standard `OTEL_TRACES_SAMPLER` (`[parentbased_]always_on`,
    `[parentbased_]always_off`, `[parentbased_]traceidratio` with `OTEL_TRACES_SAMPLER_ARG`, a ratio in [0, 1]).
    Spans with a parent always follow it (the parent-based samplers' behaviour, kept for the plain names too)."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, TraceIdRatioBased

    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower().removeprefix("parentbased_")
    if name in ("", "always_on"):
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "traceidratio":
        try:
            ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError:
            ratio = -1.0
        if 0.0 <= ratio <= 1.0:
            return TraceIdRatioBased(ratio)
        logging.getLogger(__name__).warning("OTEL_TRACES_SAMPLER_ARG must be a ratio in [0, 1]; sampling all")
        return ALWAYS_ON
    logging.getLogger(__name__).warning("unknown OTEL_TRACES_SAMPLER %r ignored (always_on, always_off, "
                                        "traceidratio, with or without parentbased_)", name)
    return ALWAYS_ON


def configure_tracing(service: str) -> None:
    """Install the OpenTelemetry SDK tracer provider once per process when spans go somewhere:
    `OTEL_TRACES_EXPORTER=console` prints them, `SAFE_TRACING=1` records them without an exporter (trace ids in
    the logs). Otherwise (the default, or `OTEL_SDK_DISABLED=true`) no span is recorded (recording them costs
    CPU per case: docs/ecosystem.md, "Tracing") — but an incoming W3C trace context
    (HTTP `traceparent`, `Event.trace_context`) is still passed on to the events a request or message causes."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter in ("", "none") and os.environ.get("SAFE_TRACING", "").lower() not in ("1", "true", "on"):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    from opentelemetry.sdk.trace.sampling import ParentBased

    # each service its own service.name (under the launcher they share one environment); probes and
    # scrapes (/health/*, /metrics) make no trace; a span with a parent follows its parent's decision, so a
    # case sampled where it starts is sampled in every service
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              sampler=ParentBased(root=_SkipProbes(_root_sampler())))
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # the standard variable: a comma-separated list of exporters; `otlp` is OTLP over HTTP/protobuf, which
    # reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT… itself; BatchSpanProcessor reads OTEL_BSP_*
    for name in {e.strip() for e in exporter.split(",")}:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name in ("otlp", "otlp_proto_http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name not in ("", "none"):
            logging.getLogger(__name__).warning("unknown OTEL_TRACES_EXPORTER %r ignored (console, otlp)", name)
    trace.set_tracer_provider(provider)


def instrument(engine: Any) -> None:
    """The maintained OpenTelemetry instrumentations of Redis (redis-py, every client of the process) and SQLAlchemy
    (`engine`, an AsyncEngine), when spans are recorded (`configure_tracing`); nothing is patched otherwise, so they
    cost nothing with tracing off. `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=redis,sqlalchemy` (the standard variable)
    leaves either out."""
    if not _recording():
        return
    disabled = {x.strip() for x in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    if "redis" not in disabled:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        if not RedisInstrumentor().is_instrumented_by_opentelemetry:
            RedisInstrumentor().instrument()
    if "sqlalchemy" not in disabled:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # one engine per process (a service's); its declared range stops below SQLAlchemy 2.1, whose event API
        # it uses is unchanged (tests/unit/test_tracing_instrumentations.py)
        if not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
            SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)


def current_trace_context() -> dict[str, str] | None:
    """The W3C `traceparent` (and `tracestate`) of the current span, or None when nothing is traced."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


@contextmanager
def _unrecorded(parent: otel_context.Context | None) -> Iterator[trace.Span]:
    """No span (nothing records them); an incoming trace context, if any, is made current so that what is written
    meanwhile (events in the outbox) carries it on."""
    if parent is None:
        yield trace.INVALID_SPAN
        return
    token = otel_context.attach(parent)
    try:
        yield trace.get_current_span()
    finally:
        otel_context.detach(token)


class _NoSpan:
    """The async context of a message handled with no span to make and no trace context to pass on: two plain
    coroutines, cheaper per message than an `asynccontextmanager`'s generator."""

    async def __aenter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    async def __aexit__(self, *_exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def consumer_span(service: str, stream: str, event: Any, event_id: str) -> AbstractAsyncContextManager[trace.Span]:
    """One span per handled message, child of the producer's span carried in `event.trace_context`.
    Without a recording tracer provider no span is made; an incoming trace context is still passed on, so
    the events this message causes carry it too."""
    carrier = getattr(event, "trace_context", None)
    if not carrier and not _recording():
        return _NO_SPAN
    return _consumer_span(service, stream, event, event_id, carrier)


@asynccontextmanager
async def _consumer_span(service: str, stream: str, event: Any, event_id: str,
                         carrier: dict[str, str] | None) -> AsyncIterator[trace.Span]:
    if not _recording():
        with _unrecorded(propagate.extract(carrier) if carrier else None) as span:
            yield span
        return
    parent = propagate.extract(carrier) if carrier else otel_context.get_current()
    # the batch's span (FastStream's "process", in a trace of its own) is linked, not the parent: the message's
    # span continues the producer's trace, so that a case stays one trace across services
    batch = trace.get_current_span().get_span_context()
    with _tracer.start_as_current_span(
        f"{stream} handle",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(batch)] if carrier and batch.is_valid else None,
        attributes={
            "messaging.system": "redis",
            "messaging.destination.name": stream,
            "messaging.message.id": event_id,
            "messaging.message.conversation_id": str(getattr(event, "correlation_id", "") or ""),
            "safe.service": service,
        },
    ) as span:
        yield span


@contextmanager
def server_span(method: str, path: str, headers: dict[str, str]) -> Iterator[trace.Span]:
    """A span per HTTP request, continuing the caller's trace when it sends `traceparent`. Without a recording
    tracer provider no span is made (even a non-recording one costs the request path CPU); an incoming trace
    context is still made current, so the events the request writes carry it."""
    parent = propagate.extract(headers) if "traceparent" in headers else None
    if not _recording():
        with _unrecorded(parent) as span:
            yield span
        return
    with _tracer.start_as_current_span(
        f"{method} {path}", context=parent, kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    ) as span:
        yield span
