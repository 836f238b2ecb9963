"""The Redis guard (safe_procurement.shared.kit.recovery) on a private redis-server and a real database (SQLite, or PostgreSQL in
the PostgreSQL pass): what it counts as a loss, which outbox rows it re-publishes, and which it leaves alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db, wire
from safe_procurement.shared.kit.outbox import OutboxRelay
from safe_procurement.shared.kit.recovery import RedisGuard
from safe_procurement.shared.kit.tables import OutboxRow
from tests import dbs
from tests.redis_servers import Server, started_servers

STREAM = streams.PROCUREMENT_SUBMITTED


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with started_servers(tmp_path / "redis") as s:
        yield s.start("guard")


@pytest.fixture
async def client(server: Server):  # type: ignore[no-untyped-def]
    c = aioredis.Redis(host="127.0.0.1", port=server.port)
    yield c
    await c.aclose()


async def _rows(factory: Any, published: datetime, ids: list[str]) -> None:
    async with db.transaction(factory) as s:
        for event_id in ids:
            s.add(OutboxRow(event_id=event_id, stream=STREAM, event_type="T", correlation_id=event_id,
                            payload=json.dumps({"event_id": event_id}), published_at=published))


async def _xadd(client: Any, key: str, at: datetime, ids: list[str]) -> None:
    ms = int(at.timestamp() * 1000)
    for seq, event_id in enumerate(ids):
        await client.xadd(key, {wire.DATA: json.dumps({"event_id": event_id})}, id=f"{ms}-{seq}")


async def _on_stream(client: Any, key: str) -> list[str]:
    return [wire.decoded(f)["event_id"] for _, f in await client.xrange(key)]


def _guard(kit_engine: Any, client: Any) -> RedisGuard:
    relay = OutboxRelay(kit_engine, client, prefix="", postgres=dbs.on_postgres())
    return RedisGuard(service="applications", redis=client, engine=kit_engine, streams_published=[STREAM],
                      republish=relay.publish_rows, margin_s=1.0, fallback_window_s=60.0)


async def test_after_a_flush_only_what_some_group_had_not_handled_is_published_again(kit_factory, kit_engine, client):
    guard = _guard(kit_engine, client)
    await guard.start()  # a running service: markers set, nothing lost so far
    assert guard.resets_detected == 0
    now = datetime.now(UTC)
    old, recent = now - timedelta(hours=1), now - timedelta(seconds=30)
    handled, waiting = ["h1", "h2", "h3"], ["w1", "w2"]
    await _rows(kit_factory, old, handled)
    await _rows(kit_factory, recent, waiting)
    await _xadd(client, STREAM, old, handled)
    await _xadd(client, STREAM, recent, waiting)
    await client.xgroup_create(STREAM, "origin_verification", id="0")
    read = await client.xreadgroup("origin_verification", "c1", {STREAM: ">"}, count=3)
    await client.xack(STREAM, "origin_verification", *[mid for mid, _ in read[0][1]])  # the handled ones
    assert await guard.check_once() is False
    assert guard.watermark_ms == int(recent.timestamp() * 1000) - 1000

    await client.flushall()
    assert await guard.check_once() is True
    assert await _on_stream(client, STREAM) == waiting
    assert guard.last_republished == 2 and "flushed" in (guard.last_reason or "")
    assert await guard.check_once() is False  # markers back: one loss, one re-publication


async def test_a_restart_without_persistence_is_seen_by_the_epoch_and_the_markers(kit_factory, kit_engine, server, client):
    guard = _guard(kit_engine, client)
    await guard.start()
    now = datetime.now(UTC)
    await _rows(kit_factory, now - timedelta(seconds=20), ["a", "b"])
    await _xadd(client, STREAM, now - timedelta(seconds=20), ["a", "b"])
    await client.xgroup_create(STREAM, "origin_verification", id="0")  # nothing read yet
    assert await guard.check_once() is False
    server.kill()
    server.start()  # empty
    started = time.monotonic()
    assert await guard.check_once() is True
    assert "restarted" in (guard.last_reason or "") and "flushed" in (guard.last_reason or "")
    assert await _on_stream(client, STREAM) == ["a", "b"]
    assert guard.last_recovery_ms is not None and guard.last_recovery_ms < (time.monotonic() - started) * 1000 + 1


async def test_without_a_loss_nothing_is_published_again(kit_factory, kit_engine, client):
    guard = _guard(kit_engine, client)
    await guard.start()
    now = datetime.now(UTC)
    await _rows(kit_factory, now - timedelta(seconds=5), ["x"])
    await _xadd(client, STREAM, now - timedelta(seconds=5), ["x"])
    await client.xgroup_create(STREAM, "origin_verification", id="0")
    for _ in range(3):
        assert await guard.check_once() is False
    assert await _on_stream(client, STREAM) == ["x"] and guard.republished_total == 0


async def test_a_service_started_after_redis_lost_everything_re_publishes_its_recent_window(kit_factory, kit_engine, client):
    now = datetime.now(UTC)
    await _rows(kit_factory, now - timedelta(hours=2), ["too-old"])
    await _rows(kit_factory, now - timedelta(seconds=10), ["recent"])
    guard = _guard(kit_engine, client)
    await guard.start()  # no marker: Redis is empty, and this service had published before
    assert await _on_stream(client, STREAM) == ["recent"]
    assert guard.resets_detected == 1


async def test_a_stream_whose_groups_were_given_everything_does_not_hold_the_watermark_back(kit_factory, kit_engine, client):
    """A consumed stream nothing waits on (here: one nothing was published on yet, as a service's reverification
    stream usually is) says nothing is unhandled on it: the watermark follows the other streams, and a loss
    re-publishes only what came after it, not the whole outbox."""
    other = streams.REVERIFICATION_REQUESTED
    relay = OutboxRelay(kit_engine, client, prefix="", postgres=dbs.on_postgres())
    guard = RedisGuard(service="applications", redis=client, engine=kit_engine,
                       streams_published=[STREAM, other], republish=relay.publish_rows, margin_s=1.0,
                       fallback_window_s=60.0)
    await guard.start()
    old = datetime.now(UTC) - timedelta(hours=1)
    await _rows(kit_factory, old, ["h1", "h2"])
    await _xadd(client, STREAM, old, ["h1", "h2"])
    await client.xgroup_create(STREAM, "origin_verification", id="0")
    read = await client.xreadgroup("origin_verification", "c1", {STREAM: ">"})
    await client.xack(STREAM, "origin_verification", *[mid for mid, _ in read[0][1]])
    await client.xgroup_create(other, "origin_verification", id="0", mkstream=True)
    checked_at_ms = int(time.time() * 1000)
    assert await guard.check_once() is False
    assert guard.watermark_ms is not None and guard.watermark_ms >= checked_at_ms - 1000

    await client.flushall()
    assert await guard.check_once() is True
    assert guard.last_republished == 0 and await _on_stream(client, STREAM) == []
