"""Reliable consumption on top of FastStream consumer groups: the subscriptions of one service.

`Messaging` is what a service and the composition root use; each concern lives in its own module:
- shared/kit/wire.py — the entry's fields on the stream (`__data__`, `__sig__`), FastStream's parse/decode stages;
- shared/kit/subscriptions.py — what a service declares: `Subscription`, `Poison`, `Defer`;
- shared/kit/consumption.py — consumer groups: FastStream subscribers, own pending entries, reclaim, group keeper;
- shared/kit/batches.py — a batch through its handlers in one transaction with the inbox (strict decoding);
- shared/kit/dead_letters.py — retry with backoff and dead letters;
- shared/kit/replay.py — operator actions on dead letters (replay, discard).

What holds, whatever happens: nothing acknowledged before its effect is committed; nothing applied twice (inbox);
a failing entry retried, then dead-lettered with its reason; an undecodable one dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.redis import RedisBroker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import consumption, logs, outbox, replay, signing, wire
from safe_procurement.shared.kit.batches import BatchRunner, Outcome, decode
from safe_procurement.shared.kit.dead_letters import Retries, backoff_s, count_failure
from safe_procurement.shared.kit.replay import AlreadyResolved
from safe_procurement.shared.kit.subscriptions import Defer, E, Handler, Poison, Prefetch, Subscription
from safe_procurement.shared.kit.tables import DeadLetter
from safe_procurement.shared.kit.uow import UnitOfWork
from safe_procurement.shared.kit.wire import Entry

__all__ = [
    "AlreadyResolved", "Defer", "Entry", "Handler", "Messaging", "Poison", "Prefetch",
    "Subscription",
]

log = logging.getLogger("safe.messaging")


class Messaging:
    """The subscriptions of one service and the machinery that makes them reliable."""

    def __init__(
        self, *, service: str, factory: async_sessionmaker[AsyncSession], redis: Redis, consumer_name: str,
        prefix: str = "", batch_size: int = 100, poll_interval_ms: int = 100, max_attempts: int = 5,
        retry_backoff_ms: int = 500, retry_backoff_max_ms: int = 30_000, claim_idle_ms: int = 15_000,
        reclaim_interval_ms: int = 1_000, keyring: signing.Keyring | None = None,
        on_emitted: Callable[[], None] | None = None,
        publish_after_commit: Callable[..., Awaitable[bool]] | None = None,
        unit_of_work: Callable[..., UnitOfWork] = UnitOfWork,
    ) -> None:
        self.service = self.group = service
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
        # verifies internal entries before they are parsed, signs replays (shared/kit/signing.py); None: unsigned
        self.keyring = keyring
        self.subscriptions: dict[str, Subscription[Any]] = {}
        self.broker: RedisBroker | None = None
        self.groups_ready = False
        self._batches = BatchRunner(service=service, group=service, factory=factory, unit_of_work=unit_of_work)
        self._retries = Retries(redis=redis, key=self.key, group=self.group, consumer=consumer_name,
                                process=self.process)
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight: dict[str, set[str]] = {}

    @property
    def factory(self) -> async_sessionmaker[AsyncSession]:
        return self._batches.factory

    @property
    def redis(self) -> Redis:
        return self._retries.redis

    @property
    def stopping(self) -> bool:
        return self._retries.stopping

    # --- declaration --------------------------------------------------------------------------

    def subscribe(
        self, stream: str, model: type[E], *, description: str = "", max_attempts: int | None = None,
        key: Callable[[Any, str], str] | None = None, prefetch: Prefetch | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.subscriptions[stream] = Subscription(
                stream=stream, model=model, handler=fn, description=description or (fn.__doc__ or "").strip(),
                max_attempts=max_attempts, key=key, prefetch=prefetch,
            )
            return fn

        return register

    def key(self, stream: str) -> str:
        return streams.qualified(stream, self.prefix)

    def max_attempts_of(self, sub: Subscription[Any]) -> int:
        return sub.max_attempts or self.max_attempts

    def backoff_s(self, attempts: int) -> float:
        return backoff_s(attempts, self.retry_backoff_ms, self.retry_backoff_max_ms)

    def attach(self, broker: RedisBroker) -> None:
        """Declare one FastStream batch subscriber per subscription (consumer group, stable consumer)."""
        self.broker = broker
        consumption.attach(self, broker)

    # --- lifecycle ----------------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        await consumption.ensure_groups(self)

    def begin_start(self) -> None:
        """Work is taken again (a start, also after a stop): retries are scheduled, the background loops run."""
        self._retries.stopping = False

    def start_background(self) -> None:
        """After the broker started: own pending entries, reclaimer, group keeper."""
        self._tasks.append(asyncio.create_task(consumption.recover_own_pending(self), name="recover-own-pending"))
        self._tasks.append(asyncio.create_task(consumption.reclaim_loop(self), name="reclaimer"))
        self._tasks.append(asyncio.create_task(consumption.keeper_loop(self), name="group-keeper"))

    def begin_stop(self) -> None:
        """No new work from here on: the group keeper must not restart the subscribers the broker is about to
        stop, and retries and reclaims are left pending for the next start."""
        self._retries.stopping = True

    async def stop(self, timeout: float = 10.0) -> None:
        self.begin_stop()
        # Handlers already running on the retry, reclaim or recovery paths get the same grace as FastStream's:
        # they may finish within the timeout; only then are the loops cancelled (a cancelled handler's
        # transaction rolls back and its entry stays pending for the next start).
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout)
        except TimeoutError:
            log.warning("in-flight messages did not finish in time; they stay pending for the next start")
        tasks = [*self._tasks, *self._retries.tasks()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # --- processing ---------------------------------------------------------------------------

    async def process(self, sub: Subscription[Any], entries: Sequence[Entry]) -> None:
        """Handle a batch read from `sub`'s stream, whichever path read it (subscriber, retry, reclaim)."""
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
        parsed, poison = decode(sub, entries, self.keyring)
        engine = self.factory.kw.get("bind") if self.publish_after_commit is not None else None
        acked = False
        if engine is None:
            outcome = await self._batches.run(sub, parsed, poison)
        else:
            # The batch and then one relay round on the same checked-out connection: the events the batch
            # emitted go out right after its commit instead of queueing for the connection behind the other
            # batches and requests of this process. The relay task stays the safety net.
            # The consumed entries' XACK rides in the same pipeline as the XADDs.
            async with engine.connect() as conn:
                outcome = await self._batches.run(sub, parsed, poison, conn)
                if outcome.emitted:
                    then = [("XACK", self.key(sub.stream), self.group, *outcome.ack)] if outcome.ack else []
                    acked = await self.publish_after_commit(conn, then)  # type: ignore[misc]
        if outcome.emitted and engine is None and self.on_emitted is not None:
            self.on_emitted()
        await self._settle(sub, outcome, acked=acked)

    async def _settle(self, sub: Subscription[Any], outcome: Outcome, *, acked: bool) -> None:
        """Count the batch, acknowledge what is done, count failures, schedule retries and deferrals."""
        sub.duplicates += outcome.duplicates
        sub.processed += len(outcome.ack)
        sub.batches += 1
        if outcome.ack and not acked:
            await self.ack(sub, outcome.ack)
        for entry, err, event_id in outcome.failures:
            await self._failed(sub, entry, err, event_id)
        for entry, delay in outcome.deferred:
            self._retries.schedule(sub, entry.entry_id, delay, count_delivery=False)

    async def _failed(self, sub: Subscription[Any], entry: Entry, error: str, event_id: str | None) -> None:
        sub.failed += 1
        counted = await count_failure(self.factory, sub, self.group, entry, error, self.max_attempts_of(sub))
        if counted is None:
            return
        attempts, dead = counted
        log.warning("message failed", extra={
            "stream": sub.stream, "entry_id": entry.entry_id, "event_id": event_id, "attempts": attempts,
            "error": error[:500], "_trace": logs.payload_ids(wire.payload(entry.fields)),  # the message's trace
        })
        if dead:
            await self.ack(sub, [entry.entry_id])
        else:
            self._retries.schedule(sub, entry.entry_id, self.backoff_s(attempts))

    async def ack(self, sub: Subscription[Any], entry_ids: list[str]) -> None:
        """XACK; on failure the entries stay pending, and their redelivery is harmless (inbox)."""
        try:
            if isinstance(self.redis, Redis):  # not a cluster client: straight on a pooled connection (outbox.send)
                await outbox.send(self.redis, [("XACK", self.key(sub.stream), self.group, *entry_ids)])
            else:
                await self.redis.xack(self.key(sub.stream), self.group, *entry_ids)
        except Exception:
            log.exception("XACK failed", extra={"stream": sub.stream})

    # --- consumer groups, operator actions, health ----------------------------------------------

    async def reclaim_once(self, sub: Subscription[Any]) -> int:
        """Take over entries idle longer than `claim_idle_ms` in any consumer of the group."""
        return await consumption.reclaim_once(self, sub)

    async def replay(self, dead_letter_id: int, actor: str, payload: str | None = None) -> DeadLetter | None:
        return await replay.replay(self, dead_letter_id, actor, payload)

    async def discard(self, dead_letter_id: int, actor: str, reason: str) -> DeadLetter | None:
        return await replay.discard(self, dead_letter_id, actor, reason)

    async def stream_health(self) -> dict[str, dict[str, float]]:
        """Pending count, lag and oldest pending age per subscribed stream (for /metrics and /explain)."""
        return await consumption.stream_health(self)
