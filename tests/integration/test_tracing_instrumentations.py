"""The maintained Redis and SQLAlchemy instrumentations, by configuration only: with tracing on, a traced request's
or message's Redis commands and SQL statements are its child spans and the same calls outside any span (polling,
relay rounds) make no trace; with tracing off nothing is patched. Each case runs in a process of its own (the
tracer provider and the instrumentations are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SCRIPT = r"""
import asyncio, json, sys
from opentelemetry import trace
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from safe_procurement.shared.kit import logs

logs.configure_tracing("probe")
exporter = None
if logs._recording():
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
engine = create_async_engine("sqlite+aiosqlite:///:memory:")
redis = Redis.from_url(sys.argv[1])
logs.instrument(engine)

async def calls():
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    await redis.ping()

async def main():
    await calls()  # outside any span
    with trace.get_tracer("probe").start_as_current_span("case") as case:
        await calls()
    await redis.aclose()
    await engine.dispose()
    ctx = case.get_span_context()
    spans = exporter.get_finished_spans() if exporter else []
    print(json.dumps({
        "patched": hasattr(Redis.execute_command, "__wrapped__"),
        "case": [ctx.trace_id, ctx.span_id],
        "spans": [{"name": s.name, "kind": s.kind.name, "trace": s.context.trace_id,
                   "parent": s.parent.span_id if s.parent else None,
                   "system": s.attributes.get("db.system") or s.attributes.get("db.system.name")} for s in spans],
    }))

asyncio.run(main())
"""


def _run(redis_url: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAFE_TRACING"))}
    out = subprocess.run([sys.executable, "-c", SCRIPT, redis_url], env={**clean, **env}, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_with_tracing_on_a_spans_redis_commands_and_sql_statements_are_its_children_and_others_make_no_trace(
        redis_url):
    got = _run(redis_url, SAFE_TRACING="1")
    trace_id, case_id = got["case"]
    assert got["patched"]
    clients = [s for s in got["spans"] if s["kind"] == "CLIENT"]
    assert {s["system"] for s in clients} == {"sqlite", "redis"}, clients
    assert {s["name"] for s in clients} >= {"PING"}, clients
    assert any(s["name"].startswith("SELECT") for s in clients), clients
    # only the calls made inside the case's span were recorded, each a child of it
    assert all(s["trace"] == trace_id and s["parent"] == case_id for s in clients), clients


def test_the_standard_variable_leaves_an_instrumentation_out(redis_url):
    got = _run(redis_url, SAFE_TRACING="1", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="redis")
    assert not got["patched"]
    assert {s["system"] for s in got["spans"] if s["kind"] == "CLIENT"} == {"sqlite"}, got


def test_with_tracing_off_nothing_is_patched_and_nothing_recorded(redis_url):
    got = _run(redis_url)
    assert not got["patched"]
    assert got["spans"] == []
