"""Retry and dead letter: what happens to an entry whose handler failed.

A failing entry stays pending in its consumer group and its attempts are counted in `message_failures`; it is
claimed back and handled again after an exponential backoff (`Retries`), and after `max_attempts` it goes to the
`dead_letters` table with its stream, entry id, payload, error, attempts and times, and is acknowledged. An entry
that can never succeed (not JSON, wrong schema, bad signature, `Poison` from a handler) is dead-lettered at once.

The kit schedules retries itself: FastStream's `nack` has no delay for Redis streams (the entry is simply left
pending), and the attempt count must survive a restart, so it lives in the service's database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.kit import logs, wire
from safe_procurement.shared.kit.db import transaction
from safe_procurement.shared.kit.subscriptions import Subscription
from safe_procurement.shared.kit.tables import DeadLetter, MessageFailure, utcnow

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("safe.messaging")


async def dead_letter(
    session: AsyncSession, sub: Subscription[Any], group: str, entry: wire.Entry, error: str, kind: str, *,
    attempts: int, first_failed_at: datetime | None = None,
) -> None:
    """Record `entry` as a dead letter of `group` in the caller's transaction (once per entry)."""
    # PostgreSQL text cannot hold NUL: keep it visible, escaped, rather than fail to record the letter
    payload = wire.readable(entry.fields).replace("\x00", "\\u0000")
    error = error.replace("\x00", "\\u0000")
    event_id, correlation_id = _ids_from(payload)
    exists = (await session.exec(select(DeadLetter.id).where(
        DeadLetter.stream == sub.stream, DeadLetter.group_name == group, DeadLetter.entry_id == entry.entry_id,
    ))).first()
    if exists is not None:
        return
    now = utcnow()
    session.add(DeadLetter(
        stream=sub.stream, group_name=group, entry_id=entry.entry_id, event_id=event_id,
        correlation_id=correlation_id, payload=payload, error=error[:8000], error_kind=kind, attempts=attempts,
        first_failed_at=first_failed_at or now, last_failed_at=now,
    ))
    sub.dead_lettered += 1
    log.error(
        "message dead-lettered",
        extra={"stream": sub.stream, "entry_id": entry.entry_id, "event_id": event_id, "kind": kind,
               "correlation_id": correlation_id, "error": error[:500],
               "_trace": logs.payload_ids(payload)},  # the message's trace
    )


async def count_failure(
    factory: async_sessionmaker[AsyncSession], sub: Subscription[Any], group: str, entry: wire.Entry, error: str,
    max_attempts: int,
) -> tuple[int, bool] | None:
    """Count a failed attempt of `entry`; at `max_attempts` dead-letter it. (attempts, dead-lettered), or None
    when not even that could be recorded (the entry stays pending and the reclaimer brings it back)."""
    try:
        async with transaction(factory) as session:
            row = await session.get(MessageFailure, (sub.stream, entry.entry_id))
            now = utcnow()
            if row is None:
                row = MessageFailure(stream=sub.stream, entry_id=entry.entry_id, attempts=0, error="",
                                     first_failed_at=now, last_failed_at=now)
            row.attempts += 1
            row.error = error[:8000]
            row.last_failed_at = now
            if row.attempts < max_attempts:
                session.add(row)
                return row.attempts, False
            await dead_letter(session, sub, group, entry, error, "handler", attempts=row.attempts,
                              first_failed_at=row.first_failed_at)
            if row in session:
                session.expunge(row)
            await session.execute(delete(MessageFailure).where(
                col(MessageFailure.stream) == sub.stream, col(MessageFailure.entry_id) == entry.entry_id))
            return row.attempts, True
    except Exception:
        log.exception("could not record a failure; the entry stays pending and will be reclaimed")
        return None


def backoff_s(attempts: int, base_ms: int, max_ms: int) -> float:
    """Exponential backoff before attempt `attempts + 1`: base, 2 × base, 4 × base … up to `max_ms`."""
    return min(base_ms * (2 ** max(attempts - 1, 0)), max_ms) / 1000


class Retries:
    """Pending entries handled again after a delay, by this consumer (XCLAIM), unless the service is stopping."""

    def __init__(self, *, redis: Redis, key: Callable[[str], str], group: str, consumer: str,
                 process: Callable[[Subscription[Any], list[wire.Entry]], Awaitable[None]]) -> None:
        self.redis = redis
        self.stopping = False
        self._key, self._group, self._consumer, self._process = key, group, consumer, process
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, sub: Subscription[Any], entry_id: str, delay: float, *, count_delivery: bool = True) -> None:
        if self.stopping:
            return
        task = asyncio.create_task(self._later(sub, entry_id, delay, count_delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    async def _later(self, sub: Subscription[Any], entry_id: str, delay: float, count_delivery: bool) -> None:
        await asyncio.sleep(delay)
        if self.stopping:
            return
        key = self._key(sub.stream)
        try:
            if count_delivery:
                claimed = await self.redis.xclaim(key, self._group, self._consumer, 0, [entry_id])
            else:
                # A deferral is not a delivery: JUSTID leaves the delivery counter alone (it only resets the
                # idle time), so an entry deferred for long is not later taken for one that kills consumers.
                ids = await self.redis.xclaim(key, self._group, self._consumer, 0, [entry_id], justid=True)
                claimed = await self.redis.xrange(key, entry_id, entry_id) if ids else []
        except Exception:
            log.exception("retry claim failed; the reclaimer will pick the entry up")
            return
        await self._process(sub, [wire.Entry(wire.entry_id(mid), data) for mid, data in claimed
                                  if data is not None])


def _ids_from(payload: str) -> tuple[str | None, str | None]:
    """The event id and correlation id a dead letter is found by, when the payload is a JSON object."""
    try:
        data = json.loads(payload)
    except Exception:
        return None, None
    if not isinstance(data, dict):
        return None, None
    ev, corr = data.get("event_id"), data.get("correlation_id") or data.get("case_id")
    return (str(ev)[:100] if ev else None, str(corr)[:100] if corr else None)
