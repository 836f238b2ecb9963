"""Reliable consumption on top of FastStream consumer groups.

FastStream reads new entries (XREADGROUP, batched) for each subscription; everything after the read
is ours, so that the guarantees hold whatever happens:
- inbox: each event's `event_id` is recorded in the same transaction as its effect; duplicates are
  acknowledged and skipped;
- a batch commits once; each message runs in its own savepoint, so one failure does not undo the rest;
- a failing message stays pending and is retried with exponential backoff up to `max_attempts`, then
  goes to the dead-letter table with its stream, entry id, payload, error, attempts and times;
- a message that fails validation (not JSON, wrong schema, unknown version) is dead-lettered at once;
- entries left pending by a dead or stuck consumer are taken over with XAUTOCLAIM after `claim_idle_ms`;
  on start a consumer first finishes its own pending entries (stable consumer name);
- groups are created from the start of the stream (id 0), so nothing published before the first start
  is missed, and re-created if Redis comes back empty.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage
from faststream.redis.parser.binary import BinaryMessageFormatV1
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.contracts import streams
from shared.contracts.events import OperatorActionRecorded
from shared.kit import logs, outbox, signing, strict
from shared.kit.db import transaction
from shared.kit.tables import AuditEntry, DeadLetter, InboxRow, MessageFailure, utcnow
from shared.kit.uow import Delivery, UnitOfWork
from shared.kit.uow import begin as uow_begin

log = logging.getLogger("safe.messaging")

E = TypeVar("E", bound=BaseModel)


class Poison(Exception):
    """The entry can never be processed as it is (no payload, not JSON, wrong schema or version)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Defer(Exception):
    """The handler cannot run yet (e.g. reference data not replicated): retry later without counting
    an attempt. The entry stays pending, so a crash meanwhile loses nothing."""

    def __init__(self, message: str, delay_s: float = 1.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


# A handler gets the message and the unit of work of its transaction (shared/kit/uow.py).
Handler = Callable[[Any, UnitOfWork], Awaitable[None]]
# Loads what a whole batch's handlers will need with one query per kind (e.g. the cases named by the events)
# into the unit of work's repositories, so that handlers do not query, and so do not flush, once per message.
Prefetch = Callable[[UnitOfWork, list[Any]], Awaitable[None]]

# Handlers run together in one optimistic batch transaction (a unit of work with `batch` True): any failure
# redoes the batch message by message, each in its own savepoint, with `batch` False and nothing prefetched.


@dataclass
class Subscription(Generic[E]):
    stream: str
    model: type[E]
    handler: Handler
    description: str = ""
    max_attempts: int | None = None
    key: Callable[[Any, str], str] | None = None
    prefetch: Prefetch | None = None
    subscriber: Any = None
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    batches: int = 0  # batches handled: processed / batches is the mean batch size

    def key_of(self, event: Any, entry_id: str) -> str:
        """The inbox key: the event id, or for commands without one, a key the subscription derives."""
        if self.key is not None:
            return self.key(event, entry_id)
        return str(event.event_id)


@dataclass
class Entry:
    entry_id: str
    fields: dict[bytes, bytes]


@dataclass
class _Outcome:
    ack: list[str] = field(default_factory=list)
    failures: list[tuple[Entry, str, str | None]] = field(default_factory=list)
    deferred: list[tuple[Entry, float]] = field(default_factory=list)
    emitted: int = 0
    duplicates: int = 0


class _Isolate(Exception):
    """The optimistic whole-batch run hit a failure; the batch is redone message by message."""


def extract_payload(fields: dict[bytes, bytes]) -> bytes:
    raw = fields.get(b"__data__")
    if raw is None:
        raise Poison("validation", "entry has no __data__ field")
    if raw.startswith(BinaryMessageFormatV1.IDENTITY_HEADER):
        data, _headers = BinaryMessageFormatV1.parse(raw)
        return data
    return raw


def _text(raw: bytes | None) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", errors="replace")


class Messaging:
    """The subscriptions of one service and the machinery that makes them reliable."""

    def __init__(
        self,
        *,
        service: str,
        factory: async_sessionmaker[AsyncSession],
        consumer_name: str,
        prefix: str = "",
        batch_size: int = 100,
        poll_interval_ms: int = 100,
        max_attempts: int = 5,
        retry_backoff_ms: int = 500,
        retry_backoff_max_ms: int = 30_000,
        claim_idle_ms: int = 15_000,
        reclaim_interval_ms: int = 1_000,
        on_emitted: Callable[[], None] | None = None,
        publish_after_commit: Callable[..., Awaitable[bool]] | None = None,
        unit_of_work: Callable[..., UnitOfWork] = UnitOfWork,
    ) -> None:
        self.service = service
        self.unit_of_work = unit_of_work  # (session, *, batch) → the service's unit of work
        self.group = service
        self.factory = factory
        self.consumer = consumer_name
        self.prefix = prefix
        self.batch_size = batch_size
        self.poll_interval_ms = poll_interval_ms
        self.max_attempts = max_attempts
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.claim_idle_ms = claim_idle_ms
        self.reclaim_interval_ms = reclaim_interval_ms
        self.on_emitted = on_emitted
        # one relay round on the batch's connection right after its commit (OutboxRelay.publish_after_commit)
        self.publish_after_commit = publish_after_commit
        # verifies internal entries before they are parsed, signs replays (set in the lifespan; shared/kit/signing.py)
        self.keyring: signing.Keyring | None = None
        self.subscriptions: dict[str, Subscription[Any]] = {}
        self.redis: Redis | None = None
        self.broker: RedisBroker | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._retry_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.groups_ready = False
        self._overdelivered: set[str] = set()
        self._synthetic_ids = itertools.count(1)
        self._in_flight: dict[str, set[str]] = {}

    # --- declaration --------------------------------------------------------------------------

    def subscribe(
        self,
        stream: str,
        model: type[E],
        *,
        description: str = "",
        max_attempts: int | None = None,
        key: Callable[[Any, str], str] | None = None,
        prefetch: Prefetch | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.subscriptions[stream] = Subscription(
                stream=stream,
                model=model,
                handler=fn,
                description=description or (fn.__doc__ or "").strip(),
                max_attempts=max_attempts,
                key=key,
                prefetch=prefetch,
            )
            return fn

        return register

    def key(self, stream: str) -> str:
        return streams.qualified(stream, self.prefix)

    def attach(self, broker: RedisBroker) -> None:
        """Declare one FastStream batch subscriber per subscription (consumer group, stable consumer)."""
        self.broker = broker
        for sub in self.subscriptions.values():
            holder: dict[str, Any] = {}
            fs_sub = broker.subscriber(
                stream=StreamSub(
                    self.key(sub.stream),
                    group=self.group,
                    consumer=self.consumer,
                    batch=True,
                    max_records=self.batch_size,
                    polling_interval=self.poll_interval_ms,
                ),
                ack_policy=AckPolicy.MANUAL,
                parser=_unparsed_for(holder),
                decoder=_undecoded,
                title=f"{sub.stream}:{sub.handler.__name__}",
                description=sub.description,
            )
            fs_sub(self._make_consumer(sub))
            holder["subscriber"] = sub.subscriber = fs_sub

    def _make_consumer(self, sub: Subscription[Any]) -> Callable[..., Awaitable[None]]:
        assert self.broker is not None
        context = self.broker.context

        async def consume() -> None:
            # The message comes from FastStream's context, not as an injected argument: FastDepends resolves a
            # `RedisBatchStreamMessage` argument with a synchronous call on a worker thread (anyio.to_thread), a
            # thread hop per batch that `make bench` showed in every consumer's profile.
            msg: RedisBatchStreamMessage = context.get_local("message")
            raw = msg.raw_message
            ids = [_sid(mid) for mid in raw.get("message_ids") or []]
            if len(ids) != len(raw["data"]):  # FastStream's in-memory test broker sends entries without ids
                ids = [f"0-{next(self._synthetic_ids)}" for _ in raw["data"]]
            entries = [Entry(mid, data) for mid, data in zip(ids, raw["data"], strict=True)]
            await self.process(sub, entries)

        consume.__name__ = sub.handler.__name__
        return consume

    # --- lifecycle ----------------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        assert self.redis is not None
        for sub in self.subscriptions.values():
            try:
                await self.redis.xgroup_create(self.key(sub.stream), self.group, id="0", mkstream=True)
                log.info("consumer group created", extra={"stream": sub.stream, "group": self.group})
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
        self.groups_ready = True

    async def start_background(self, redis: Redis) -> None:
        """Before the broker starts: groups; after it: own pending entries, reclaimer, group keeper."""
        self.redis = redis
        self._tasks.append(asyncio.create_task(self._recover_own_pending(), name="recover-own-pending"))
        self._tasks.append(asyncio.create_task(self._reclaim_loop(), name="reclaimer"))
        self._tasks.append(asyncio.create_task(self._keeper_loop(), name="group-keeper"))

    def begin_stop(self) -> None:
        """No new work from here on: the group keeper must not restart the subscribers the broker is about to
        stop, and retries and reclaims are left pending for the next start."""
        self._stopping = True

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        # Handlers already running on the retry, reclaim or recovery paths get the same grace as FastStream's:
        # they may finish within the timeout; only then are the loops cancelled (a cancelled handler's
        # transaction rolls back and its entry stays pending for the next start).
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout)
        except TimeoutError:
            log.warning("in-flight messages did not finish in time; they stay pending for the next start")
        for t in [*self._tasks, *self._retry_tasks]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._retry_tasks, return_exceptions=True)

    # --- processing ---------------------------------------------------------------------------

    async def process(self, sub: Subscription[Any], entries: Sequence[Entry]) -> None:
        # an entry this process is already handling (e.g. taken back by its own reclaimer while a slow
        # handler still runs) is not handled a second time in parallel
        in_flight = self._in_flight.setdefault(sub.stream, set())
        entries = [e for e in entries if e.entry_id not in in_flight]
        if not entries:
            return
        ids = {e.entry_id for e in entries}
        in_flight |= ids
        self._busy += 1
        self._idle.clear()
        try:
            await self._process(sub, entries)
        finally:
            in_flight -= ids
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    async def _process(self, sub: Subscription[Any], entries: Sequence[Entry]) -> None:
        parsed: list[tuple[Entry, Any]] = []
        poison: list[tuple[Entry, Poison]] = []
        for entry in entries:
            try:
                if self.keyring is not None:
                    signing_check(self.keyring, sub.stream, entry.fields)
                payload = extract_payload(entry.fields)
                parsed.append((entry, sub.model.model_validate(_loads_exact(payload))))
            except Poison as p:
                poison.append((entry, p))
            except ValidationError as ve:
                poison.append((entry, Poison("validation", _validation_text(ve))))
            except Exception as ex:  # undecodable in some other way
                poison.append((entry, Poison("validation", f"{type(ex).__name__}: {ex}")))

        engine = self.factory.kw.get("bind") if self.publish_after_commit is not None else None
        acked = False
        if engine is None:
            outcome = await self._batch_outcome(sub, parsed, poison, None)
        else:
            # The batch and then one relay round on the same checked-out connection: the events the batch
            # emitted go out right after its commit instead of queueing for the connection behind the other
            # batches and requests of this process. The relay task stays the safety net.
            # The consumed entries' XACK rides in the same pipeline as the XADDs.
            async with engine.connect() as conn:
                outcome = await self._batch_outcome(sub, parsed, poison, conn)
                if outcome.emitted:
                    then = [("XACK", self.key(sub.stream), self.group, *outcome.ack)] if outcome.ack else []
                    acked = await self.publish_after_commit(conn, then)  # type: ignore[misc]
        sub.duplicates += outcome.duplicates
        sub.processed += len(outcome.ack)
        sub.batches += 1
        if outcome.ack and not acked:
            await self._ack(sub, outcome.ack)
        if outcome.emitted and engine is None and self.on_emitted is not None:
            self.on_emitted()
        for entry, err, event_id in outcome.failures:
            await self._record_failure(sub, entry, err, event_id)
        for entry, delay in outcome.deferred:
            self._schedule_retry(sub, entry.entry_id, delay, count_delivery=False)

    async def _batch_outcome(
        self, sub: Subscription[Any], parsed: list[tuple[Entry, Any]], poison: list[tuple[Entry, Poison]],
        conn: AsyncConnection | None,
    ) -> _Outcome:
        try:
            try:
                # common case first: the whole batch in one transaction, no savepoint per message
                return await self._run_batch(sub, parsed, poison, isolate=False, conn=conn)
            except _Isolate:
                # a message failed (or the commit did): do the batch again, each message in its own
                # savepoint, so that one failure cannot undo the others
                return await self._run_batch(sub, parsed, poison, isolate=True, conn=conn)
        except Exception as ex:  # the batch transaction itself failed: nothing of it happened
            log.exception("batch transaction failed", extra={"stream": sub.stream})
            err = _error_text(ex)
            return _Outcome(
                failures=[(e, err, sub.key_of(ev, e.entry_id)) for e, ev in parsed]
                + [(e, err, None) for e, _ in poison]
            )

    async def _run_batch(
        self,
        sub: Subscription[Any],
        parsed: list[tuple[Entry, Any]],
        poison: list[tuple[Entry, Poison]],
        *,
        isolate: bool,
        conn: AsyncConnection | None = None,
    ) -> _Outcome:
        outcome = _Outcome()
        try:
            async with uow_begin(self.factory, self.unit_of_work, batch=not isolate, connection=conn) as uow:
                session = uow.session
                seen: set[str] = set()
                if isolate:
                    # The optimistic batch does not look the batch up in the inbox first: a redelivered event
                    # collides with its inbox row at the commit, and the batch is redone here, where processed
                    # events are found before their handler runs. Redeliveries are rare (a crash, a reclaim), a
                    # lookup per batch is not.
                    ids = [sub.key_of(ev, e.entry_id) for e, ev in parsed]
                    if ids:
                        seen = set((await session.exec(
                            select(InboxRow.event_id).where(col(InboxRow.event_id).in_(ids)))).all())
                if not isolate and sub.prefetch is not None and parsed:
                    await sub.prefetch(uow, [ev for _, ev in parsed])
                for entry, event in parsed:
                    event_id = sub.key_of(event, entry.entry_id)
                    if event_id in seen:
                        outcome.duplicates += 1
                        outcome.ack.append(entry.entry_id)
                        continue
                    delivery = uow.delivery = Delivery(sub.stream, entry.entry_id)
                    emitted = uow.emitted
                    if not isolate:
                        try:
                            async with logs.consumer_span(self.service, sub.stream, event, event_id) as span:
                                await sub.handler(event, uow)
                                uow.processed(event_id, delivery)
                        except Exception as ex:
                            raise _Isolate() from ex
                    else:
                        try:
                            async with (
                                logs.consumer_span(self.service, sub.stream, event, event_id) as span,
                                session.begin_nested(),
                            ):
                                await sub.handler(event, uow)
                                uow.processed(event_id, delivery)
                                await session.flush()
                        except IntegrityError as ie:
                            if _is_inbox_conflict(ie):
                                outcome.duplicates += 1
                                outcome.ack.append(entry.entry_id)
                            else:
                                outcome.failures.append((entry, _error_text(ie), event_id))
                            continue
                        except Defer as d:
                            outcome.deferred.append((entry, d.delay_s))
                            continue
                        except Poison as p:  # the handler says it can never succeed: dead letter now
                            await self._dead_letter(session, sub, entry, str(p), p.kind, attempts=1)
                            outcome.ack.append(entry.entry_id)
                            continue
                        except Exception as ex:
                            outcome.failures.append((entry, _error_text(ex), event_id))
                            continue
                    seen.add(event_id)
                    outcome.ack.append(entry.entry_id)
                    outcome.emitted += uow.emitted - emitted
                    if logs.MESSAGES.isEnabledFor(logging.INFO):  # in the message's trace, not the batch's
                        logs.handled(span, event_id=event_id, correlation_id=getattr(event, "correlation_id", None),
                                     stream=sub.stream)
                for entry, p in poison:
                    await self._dead_letter(session, sub, entry, str(p), p.kind, attempts=1)
                    outcome.ack.append(entry.entry_id)
        except _Isolate:
            raise
        except Exception as ex:
            if not isolate:  # e.g. a concurrent replica committed the same inbox key first
                raise _Isolate() from ex
            raise
        return outcome

    async def _ack(self, sub: Subscription[Any], entry_ids: list[str]) -> None:
        assert self.redis is not None
        try:
            if isinstance(self.redis, Redis):  # not a cluster client: straight on a pooled connection (outbox.send)
                await outbox.send(self.redis, [("XACK", self.key(sub.stream), self.group, *entry_ids)])
            else:
                await self.redis.xack(self.key(sub.stream), self.group, *entry_ids)
        except Exception:  # the entries stay pending; redelivery is harmless (inbox)
            log.exception("XACK failed", extra={"stream": sub.stream})

    async def _dead_letter(
        self,
        session: AsyncSession,
        sub: Subscription[Any],
        entry: Entry,
        error: str,
        kind: str,
        *,
        attempts: int,
        first_failed_at: Any = None,
    ) -> None:
        raw = entry.fields.get(b"__data__")
        if raw is not None:
            try:
                payload = _text(extract_payload(entry.fields))
            except Exception:
                payload = _text(raw)
        else:
            payload = json.dumps({k.decode(errors="replace"): _text(v) for k, v in entry.fields.items()})
        # PostgreSQL text cannot hold NUL: keep it visible, escaped, rather than fail to record the letter
        payload, error = payload.replace("\x00", "\\u0000"), error.replace("\x00", "\\u0000")
        event_id, correlation_id = _ids_from(payload)
        exists = (
            await session.exec(
                select(DeadLetter.id).where(
                    DeadLetter.stream == sub.stream,
                    DeadLetter.group_name == self.group,
                    DeadLetter.entry_id == entry.entry_id,
                )
            )
        ).first()
        if exists is not None:
            return
        now = utcnow()
        session.add(
            DeadLetter(
                stream=sub.stream,
                group_name=self.group,
                entry_id=entry.entry_id,
                event_id=event_id,
                correlation_id=correlation_id,
                payload=payload,
                error=error[:8000],
                error_kind=kind,
                attempts=attempts,
                first_failed_at=first_failed_at or now,
                last_failed_at=now,
            )
        )
        sub.dead_lettered += 1
        log.error(
            "message dead-lettered",
            extra={"stream": sub.stream, "entry_id": entry.entry_id, "event_id": event_id, "kind": kind,
                   "correlation_id": correlation_id, "error": error[:500],
                   "_trace": logs.payload_ids(payload)},  # the message's trace
        )

    def _max_attempts(self, sub: Subscription[Any]) -> int:
        return sub.max_attempts or self.max_attempts

    def backoff_s(self, attempts: int) -> float:
        ms = min(self.retry_backoff_ms * (2 ** max(attempts - 1, 0)), self.retry_backoff_max_ms)
        return ms / 1000

    async def _record_failure(self, sub: Subscription[Any], entry: Entry, error: str, event_id: str | None) -> None:
        sub.failed += 1
        dead = False
        try:
            async with transaction(self.factory) as session:
                row = await session.get(MessageFailure, (sub.stream, entry.entry_id))
                now = utcnow()
                if row is None:
                    row = MessageFailure(
                        stream=sub.stream, entry_id=entry.entry_id, attempts=0, error="",
                        first_failed_at=now, last_failed_at=now,
                    )
                row.attempts += 1
                row.error = error[:8000]
                row.last_failed_at = now
                attempts = row.attempts
                if attempts >= self._max_attempts(sub):
                    await self._dead_letter(
                        session, sub, entry, error, "handler", attempts=attempts, first_failed_at=row.first_failed_at
                    )
                    if row in session:
                        session.expunge(row)
                    await session.execute(
                        delete(MessageFailure).where(
                            col(MessageFailure.stream) == sub.stream, col(MessageFailure.entry_id) == entry.entry_id
                        )
                    )
                    dead = True
                else:
                    session.add(row)
        except Exception:
            log.exception("could not record a failure; the entry stays pending and will be reclaimed")
            return
        log.warning(
            "message failed",
            extra={"stream": sub.stream, "entry_id": entry.entry_id, "event_id": event_id,
                   "attempts": attempts, "error": error[:500],
                   "_trace": logs.payload_ids(entry.fields.get(b"__data__"))},  # the message's trace
        )
        if dead:
            await self._ack(sub, [entry.entry_id])
            return
        self._schedule_retry(sub, entry.entry_id, self.backoff_s(attempts))

    def _schedule_retry(self, sub: Subscription[Any], entry_id: str, delay: float, *, count_delivery: bool = True) -> None:
        if self._stopping:
            return
        task = asyncio.create_task(self._retry_later(sub, entry_id, delay, count_delivery))
        self._retry_tasks.add(task)
        task.add_done_callback(self._retry_tasks.discard)

    async def _retry_later(self, sub: Subscription[Any], entry_id: str, delay: float, count_delivery: bool = True) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        assert self.redis is not None
        key = self.key(sub.stream)
        try:
            if count_delivery:
                claimed = await self.redis.xclaim(key, self.group, self.consumer, 0, [entry_id])
            else:
                # A deferral is not a delivery: JUSTID leaves the delivery counter alone (it only resets the
                # idle time), so an entry deferred for long is not later taken for one that kills consumers.
                ids = await self.redis.xclaim(key, self.group, self.consumer, 0, [entry_id], justid=True)
                claimed = await self.redis.xrange(key, entry_id, entry_id) if ids else []
        except Exception:
            log.exception("retry claim failed; the reclaimer will pick the entry up")
            return
        entries = [Entry(_sid(mid), data) for mid, data in claimed if data is not None]
        await self.process(sub, entries)

    async def _recover_own_pending(self) -> None:
        """After a restart, this consumer's unacknowledged entries are processed first."""
        assert self.redis is not None
        for sub in list(self.subscriptions.values()):
            last = "0"
            while not self._stopping:
                try:
                    resp = await self.redis.xreadgroup(
                        self.group, self.consumer, {self.key(sub.stream): last}, count=self.batch_size
                    )
                except ResponseError:
                    break
                if not resp or not resp[0][1]:
                    break
                batch = resp[0][1]
                last = _sid(batch[-1][0])
                entries = [Entry(_sid(mid), data) for mid, data in batch if data]
                gone = [_sid(mid) for mid, data in batch if not data]
                if gone:
                    await self._ack(sub, gone)
                await self.process(sub, entries)

    async def reclaim_once(self, sub: Subscription[Any]) -> int:
        """Take over entries idle longer than `claim_idle_ms` in any consumer of the group."""
        assert self.redis is not None
        start = "0-0"
        total = 0
        while not self._stopping:
            resp = await self.redis.xautoclaim(
                self.key(sub.stream), self.group, self.consumer, self.claim_idle_ms, start_id=start,
                count=self.batch_size,
            )
            next_id, claimed = resp[0], resp[1]
            deleted = list(resp[2]) if len(resp) > 2 else []
            if deleted:
                await self._ack(sub, [_sid(d) for d in deleted])
            entries = [Entry(_sid(mid), data) for mid, data in claimed if data]
            if entries:
                total += len(entries)
                log.warning("reclaimed idle entries", extra={"stream": sub.stream, "count": len(entries)})
                await self._dead_letter_overdelivered(sub, entries)
                live = [e for e in entries if e.entry_id not in self._overdelivered]
                await self.process(sub, live)
                self._overdelivered.clear()
            if _sid(next_id) == "0-0":
                break
            start = _sid(next_id)
        return total

    async def _dead_letter_overdelivered(self, sub: Subscription[Any], entries: list[Entry]) -> None:
        """An entry delivered far more often than the cap never completes (it kills its consumer)."""
        assert self.redis is not None
        limit = self._max_attempts(sub) * 2 + 2
        self._overdelivered = set()
        pend = await self.redis.xpending_range(
            self.key(sub.stream), self.group, min=entries[0].entry_id, max=entries[-1].entry_id,
            count=len(entries) * 4,
        )
        counts = {_sid(p["message_id"]): int(p["times_delivered"]) for p in pend}
        over = [e for e in entries if counts.get(e.entry_id, 0) > limit]
        if not over:
            return
        async with transaction(self.factory) as session:
            for e in over:
                await self._dead_letter(
                    session, sub, e, f"delivered {counts[e.entry_id]} times without completing (consumer crashed?)",
                    "redelivery", attempts=counts[e.entry_id],
                )
        await self._ack(sub, [e.entry_id for e in over])
        self._overdelivered = {e.entry_id for e in over}

    async def _reclaim_loop(self) -> None:
        from shared.kit.consumers import remove_dead_consumers

        rounds = 0
        # consumers gone (replaced pods) are removed once nothing is pending for them, about once a minute
        sweep_every = max(1, 60_000 // max(self.reclaim_interval_ms, 1))
        while not self._stopping:
            await asyncio.sleep(self.reclaim_interval_ms / 1000)
            rounds += 1
            for sub in list(self.subscriptions.values()):
                try:
                    await self.reclaim_once(sub)
                    if rounds % sweep_every == 0:
                        await remove_dead_consumers(self.redis, self.key(sub.stream), self.group, self.consumer,
                                                    idle_ms=max(20 * self.claim_idle_ms, 600_000))
                except asyncio.CancelledError:
                    raise
                except ResponseError as e:
                    if "NOGROUP" not in str(e):
                        log.exception("reclaim failed", extra={"stream": sub.stream})
                except Exception:
                    log.exception("reclaim failed", extra={"stream": sub.stream})

    async def _keeper_loop(self) -> None:
        """Re-create groups and restart subscribers if Redis lost them (flush, failover to an empty replica)."""
        while not self._stopping:
            await asyncio.sleep(1.0)
            try:
                stopped = [s for s in self.subscriptions.values() if s.subscriber is not None and not s.subscriber.running]
                keys = [self.key(sub.stream) for sub in self.subscriptions.values()]
                # one round trip for all streams: EXISTS counts the keys that exist
                missing = bool(keys) and await self.redis.exists(*keys) < len(keys)  # type: ignore[union-attr]
                if missing or stopped:
                    await self.ensure_groups()
                for sub in stopped:
                    if self._stopping:
                        break
                    log.warning("restarting subscriber after its group was lost", extra={"stream": sub.stream})
                    await sub.subscriber.start()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("group keeper round failed")

    # --- operator actions -----------------------------------------------------------------------

    async def replay(self, dead_letter_id: int, actor: str, payload: str | None = None) -> DeadLetter | None:
        """Put a dead letter back on its stream (optionally corrected); audited. Raises `AlreadyResolved` when
        another action resolved it first (decided inside the transaction)."""
        assert self.redis is not None
        async with transaction(self.factory) as session:
            dl = await _claim(session, dead_letter_id, "replayed")
            if dl is None or dl.status != "replayed":
                return dl
            body = payload if payload is not None else dl.payload
            fields = {"__data__": body}
            if self.keyring is not None:
                fields["__sig__"] = self.keyring.sign(dl.stream, body)
            new_id = await self.redis.xadd(self.key(dl.stream), fields)  # type: ignore[arg-type]
            dl.status = "replayed"
            dl.resolved_at = utcnow()
            dl.resolved_by = actor
            dl.replay_entry_id = _sid(new_id)
            dl.resolution = "replayed with a corrected payload" if payload is not None else "replayed"
            session.add(dl)
            session.add(
                AuditEntry(actor=actor, action="dead_letter.replay", target=f"dead-letter/{dl.id}",
                           correlation_id=dl.correlation_id, reason=dl.resolution,
                           details=json.dumps({"stream": dl.stream, "entry_id": dl.entry_id, "new_entry_id": dl.replay_entry_id}))
            )
            self._announce(session, dl, "dead_letter.replay", actor, dl.resolution)
        if self.on_emitted and dl.correlation_id:
            self.on_emitted()
        return dl

    async def discard(self, dead_letter_id: int, actor: str, reason: str) -> DeadLetter | None:
        async with transaction(self.factory) as session:
            dl = await _claim(session, dead_letter_id, "discarded")
            if dl is None or dl.status != "discarded":
                return dl
            dl.status = "discarded"
            dl.resolved_at = utcnow()
            dl.resolved_by = actor
            dl.resolution = reason
            session.add(dl)
            session.add(
                AuditEntry(actor=actor, action="dead_letter.discard", target=f"dead-letter/{dl.id}",
                           correlation_id=dl.correlation_id, reason=reason,
                           details=json.dumps({"stream": dl.stream, "entry_id": dl.entry_id}))
            )
            self._announce(session, dl, "dead_letter.discard", actor, reason)
        if self.on_emitted and dl.correlation_id:
            self.on_emitted()
        return dl

    def _announce(self, session: AsyncSession, dl: DeadLetter, action: str, actor: str, reason: str | None) -> None:
        if not dl.correlation_id:
            return
        outbox.emit(
            session,
            streams.OPERATOR_ACTION_RECORDED[self.service],
            OperatorActionRecorded(
                correlation_id=dl.correlation_id, case_id=dl.correlation_id, producer=self.service,
                action=action, actor=actor, reason=reason, target=f"{self.service}/dead-letters/{dl.id}",
            ),
        )

    # --- health -------------------------------------------------------------------------------

    async def stream_health(self) -> dict[str, dict[str, float]]:
        """Pending count, lag and oldest pending age per subscribed stream (for /metrics and /explain)."""
        assert self.redis is not None
        out: dict[str, dict[str, float]] = {}
        now_ms = time.time() * 1000
        for sub in self.subscriptions.values():
            key = self.key(sub.stream)
            info = {"pending": 0.0, "lag": 0.0, "oldest_pending_age_seconds": 0.0, "length": 0.0}
            try:
                info["length"] = float(await self.redis.xlen(key))
                for g in await self.redis.xinfo_groups(key):
                    name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                    if name == self.group:
                        info["pending"] = float(g.get("pending") or 0)
                        info["lag"] = float(g.get("lag") or 0)
                if info["pending"]:
                    summary = await self.redis.xpending(key, self.group)
                    oldest = summary.get("min")
                    if oldest:
                        ms = int(_sid(oldest).split("-")[0])
                        info["oldest_pending_age_seconds"] = max(0.0, (now_ms - ms) / 1000)
            except ResponseError:
                pass
            out[sub.stream] = info
        return out


def _unparsed_for(holder: dict[str, Any]) -> Callable[[Any], Awaitable[RedisBatchStreamMessage]]:
    """A parser that leaves payloads alone: FastStream's batch parser JSON-encodes every entry, and one
    undecodable entry would fail them all. Each entry is decoded on its own in `Messaging._process`."""

    async def parse(raw: Any) -> RedisBatchStreamMessage:
        fs_parser = getattr(holder.get("subscriber"), "parser", None)
        ids = raw.get("message_ids") or []
        correlation_id = None
        data = raw.get("data") or []
        first = data[0].get(b"__data__") if data else None
        if first and first.startswith(BinaryMessageFormatV1.IDENTITY_HEADER):  # published by FastStream itself
            try:
                correlation_id = BinaryMessageFormatV1.parse(first)[1].get("correlation_id")
            except Exception:
                correlation_id = None
        return RedisBatchStreamMessage(
            raw_message=raw, body=b"", message_id=_sid(ids[0]) if ids else None, correlation_id=correlation_id,
            consumer=getattr(fs_parser, "consumer", None), group=getattr(fs_parser, "group", None),
        )

    return parse


async def _undecoded(_msg: Any) -> None:
    """FastStream must not decode payloads: a bad entry would fail the batch before our code sees it.
    Each entry is decoded and validated on its own in `Messaging._process`."""
    return None


def _loads_exact(payload: bytes) -> Any:
    """JSON numbers become Decimals, never floats (pydantic's own JSON parser rounds 17-digit amounts); the same
    strict JSON as over HTTP (shared/kit/strict.py: no duplicate keys, NaN, exponent numbers or NUL)."""
    try:
        return strict.loads(payload)
    except strict.StrictJsonError as e:
        raise Poison("validation", f"validation failed: (payload): {e}") from None


def _sid(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _ids_from(payload: str) -> tuple[str | None, str | None]:
    try:
        data = json.loads(payload)
    except Exception:
        return None, None
    if not isinstance(data, dict):
        return None, None
    ev, corr = data.get("event_id"), data.get("correlation_id") or data.get("case_id")
    return (str(ev)[:100] if ev else None, str(corr)[:100] if corr else None)


def _validation_text(ve: ValidationError) -> str:
    parts = []
    for err in ve.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(payload)"
        parts.append(f"{loc}: {err.get('msg')}")
    return "validation failed: " + "; ".join(parts[:50])


def _error_text(ex: BaseException) -> str:
    tb = traceback.format_exception(type(ex), ex, ex.__traceback__, limit=6)
    return f"{type(ex).__name__}: {ex}\n" + "".join(tb[-3:])


def _is_inbox_conflict(ie: IntegrityError) -> bool:
    text = str(ie.orig).lower() if ie.orig is not None else str(ie).lower()
    return "inbox" in text


class AlreadyResolved(Exception):
    """A dead letter another replay or discard resolved first (answered 409)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"dead letter is already {status}")
        self.status = status


async def _claim(session: AsyncSession, dead_letter_id: int, status: str) -> DeadLetter | None:
    """Move an open dead letter to `status` with one conditional UPDATE, the transaction's first write: of
    concurrent actions on one dead letter exactly one changes the row (PostgreSQL's row lock, SQLite's write
    lock), the others see it resolved and raise `AlreadyResolved`. None when there is no such dead letter."""
    claimed = await session.execute(
        update(DeadLetter).where(col(DeadLetter.id) == dead_letter_id, col(DeadLetter.status) == "open")
        .values(status=status)
    )
    dl = await session.get(DeadLetter, dead_letter_id, populate_existing=True)
    if dl is not None and claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise AlreadyResolved(dl.status)
    return dl


def signing_check(keyring: signing.Keyring, stream: str, fields: dict[bytes, bytes]) -> None:
    """Dead-letter (kind `signature`) an internal entry whose signature does not verify."""
    try:
        keyring.verify(stream, fields)
    except signing.SignatureError as e:
        raise Poison("signature", f"signature: {e}") from None
