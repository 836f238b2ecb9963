"""The outbox relay's publish round against a real Redis and a real database (SQLite, or PostgreSQL in the
PostgreSQL pass): what it sends, what a blocked reader sees, and what a refused command leaves behind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.exceptions import ResponseError
from sqlalchemy import func, text
from sqlmodel import select

from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.outbox import OutboxRelay
from safe_procurement.shared.kit.tables import OutboxRow
from safe_procurement.shared.kit.wire import decoded
from tests import dbs


@pytest.fixture
def factory(kit_factory):
    return kit_factory


class Wire:
    """What a Redis client writes, seen from its connections (redis-py's `connection_class`): the command names
    of every write that carries an XADD, and a gate that holds such writes while it is closed."""

    def __init__(self, redis_url: str) -> None:
        self.writes: list[list[str]] = []
        self.inside = asyncio.Event()  # a write with an XADD reached the gate
        self.gate = asyncio.Event()
        self.gate.set()
        wire = self

        class Watched(aioredis.Connection):
            names: list[str] | None = None

            def pack_commands(self, commands: Any) -> Any:
                commands = list(commands)
                self.names = [c[0].decode() if isinstance(c[0], bytes) else str(c[0]) for c in commands]
                return super().pack_commands(commands)

            async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                names, self.names = self.names, None
                if names and "XADD" in names:
                    wire.writes.append(names)
                    wire.inside.set()
                    await wire.gate.wait()
                await super().send_packed_command(command, check_health)

        self.redis = aioredis.Redis.from_url(redis_url, connection_class=Watched)


@pytest.fixture
async def wire(redis_url):
    w = Wire(redis_url)
    yield w
    w.gate.set()
    await w.redis.aclose()


def _relay(kit_engine: Any, redis: Any, prefix: str) -> OutboxRelay:
    return OutboxRelay(kit_engine, redis, prefix=prefix, postgres=dbs.on_postgres())


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


async def test_a_round_of_several_events_reaches_a_blocked_reader_as_one_batch(factory, kit_engine, redis_client, redis_url, prefix,
                                                                            wire):
    """Inside MULTI/EXEC, Redis serves a reader blocked on the stream once EXEC appended them all; as plain
    pipelined XADDs it would be served after the first (a batch of one, then the rest)."""
    relay = _relay(kit_engine, wire.redis, prefix)
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
    assert [decoded(f)["event_id"] for _, f in entries] == [f"e{i}" for i in range(5)]
    assert wire.writes == [["MULTI", "XADD", "XADD", "XADD", "XADD", "XADD", "EXEC"]]
    assert await _unsent(factory) == 0


async def test_a_round_of_one_event_goes_without_multi_and_its_xack_rides_along(factory, kit_engine, redis_client, prefix, wire):
    relay = _relay(kit_engine, wire.redis, prefix)
    source = f"{prefix}source"
    await redis_client.xgroup_create(source, "g", id="0", mkstream=True)
    entry = await redis_client.xadd(source, {"x": "1"})
    await redis_client.xreadgroup("g", "c", {source: ">"})
    await _queue(factory, (streams.PROCUREMENT_SUBMITTED, "one"))
    async with kit_engine.connect() as conn:
        assert await relay.publish_after_commit(conn, [("XACK", source, "g", entry)]) is True
    assert wire.writes == [["XADD", "XACK"]]
    assert (await redis_client.xpending(source, "g"))["pending"] == 0
    assert await redis_client.xlen(streams.qualified(streams.PROCUREMENT_SUBMITTED, prefix)) == 1
    assert await _unsent(factory) == 0


@pytest.mark.parametrize("events", [1, 3])
async def test_a_refused_command_fails_the_round_and_leaves_every_row_unsent(factory, kit_engine, redis_client, prefix, events):
    """With one event (no MULTI) Redis refuses the XADD itself; with several, it fails inside EXEC. Either way the
    round raises, its transaction rolls back, and the next round publishes the rows once Redis takes them; the
    relay's connection to Redis works on (the one that saw the error was closed, replies unread)."""
    relay = _relay(kit_engine, redis_client, prefix)
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


def _suspended_in(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines `task` is suspended in, outermost first (their public `cr_await` chain)."""
    names = []
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return names


async def _published(redis_client: Any, prefix: str) -> list[str]:
    key = streams.qualified(streams.PROCUREMENT_SUBMITTED, prefix)
    return [decoded(f)["event_id"] for _, f in await redis_client.xrange(key)]


@pytest.mark.skipif(not dbs.on_postgres(), reason="SQLite: the pool's one connection already serializes rounds")
async def test_a_round_after_a_commit_waits_for_its_process_round_under_way_and_publishes_its_own_rows(
        factory, kit_engine, redis_client, prefix, wire):
    """Two batches of one service commit on two pooled connections; the second's round starts while the first's
    holds the PostgreSQL relay lock (its XADDs held at the gate, its transaction open). It waits for that round
    and publishes its batch's event itself; were it to give up (the try-lock failing), the event would wait for
    whatever round came next, and with no relay task running here: never."""
    relay = _relay(kit_engine, wire.redis, prefix)
    wire.gate.clear()
    engine = kit_engine
    await _queue(factory, (streams.PROCUREMENT_SUBMITTED, "first"))
    async with engine.connect() as c1, engine.connect() as c2:
        first = asyncio.create_task(relay.publish_after_commit(c1))
        await asyncio.wait_for(wire.inside.wait(), timeout=10)
        await _queue(factory, (streams.PROCUREMENT_SUBMITTED, "second"))
        second = asyncio.create_task(relay.publish_after_commit(c2))

        async def queued() -> bool:
            return second.done() or "Lock.acquire" in _suspended_in(second)

        await wait_for(queued, timeout=10, message="the second round at the relay's round lock")
        assert not second.done()
        wire.gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
    assert await _published(redis_client, prefix) == ["first", "second"]
    assert await _unsent(factory) == 0


@pytest.mark.skipif(not dbs.on_postgres(), reason="the PostgreSQL relay lock: SQLite's writers wait for its write lock")
async def test_the_relay_task_tries_again_soon_when_another_process_relay_holds_the_lock(factory, kit_engine, redis_client, prefix,
                                                                                      wire):
    """Another process's relay (here a second relay on the same database) holds the PostgreSQL relay lock when this
    relay is woken for a new row: it tries again after 1, 2, 4 … ms instead of waiting for its next tick (30 s
    here), so the row goes out as soon as the other round is done."""
    other = _relay(kit_engine, wire.redis, prefix)
    wire.gate.clear()
    relay = OutboxRelay(kit_engine, redis_client, prefix=prefix, postgres=True, interval_s=30)
    engine = kit_engine.sync_engine
    tries: list[str] = []  # the relay lock's try-locks the database was sent, by either relay

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_try_advisory_xact_lock" in statement:
            tries.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    await _queue(factory, (streams.PROCUREMENT_SUBMITTED, "theirs"))
    held = asyncio.create_task(other.publish_once())
    await asyncio.wait_for(wire.inside.wait(), timeout=10)
    task = asyncio.create_task(relay.run())
    try:
        await _queue(factory, (streams.PROCUREMENT_SUBMITTED, "ours"))
        relay.wake()

        async def refused() -> bool:  # the other relay's try-lock, then this one's while the other holds it
            return len(tries) >= 2

        await wait_for(refused, timeout=10, interval=0.001, message="a round of this relay finding the lock held")
        wire.gate.set()
        assert await asyncio.wait_for(held, timeout=10) == 1

        async def ours_out() -> bool:
            return await _published(redis_client, prefix) == ["theirs", "ours"]

        await wait_for(ours_out, timeout=5, message="the relay to publish its row well before its next tick")
    finally:
        await relay.stop(task)
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert await _unsent(factory) == 0


@pytest.mark.skipif(not dbs.on_postgres(), reason="PostgreSQL's synchronous_commit")
async def test_only_the_relay_round_commits_without_waiting_for_the_wal_flush(factory, kit_engine, redis_client, prefix):
    """The round's mark may be lost in a PostgreSQL crash (its rows then go out again); the connection's next
    transaction, a batch's state change, commits synchronously again."""
    seen: list[str] = []

    async def after_publish(conn: Any, rows: Any) -> None:
        seen.append((await conn.execute(text("SHOW synchronous_commit"))).scalar())

    relay = OutboxRelay(kit_engine, redis_client, prefix=prefix, postgres=True, after_publish=after_publish)
    await _queue(factory, (streams.PROCUREMENT_SUBMITTED, "one"))
    async with kit_engine.connect() as conn:
        assert await relay.publish_after_commit(conn) is False  # published; no `then` commands to report
        async with conn.begin():
            after = (await conn.execute(text("SHOW synchronous_commit"))).scalar()
    assert seen == ["off"]
    assert after == "on"


@pytest.mark.skipif(not dbs.on_postgres(), reason="SQLite has one writer at a time: a round reads and marks its rows "
                                                  "under the database's write lock")
async def test_a_round_never_marks_again_a_row_another_round_marked_after_its_statement_began(
        factory, kit_engine, redis_client, prefix):
    """Two replicas' relays on one database. A round's one statement reads the oldest unsent rows as of its start and
    takes the relay lock inside it; the other relay's round can commit its marks, and so release the lock, in
    between. The rows the statement then updates were marked meanwhile: the UPDATE checks `published_at IS NULL`
    again on their latest version and leaves them. Without that check it marked and published them again (a
    stress run of two relays over 3 000 rows put 7 to 9 events on the stream twice).

    That window cannot be held open from outside (the relay lock is a try-lock, nothing waits on it), so the test
    holds the other round's mark open as an uncommitted row version instead: the round reads the row unsent, waits
    on its row lock, and meets the mark once it commits, the same re-check."""
    relay = _relay(kit_engine, redis_client, prefix)
    await _queue(factory, (streams.PROCUREMENT_SUBMITTED, "once"))
    async with kit_engine.connect() as other:
        async with other.begin():  # the other round: its mark (it published the row), not committed yet
            await other.execute(text("UPDATE outbox SET published_at = now() WHERE published_at IS NULL"))
            round_ = asyncio.create_task(relay.publish_once())

            async def blocked_or_done() -> bool:
                if round_.done():
                    return True
                async with kit_engine.connect() as probe:
                    return bool((await probe.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"))).scalar_one())

            await wait_for(blocked_or_done, timeout=10, message="the round waiting on the marked row, or done")
    assert await asyncio.wait_for(round_, timeout=10) == 0
    assert await _published(redis_client, prefix) == []
    assert await _unsent(factory) == 0
