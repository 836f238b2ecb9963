"""Transactional outbox: events are rows written in the same transaction as the state change;
a relay publishes them to Redis in order and marks them sent. A crash between XADD and the mark
re-publishes the rows; consumers deduplicate on `event_id`, so that is harmless."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from redis.asyncio import Redis
from sqlalchemy import bindparam, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.contracts.events import Event
from safe_procurement.shared.kit import logs, wire
from safe_procurement.shared.kit.db import add_row, fetch_all, short_transaction
from safe_procurement.shared.kit.tables import TS, OutboxRow, utcnow

log = logging.getLogger("safe.outbox")

# called in the relay's transaction (on its connection) with the rows just published (id, event_id, stream,
# event_type, correlation_id, payload)
AfterPublish = Callable[[AsyncConnection, Sequence[Any]], Awaitable[None]]


class Published(NamedTuple):
    """An outbox row a round took (the columns `_mark_oldest` returns)."""

    id: int
    event_id: str
    stream: str
    event_type: str
    correlation_id: str
    payload: str


def emit(session: AsyncSession, stream: str, event: Event, *, last: tuple[str, str] | None = None) -> None:
    """Record an outgoing event in the caller's transaction (with the current trace context, if traced).

    `last`: (name, JSON) of the event's last field, already serialized by the caller for something else (a report
    stored beside it), so that it is not serialized twice; the payload is the same text as `model_dump_json()`."""
    if event.trace_context is None and (carrier := logs.current_trace_context()) is not None:
        event = event.model_copy(update={"trace_context": carrier})
    add_row(session, OutboxRow, event_id=str(event.event_id), stream=stream, event_type=event.event_type,
            correlation_id=event.correlation_id, payload=dump_json(event, last))


def dump_json(event: Event, last: tuple[str, str] | None = None) -> str:
    """`event.model_dump_json()`; with `last`, the event without its last field, that field's JSON appended."""
    if last is None:
        return event.model_dump_json()
    name, value = last
    if name != next(reversed(type(event).model_fields)):
        raise ValueError(f"{name} is not the last field of {type(event).__name__}")
    head = event.model_dump_json(exclude={name})
    return f'{head[:-1]},"{name}":{value}}}'


class OutboxRelay:
    """Publishes unsent outbox rows, oldest first, in pipelined batches."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        *,
        prefix: str = "",
        interval_s: float = 0.2,
        batch: int = 500,
        after_publish: AfterPublish | None = None,
        postgres: bool = False,
        sign: Callable[[str, str], str] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._interval = interval_s
        self._batch = batch
        self._after_publish = after_publish
        self._postgres = postgres
        self._sign = sign  # the `__sig__` of an entry (shared/kit/signing.py)
        self._engine = engine
        self._mark = _mark_oldest_locked(batch) if postgres else _mark_oldest(batch)
        # a round's commands written by `send` (see _publish); a cluster client (not a `Redis`) goes through
        # `publish_on_cluster`
        self._raw_multi = isinstance(redis, Redis)
        self._wake = asyncio.Event()
        # One round at a time in this process. On PostgreSQL each round takes the database's relay lock with a
        # try-lock; without this, a round started while another of this process held it (the batches of one
        # service commit on several pooled connections) would give up, and its batch's events would wait for the
        # next commit's round or the relay task's next tick. A round
        # takes this lock only once it holds its connection, so waiting here never holds back the connection
        # another round needs (SQLite's pool has one, and already serializes them).
        self._one_round = asyncio.Lock()
        self._stopping = False
        self.published_total = 0
        self.last_published_at: datetime | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> asyncio.Task[None]:
        """The relay task of one run of the service (a stopped relay starts again)."""
        self._stopping = False
        return asyncio.create_task(self.run(), name="outbox-relay")

    async def run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                busy = _BUSY_FIRST_S
                while True:
                    n = await self._round(None)
                    if n is None:  # another process's relay holds the PostgreSQL lock: again once it is done
                        if busy > self._interval:
                            break  # it keeps publishing (these rows too); the next tick looks again
                        await asyncio.sleep(busy)
                        busy *= 2
                    elif n < self._batch:
                        break
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis or DB down: keep the rows, try again on the next tick
                log.exception("outbox relay round failed; rows stay unsent")
                await asyncio.sleep(min(self._interval * 5, 2.0))

    async def stop(self, task: asyncio.Task[None] | None = None, timeout: float = 10.0) -> None:
        """Let the running relay (`task`) finish its round, then flush once more."""
        self._stopping = True
        self._wake.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception:
                log.exception("outbox relay ended with an error")
        try:
            await self.publish_once()
        except Exception:
            log.exception("final outbox flush failed; rows stay unsent for the next start")

    async def publish_once(self) -> int:
        return await self._round(None) or 0

    async def publish_after_commit(self, connection: AsyncConnection, then: Sequence[Any] = ()) -> bool:
        """One round on `connection`, the caller's checked-out connection right after its commit, so the round
        does not queue for a connection behind other transactions. Never raises: whatever it leaves unsent (a
        failure, another round holding the PostgreSQL relay lock, more rows than one round takes) is left to
        the relay task, which it wakes.

        `then`: Redis commands (argument tuples, e.g. the XACK of the entries the committed batch consumed) sent
        in the same pipeline as the XADDs, saving their round trip; whether they were sent is returned, and the
        caller sends them itself if not."""
        try:
            n = await self._round(connection, then)
        except Exception:  # the rows stay unsent
            log.exception("publishing right after a commit failed; the relay task will")
            n = None
        if n is None or n >= self._batch:
            self.wake()
        return bool(n) and bool(then)

    async def _round(self, connection: AsyncConnection | None, then: Sequence[Any] = ()) -> int | None:
        """Publish up to one batch of the oldest unsent rows; None: another round holds the PostgreSQL lock."""
        if connection is not None:
            return await self._round_on(connection, then)
        async with self._engine.connect() as conn:
            return await self._round_on(conn, then)

    async def _publish(self, rows: Sequence[Published], then: Sequence[Any]) -> None:
        """XADD the rows, then the `then` commands, in one MULTI/EXEC; raises if any of them failed.

        MULTI/EXEC, not a plain pipeline: Redis serves a consumer blocked in XREADGROUP as soon as the first XADD of
        a pipeline lands, so a plain pipeline of n events reached the next stage as a batch of one and then one of
        n - 1, each paying a batch's fixed cost. Inside MULTI the consumer is served once EXEC has appended them
        all, and reads them as one batch (a round of one XADD goes without). MULTI and EXEC go as plain commands
        in one write (`_send`): the same bytes to Redis as redis-py's transaction pipeline, without its
        client-side bookkeeping, which costs about as much CPU as the XADD itself."""
        sign = self._sign
        commands: list[tuple[Any, ...]] = [
            ("XADD", streams.qualified(row.stream, self._prefix), "*", wire.DATA, row.payload)
            if sign is None else
            ("XADD", streams.qualified(row.stream, self._prefix), "*", wire.DATA, row.payload,
             wire.SIGNATURE, sign(row.stream, row.payload))
            for row in rows]
        commands.extend(then)
        if not self._raw_multi:  # a cluster client
            await publish_on_cluster(self._redis, commands)
            return
        # one XADD needs no MULTI: nothing to split (an XACK beside it wakes no reader, and need not be atomic with it)
        multi = len(rows) > 1
        replies = await self._send([("MULTI",), *commands, ("EXEC",)] if multi else commands)
        results = replies[-1] if multi else replies
        if not isinstance(results, list) or len(results) != len(commands):
            raise RuntimeError(f"MULTI/EXEC answered {results!r}")
        for result in results:
            if isinstance(result, Exception):  # failed inside EXEC; the round rolls back, the rows stay unsent
                raise result

    async def publish_rows(self, rows: Sequence[Published]) -> None:
        """Publish rows again as a round publishes them, without marking anything (recovery after Redis lost
        writes: safe_procurement.shared.kit.recovery); raises if Redis refused any."""
        for i in range(0, len(rows), self._batch):
            await self._publish(rows[i:i + self._batch], ())

    async def _send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        return await send(self._redis, commands)

    async def _round_on(self, conn: AsyncConnection, then: Sequence[Any]) -> int | None:
        # Core statements on the connection, in a transaction of its own: no ORM session per round
        async with self._one_round, short_transaction(conn):
            # Mark and read the oldest unsent rows in one statement (on PostgreSQL with the relay lock taken in it).
            # The mark is only committed after every XADD went through: if publishing fails, the transaction rolls
            # back and the rows stay unsent.
            now = utcnow()
            taken = await fetch_all(conn, self._mark, {"now": now})
            if self._postgres:
                if not taken[0][0]:
                    return None  # another process's relay holds the lock
                taken = [row[1:] for row in taken if row[1] is not None]
            rows = sorted(map(Published._make, taken), key=lambda r: r.id)  # RETURNING promises no order
            if not rows:
                return 0
            await self._publish(rows, then)
            if logs.MESSAGES.isEnabledFor(logging.INFO):  # each in the trace its event was recorded in
                for row in rows:
                    logs.published(row.payload, event_id=row.event_id, correlation_id=row.correlation_id,
                                   stream=row.stream, event_type=row.event_type)
            if self._after_publish is not None:
                await self._after_publish(conn, rows)
        self.published_total += len(rows)
        self.last_published_at = now
        return len(rows)


async def publish_on_cluster(redis: Any, commands: Sequence[tuple[Any, ...]]) -> None:
    """`commands` (each naming its key second, as XADD and XACK do) on a cluster client: one MULTI/EXEC per hash
    slot, since a transaction cannot span slots (CROSSSLOT) and a round's streams are spread over them. Each slot's
    commands keep their order (so each stream's entries keep the outbox order); the slots go one after the other,
    in the order their first command came. Raises on the first refusal: the round rolls back, and what earlier
    slots took goes out again with it (consumers deduplicate)."""
    by_slot: dict[int, list[tuple[Any, ...]]] = {}
    for command in commands:
        by_slot.setdefault(redis.keyslot(command[1]), []).append(command)
    for group in by_slot.values():
        pipe = redis.pipeline(transaction=len(group) > 1)
        for command in group:
            pipe.execute_command(*command)
        await pipe.execute()


async def send(redis: Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """`commands` in one write on one pooled connection of `redis` (not a cluster client), and their replies; an
    error reply raises (inside MULTI: a command Redis refused to queue; EXEC then answers EXECABORT and nothing was
    applied). The same bytes as redis-py's pipeline, without its per-call bookkeeping. A broken connection is retried as the client's retry policy says, as a pipeline is (a retried round
    may publish twice: consumers deduplicate); after any error the connection is closed, replies may be unread."""
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        packed = conn.pack_commands(commands)

        async def attempt() -> list[Any]:
            await conn.send_packed_command(packed)
            return [await conn.read_response() for _ in commands]

        return await conn.retry.call_with_retry(attempt, lambda _error: conn.disconnect())
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


# the relay task, when another process's relay holds the PostgreSQL lock (a round lasts about a millisecond): tries
# again after 1 ms, then twice as long each time, until the wait would exceed its tick
_BUSY_FIRST_S = 0.001


def _mark_oldest(batch: int) -> Any:
    """UPDATE … RETURNING of the `batch` oldest unsent rows (built once per relay, not per round)."""
    t = OutboxRow.__table__  # type: ignore[attr-defined]
    oldest = select(t.c.id).where(t.c.published_at.is_(None)).order_by(t.c.id).limit(batch)
    return (update(t).where(t.c.id.in_(oldest.scalar_subquery())).values(published_at=bindparam("now", type_=TS))
            .returning(t.c.id, t.c.event_id, t.c.stream, t.c.event_type, t.c.correlation_id, t.c.payload))


# On PostgreSQL the round takes the database's relay lock in the same statement as its mark (one round trip less):
# one relay at a time per database keeps the published order equal to the commit order. The statement also makes
# the round's commit not wait for the WAL flush (synchronous_commit off for this transaction): the round only marks
# rows that its XADDs already published, so a mark that a PostgreSQL crash loses makes them go out again, at least
# once, as after any crash between the XADD and the mark. The batches whose state changes wrote the rows keep the
# synchronous commit: their events must never outlive them. Its rows: (lock taken, then the columns of `Published`
# or NULLs when nothing was marked); at least one row, so that a lock held elsewhere is told from nothing to send.
# The statement reads the unsent rows as of its start, and takes the lock only inside it: another relay's round may
# commit its marks (releasing the lock) in between. The UPDATE therefore checks `published_at IS NULL` again itself,
# on each row's latest version (PostgreSQL re-evaluates the UPDATE's own conditions on a row changed meanwhile, not
# the subquery's), and leaves a row that round marked instead of publishing it a second time.
_PG_RELAY_LOCK_KEY = 424242


def _mark_oldest_locked(batch: int) -> Any:
    """`_mark_oldest` for PostgreSQL, with the relay lock taken in the same statement."""
    return text(f"""
        WITH lk AS MATERIALIZED (
            SELECT pg_try_advisory_xact_lock({_PG_RELAY_LOCK_KEY}) AS ok,
                   set_config('synchronous_commit', 'off', true) AS sync),
        marked AS (
            UPDATE outbox SET published_at = :now
            WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL AND (SELECT ok FROM lk)
                         ORDER BY id LIMIT {int(batch)})
              AND published_at IS NULL
            RETURNING id, event_id, stream, event_type, correlation_id, payload)
        SELECT lk.ok, m.id, m.event_id, m.stream, m.event_type, m.correlation_id, m.payload
        FROM lk LEFT JOIN marked m ON true
    """).bindparams(bindparam("now", type_=TS))
