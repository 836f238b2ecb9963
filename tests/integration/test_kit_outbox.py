"""The outbox relay's publish round against a real Redis and a real database (SQLite, or PostgreSQL in the
PostgreSQL pass): what it sends, what a blocked reader sees, and what a refused command leaves behind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import func
from sqlmodel import select

from services.testing.waiting import wait_for
from shared.contracts import streams
from shared.kit import db
from shared.kit.outbox import OutboxRelay
from shared.kit.tables import OutboxRow
from tests import dbs


@pytest.fixture
def factory(kit_factory):
    return kit_factory


def _relay(factory: Any, redis_client: Any, prefix: str) -> OutboxRelay:
    return OutboxRelay(factory, redis_client, prefix=prefix, postgres=dbs.on_postgres())


async def _queue(factory: Any, *rows: tuple[str, str]) -> None:
    """Outbox rows (stream, event id), committed in one transaction."""
    async with db.transaction(factory) as s:
        for stream, event_id in rows:
            s.add(OutboxRow(event_id=event_id, stream=stream, event_type="T", correlation_id=event_id,
                            payload=json.dumps({"event_id": event_id})))


async def _unsent(factory: Any) -> int:
    async with factory() as s:
        return (await s.exec(select(func.count()).select_from(OutboxRow).where(
            OutboxRow.published_at.is_(None)))).one()  # type: ignore[union-attr]


def _spy(relay: OutboxRelay) -> list[list[str]]:
    """The command names of each round the relay sends."""
    sent: list[list[str]] = []
    real = relay._send

    async def send(commands: Any) -> Any:
        sent.append([c[0] for c in commands])
        return await real(commands)

    relay._send = send  # type: ignore[method-assign]
    return sent


async def test_a_round_of_several_events_reaches_a_blocked_reader_as_one_batch(factory, redis_client, redis_url, prefix):
    """Inside MULTI/EXEC, Redis serves a reader blocked on the stream once EXEC appended them all; as plain
    pipelined XADDs it would be served after the first (a batch of one, then the rest)."""
    relay = _relay(factory, redis_client, prefix)
    sent = _spy(relay)
    key = streams.qualified(streams.PROCUREMENT_SUBMITTED, prefix)
    await redis_client.xadd(key, {"x": "0"})
    reader = aioredis.Redis.from_url(redis_url)
    try:
        await reader.client_setname(f"{prefix}reader")
        read = asyncio.create_task(reader.xread({key: "$"}, block=10_000))

        async def blocked() -> bool:
            return any(c.get("name") == f"{prefix}reader" and "b" in c.get("flags", "")
                       for c in await redis_client.client_list())

        await wait_for(blocked, message="the reader blocked on the stream")
        await _queue(factory, *[(streams.PROCUREMENT_SUBMITTED, f"e{i}") for i in range(5)])
        assert await relay.publish_once() == 5
        [(_, entries)] = await asyncio.wait_for(read, timeout=10)
    finally:
        await reader.aclose()
    assert [json.loads(f[b"__data__"])["event_id"] for _, f in entries] == [f"e{i}" for i in range(5)]
    assert sent == [["MULTI", "XADD", "XADD", "XADD", "XADD", "XADD", "EXEC"]]
    assert await _unsent(factory) == 0


async def test_a_round_of_one_event_goes_without_multi_and_its_xack_rides_along(factory, redis_client, prefix):
    relay = _relay(factory, redis_client, prefix)
    sent = _spy(relay)
    source = f"{prefix}source"
    await redis_client.xgroup_create(source, "g", id="0", mkstream=True)
    entry = await redis_client.xadd(source, {"x": "1"})
    await redis_client.xreadgroup("g", "c", {source: ">"})
    await _queue(factory, (streams.PROCUREMENT_SUBMITTED, "one"))
    async with factory.kw["bind"].connect() as conn:
        assert await relay.publish_after_commit(conn, [("XACK", source, "g", entry)]) is True
    assert sent == [["XADD", "XACK"]]
    assert (await redis_client.xpending(source, "g"))["pending"] == 0
    assert await redis_client.xlen(streams.qualified(streams.PROCUREMENT_SUBMITTED, prefix)) == 1
    assert await _unsent(factory) == 0


@pytest.mark.parametrize("events", [1, 3])
async def test_a_refused_command_fails_the_round_and_leaves_every_row_unsent(factory, redis_client, prefix, events):
    """With one event (no MULTI) Redis refuses the XADD itself; with several, it fails inside EXEC. Either way the
    round raises, its transaction rolls back, and the next round publishes the rows once Redis takes them; the
    relay's connection to Redis works on (the one that saw the error was closed, replies unread)."""
    relay = _relay(factory, redis_client, prefix)
    bad = streams.qualified(streams.LOAN_REQUESTED, prefix)
    await redis_client.set(bad, "not a stream")
    await _queue(factory, *[(streams.PROCUREMENT_SUBMITTED, f"ok{i}") for i in range(events - 1)],
                 (streams.LOAN_REQUESTED, "refused"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await relay.publish_once()
    assert await _unsent(factory) == events
    await redis_client.delete(bad)
    assert await relay.publish_once() == events
    assert await _unsent(factory) == 0
    assert await redis_client.xlen(bad) == 1
    # inside EXEC the other XADDs were applied before the refusal: they are published again (at least once)
    assert await redis_client.xlen(streams.qualified(streams.PROCUREMENT_SUBMITTED, prefix)) == 2 * (events - 1)
