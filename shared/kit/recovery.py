"""Recovery after Redis loses acknowledged writes: FLUSHALL, a restart without persistence, a failover to a replica
that had not received the last writes.

Every event a service publishes is a row of its outbox; the relay marks a row sent once Redis acknowledged its
XADD. Redis can still lose that entry afterwards, and then the consumers never see it: the case waits for good
with pending 0 and lag 0 everywhere. The `RedisGuard` of each service notices such a loss and publishes again,
from its outbox, every event its consumers may not have handled; consumers deduplicate on `event_id` (the inbox),
so an event they had handled is acknowledged and skipped.

How it notices (one check per `interval`, a handful of commands):
- an *epoch* of the Redis it talks to: the `run_id` and `master_replid` of the primary (of every primary on a
  cluster). A restart changes the `run_id`; a promotion (Sentinel or cluster failover) gives the new primary a
  new `master_replid`. A restart that kept its data (AOF) also counts: re-publishing is then redundant, harmless.
- a *marker* key per published stream, set with NX, in the stream's hash slot (`{<stream key>}:…`, so it lives on
  the same shard): FLUSHALL or FLUSHDB removes it. The keys carry no TTL.

What it re-publishes: each check records, per published stream that has consumer groups, the oldest entry some
group has not yet acknowledged (its oldest pending entry, else the first entry after its last-delivered id). The
lowest over all streams, minus `margin` (clock skew between Redis and this host, and the relay's lag between the
mark and the XADD), is the *watermark*: every event published before it was handled by every group. A check
only moves the watermark forward when the epoch and the markers read after the progress are unchanged, so the
watermark in hand when a loss is seen is the one from before the loss. After a loss, the guard re-publishes the
outbox rows marked sent at or after the watermark, oldest first, through `Republisher` — the relay's own
publish path (`OutboxRelay.publish_rows`), so whatever the relay adds to an event on its way out (e.g. a
signature) is added to these too. Without a watermark (the loss happened before this process's first check,
e.g. Redis restarted empty while the service was down) it re-publishes the last `fallback_window_s` of rows.

Streams without any consumer group are skipped: nothing waits on them. Entries written straight to a stream by
a client (the stream intake, an operator's XADD) are not in any outbox: a producer outside SAFE re-sends them."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.outbox import Published

log = logging.getLogger("safe.recovery")

# the hook: publish these rows again, as the relay publishes (raises if Redis refused any)
Republisher = Callable[[Sequence[Published]], Awaitable[None]]

_NEWEST = text("SELECT id, published_at FROM outbox WHERE published_at IS NOT NULL ORDER BY id DESC LIMIT :n")
_OLDER = text("SELECT id, published_at FROM outbox WHERE id < :before AND published_at IS NOT NULL "
              "ORDER BY id DESC LIMIT :n")
_ROWS = text("SELECT id, event_id, stream, event_type, correlation_id, payload, published_at FROM outbox "
             "WHERE id >= :start AND published_at IS NOT NULL ORDER BY id LIMIT :n")
_LAST_OUT = text("SELECT event_id, stream, published_at FROM outbox WHERE correlation_id = :cid "
                 "ORDER BY id DESC LIMIT 1")


def _ms(entry_id: Any) -> int:
    s = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(s.split("-", 1)[0])


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _aware(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v if v.tzinfo is not None else v.replace(tzinfo=UTC)


class RedisGuard:
    """Notices that Redis lost writes and re-publishes from the outbox what the consumers may not have seen."""

    def __init__(
        self,
        *,
        service: str,
        redis: Redis,
        engine: AsyncEngine,
        streams_published: Iterable[str],
        republish: Republisher,
        prefix: str = "",
        interval_s: float = 1.0,
        margin_s: float = 5.0,
        fallback_window_s: float = 600.0,
        batch: int = 500,
    ) -> None:
        self.service = service
        self._redis = redis
        self._engine = engine
        self._republish = republish
        self._interval = interval_s
        self._margin_ms = int(margin_s * 1000)
        self._fallback = timedelta(seconds=fallback_window_s)
        self._batch = batch
        self._keys = sorted({streams.qualified(s, prefix) for s in streams_published})
        self._markers = [f"{{{k}}}:published-by:{service}" for k in self._keys]
        self._cluster = not isinstance(redis, Redis)
        self._stopping = False
        self.started = False
        self.epoch: tuple[tuple[str, str], ...] | None = None
        self.watermark_ms: int | None = None
        # what an operator (and /explain) can read
        self.checks = 0
        self.resets_detected = 0
        self.last_reset_at: datetime | None = None
        self.last_reason: str | None = None
        self.last_republished = 0
        self.republished_total = 0
        self.last_recovery_ms: float | None = None
        self.last_republished_since: datetime | None = None
        self.recovering = False

    # --- reading Redis ---------------------------------------------------------------------------

    async def _epoch(self) -> tuple[tuple[str, str], ...]:
        """(run_id, master_replid) of the primary, or of every primary of a cluster (sorted)."""
        if self._cluster:
            from redis.asyncio.cluster import RedisCluster

            replies = await self._redis.info("server", "replication", target_nodes=RedisCluster.PRIMARIES)
            infos = list(replies.values()) if "run_id" not in replies else [replies]
        else:
            infos = [await self._redis.info("server", "replication")]
        return tuple(sorted((_text(i.get("run_id")), _text(i.get("master_replid"))) for i in infos))

    async def _markers_present(self) -> int:
        if not self._markers:
            return 0
        # one key per command: a cluster client splits a multi-key EXISTS by slot anyway
        return sum([int(await self._redis.exists(m)) for m in self._markers])

    async def _set_markers(self) -> None:
        token = uuid.uuid4().hex
        for m in self._markers:
            await self._redis.set(m, token, nx=True)

    async def _oldest_unhandled_ms(self, key: str) -> int | None:
        """The ms of the oldest entry of `key` some consumer group has not acknowledged; None: no group."""
        try:
            groups = await self._redis.xinfo_groups(key)
        except ResponseError:  # no such stream: nothing in it to lose
            return None
        if not groups:
            return None
        lowest: int | None = None
        for g in groups:
            # the first entry after the group's last-delivered id; none: it has been given everything, and what it
            # has not acknowledged is pending (below): then nothing published on the stream until now waits on it
            # (an empty stream's last id is 0-0: taken as the stream's progress, it would put the watermark at
            # 1970 and make a loss re-publish the whole outbox)
            after = await self._redis.xrange(key, min=f"({_text(g['last-delivered-id'])}", count=1)
            candidate = _ms(after[0][0]) if after else int(time.time() * 1000)
            if int(g.get("pending") or 0):
                summary = await self._redis.xpending(key, _text(g["name"]))
                if summary.get("min"):
                    candidate = min(candidate, _ms(summary["min"]))
            lowest = candidate if lowest is None else min(lowest, candidate)
        return lowest

    async def _progress_ms(self) -> int:
        """Everything published before this time (Redis ms) was handled by every group."""
        lows = [low for key in self._keys if (low := await self._oldest_unhandled_ms(key)) is not None]
        return min(lows) if lows else int(time.time() * 1000)

    # --- the loop --------------------------------------------------------------------------------

    async def start(self) -> None:
        """The first look of a run of the service: remember the epoch; markers missing while this service has
        published before means Redis lost data while it was down (or this is the first start with the guard).
        Until it succeeds, `run` takes it again on each tick."""
        self._stopping = self.started = False
        self.epoch = await self._epoch()
        present = await self._markers_present()
        await self._set_markers()
        if present < len(self._markers) and await self._has_published():
            await self._recover("no marker at start (Redis empty or flushed while this service was down)", None)
        self.started = True

    async def run(self) -> None:
        while not self._stopping:
            try:
                if not self.started:
                    await self.start()
                else:
                    await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis unreachable (restarting, failing over): look again on the next tick
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # a client library turned our cancellation into its own error: stop, as asked
                    raise asyncio.CancelledError from None
                log.warning("redis guard check failed; next tick", exc_info=True)
            await asyncio.sleep(self._interval)

    def stop(self) -> None:
        self._stopping = True

    async def check_once(self) -> bool:
        """One check; True if a loss was seen (and the outbox re-published)."""
        progress = await self._progress_ms()
        epoch = await self._epoch()
        present = await self._markers_present()
        self.checks += 1
        reasons = []
        if self.epoch is not None and epoch != self.epoch:
            reasons.append("Redis restarted or failed over (run_id/replication id changed)")
        if present < len(self._markers):
            reasons.append(f"{len(self._markers) - present} of {len(self._markers)} stream markers gone (flushed)")
        if not reasons:
            self.epoch = epoch
            mark = progress - self._margin_ms
            if self.watermark_ms is None or mark > self.watermark_ms:
                self.watermark_ms = mark
            return False
        since = None if self.watermark_ms is None else datetime.fromtimestamp(self.watermark_ms / 1000, UTC)
        await self._recover("; ".join(reasons), since)
        self.epoch = epoch
        return True

    async def _recover(self, reason: str, since: datetime | None) -> None:
        started = time.perf_counter()
        self.recovering = True
        self.resets_detected += 1
        self.last_reset_at = datetime.now(UTC)
        self.last_reason = reason
        if since is None:
            since = self.last_reset_at - self._fallback
        self.last_republished_since = since
        log.warning("redis lost writes; re-publishing from the outbox",
                    extra={"reason": reason, "since": since.isoformat()})
        try:
            n = await self.republish_since(since)
            await self._set_markers()  # only once the events are back: a failure above re-detects next tick
        finally:
            self.recovering = False
        self.last_republished = n
        self.republished_total += n
        self.last_recovery_ms = (time.perf_counter() - started) * 1000
        log.warning("re-published from the outbox after a Redis loss",
                    extra={"count": n, "duration_ms": round(self.last_recovery_ms, 1), "reason": reason})

    async def _has_published(self) -> bool:
        async with self._engine.connect() as conn:
            return bool((await conn.execute(_NEWEST, {"n": 1})).first())

    async def republish_since(self, since: datetime) -> int:
        """Publish again, oldest first, every outbox row marked sent at or after `since`; returns how many."""
        start = await self._first_id_since(since)
        if start is None:
            return 0
        total = 0
        while not self._stopping:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(_ROWS, {"start": start, "n": self._batch})).all()
            if not rows:
                break
            start = rows[-1][0] + 1
            due = [Published(*r[:6]) for r in rows if (_aware(r[6]) or since) >= since]
            if due:
                await self._republish(due)
                total += len(due)
            if len(rows) < self._batch:
                break
        return total

    async def _first_id_since(self, since: datetime) -> int | None:
        """The lowest id marked sent at or after `since`, scanning back by id (the primary key) from the newest:
        rows are marked in about id order, so the scan stops at the first chunk marked wholly before it."""
        before: int | None = None
        first: int | None = None
        chunk = 1000
        async with self._engine.connect() as conn:
            while True:
                rows = (await conn.execute(_NEWEST, {"n": chunk}) if before is None else
                        await conn.execute(_OLDER, {"before": before, "n": chunk})).all()
                if not rows:
                    return first
                newer = [r[0] for r in rows if (_aware(r[1]) or since) >= since]
                if newer:
                    first = min(newer) if first is None else min(first, *newer)
                else:
                    return first
                before = rows[-1][0]

    # --- explaining ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "checks": self.checks,
            "resets_detected": self.resets_detected,
            "last_reset_at": self.last_reset_at.isoformat() if self.last_reset_at else None,
            "last_reason": self.last_reason,
            "last_republished": self.last_republished,
            "republished_total": self.republished_total,
            "last_recovery_ms": None if self.last_recovery_ms is None else round(self.last_recovery_ms, 1),
            "recovering": self.recovering,
            "watermark": (datetime.fromtimestamp(self.watermark_ms / 1000, UTC).isoformat()
                          if self.watermark_ms is not None else None),
        }

    async def explain_case(self, correlation_id: str) -> dict[str, Any]:
        """What this service's guard knows about the last event it emitted for a case, in words."""
        out = self.status()
        async with self._engine.connect() as conn:
            row = (await conn.execute(_LAST_OUT, {"cid": correlation_id})).first()
        if row is None:
            out["note"] = "this service has emitted no event for the case"
            return out
        published = _aware(row[2])
        out.update(last_event_id=row[0], last_event_stream=row[1],
                   last_event_published_at=published.isoformat() if published else None)
        if published is None:
            out["note"] = "its last event is still in the outbox, not yet published (Redis unreachable?)"
        elif self.recovering:
            out["note"] = "Redis lost writes; the outbox is being re-published right now"
        elif self.last_reset_at is not None and published < self.last_reset_at:
            covered = self.last_republished_since is not None and published >= self.last_republished_since
            out["note"] = (f"Redis lost writes at {self.last_reset_at.isoformat()} ({self.last_reason}); "
                           + ("this event was re-published then" if covered else
                              "this event was handled before the loss, not re-published"))
        else:
            out["note"] = "its last event was published and Redis has lost no write since"
        return out
