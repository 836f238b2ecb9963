"""Consumer groups: who reads which entries, and how entries left behind are taken over.

- FastStream reads new entries: one batch subscriber (XREADGROUP, `batch_size` entries) per subscription, in the
  service's consumer group, under a stable consumer name, acknowledged by the kit (`AckPolicy.MANUAL`) once the
  batch's transaction has committed;
- groups are created from the start of the stream (id 0), so nothing published before the first start is missed,
  and re-created (subscribers restarted) if Redis comes back empty (`keeper_loop`);
- on start a consumer first finishes its own pending entries (`recover_own_pending`);
- entries left pending by a dead or stuck consumer are taken over with XAUTOCLAIM after `claim_idle_ms`
  (`reclaim_once`); one delivered far more often than the retry cap is dead-lettered, since it kills whichever
  consumer takes it.

The kit reads pending entries itself (XREADGROUP from 0, XAUTOCLAIM) rather than through FastStream's
`StreamSub(claim_min_idle_time=…)`: that subscriber reads only claimed entries, so it would be a second subscriber
per stream, and the over-delivered check needs the delivery counts before the batch is handled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from redis.exceptions import ResponseError

from safe_procurement.shared.kit import wire
from safe_procurement.shared.kit.consumers import remove_dead_consumers
from safe_procurement.shared.kit.db import transaction
from safe_procurement.shared.kit.dead_letters import dead_letter
from safe_procurement.shared.kit.subscriptions import Subscription

if TYPE_CHECKING:
    from safe_procurement.shared.kit.messaging import Messaging

log = logging.getLogger("safe.messaging")


def attach(m: Messaging, broker: RedisBroker) -> None:
    """Declare one FastStream batch subscriber per subscription (consumer group, stable consumer)."""
    for sub in m.subscriptions.values():
        subscriber = broker.subscriber(
            stream=StreamSub(m.key(sub.stream), group=m.group, consumer=m.consumer, batch=True,
                             max_records=m.batch_size, polling_interval=m.poll_interval_ms),
            ack_policy=AckPolicy.MANUAL,
            parser=wire.parse_batch,
            decoder=wire.decode_batch,
            title=f"{sub.stream}:{sub.handler.__name__}",
            description=sub.description,
        )
        subscriber(_consumer_of(m, broker, sub))
        sub.subscriber = subscriber


def _consumer_of(m: Messaging, broker: RedisBroker, sub: Subscription[Any]) -> Callable[[], Awaitable[None]]:
    context = broker.context

    async def consume() -> None:
        # The message comes from FastStream's context, not as an injected argument: FastDepends resolves a
        # message argument with a synchronous call on a worker thread (anyio.to_thread), a thread hop per
        # batch that `make bench` showed in every consumer's profile.
        entries = await context.get_local("message").decode()
        await m.process(sub, entries)

    consume.__name__ = sub.handler.__name__
    return consume


async def ensure_groups(m: Messaging) -> None:
    for sub in m.subscriptions.values():
        try:
            await m.redis.xgroup_create(m.key(sub.stream), m.group, id="0", mkstream=True)
            log.info("consumer group created", extra={"stream": sub.stream, "group": m.group})
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
    m.groups_ready = True


async def recover_own_pending(m: Messaging) -> None:
    """After a restart, this consumer's unacknowledged entries are processed first."""
    for sub in list(m.subscriptions.values()):
        last = "0"
        while not m.stopping:
            try:
                resp = await m.redis.xreadgroup(m.group, m.consumer, {m.key(sub.stream): last}, count=m.batch_size)
            except ResponseError:
                break
            if not resp or not resp[0][1]:
                break
            batch = resp[0][1]
            last = wire.entry_id(batch[-1][0])
            gone = [wire.entry_id(mid) for mid, data in batch if not data]
            if gone:  # deleted from the stream (trimmed) while pending
                await m.ack(sub, gone)
            await m.process(sub, [wire.Entry(wire.entry_id(mid), data) for mid, data in batch if data])


async def reclaim_once(m: Messaging, sub: Subscription[Any]) -> int:
    """Take over entries idle longer than `claim_idle_ms` in any consumer of the group."""
    start = "0-0"
    total = 0
    while not m.stopping:
        resp = await m.redis.xautoclaim(m.key(sub.stream), m.group, m.consumer, m.claim_idle_ms, start_id=start,
                                        count=m.batch_size)
        next_id, claimed = resp[0], resp[1]
        deleted = list(resp[2]) if len(resp) > 2 else []
        if deleted:
            await m.ack(sub, [wire.entry_id(d) for d in deleted])
        entries = [wire.Entry(wire.entry_id(mid), data) for mid, data in claimed if data]
        if entries:
            total += len(entries)
            log.warning("reclaimed idle entries", extra={"stream": sub.stream, "count": len(entries)})
            over = await _dead_letter_overdelivered(m, sub, entries)
            await m.process(sub, [e for e in entries if e.entry_id not in over])
        if wire.entry_id(next_id) == "0-0":
            break
        start = wire.entry_id(next_id)
    return total


async def _dead_letter_overdelivered(m: Messaging, sub: Subscription[Any],
                                     entries: list[wire.Entry]) -> set[str]:
    """An entry delivered far more often than the cap never completes (it kills its consumer): dead-lettered and
    acknowledged; the ids of those are returned."""
    limit = m.max_attempts_of(sub) * 2 + 2
    pending = await m.redis.xpending_range(m.key(sub.stream), m.group, min=entries[0].entry_id,
                                           max=entries[-1].entry_id, count=len(entries) * 4)
    counts = {wire.entry_id(p["message_id"]): int(p["times_delivered"]) for p in pending}
    over = [e for e in entries if counts.get(e.entry_id, 0) > limit]
    if not over:
        return set()
    async with transaction(m.factory) as session:
        for e in over:
            await dead_letter(session, sub, m.group, e,
                              f"delivered {counts[e.entry_id]} times without completing (consumer crashed?)",
                              "redelivery", attempts=counts[e.entry_id])
    await m.ack(sub, [e.entry_id for e in over])
    return {e.entry_id for e in over}


async def reclaim_loop(m: Messaging) -> None:
    """Every `reclaim_interval_ms`: take over idle entries; about once a minute, remove consumers that are gone
    (replaced pods) once nothing is pending for them."""
    rounds = 0
    sweep_every = max(1, 60_000 // max(m.reclaim_interval_ms, 1))
    while not m.stopping:
        await asyncio.sleep(m.reclaim_interval_ms / 1000)
        rounds += 1
        for sub in list(m.subscriptions.values()):
            try:
                await reclaim_once(m, sub)
                if rounds % sweep_every == 0:
                    await remove_dead_consumers(m.redis, m.key(sub.stream), m.group, m.consumer,
                                                idle_ms=max(20 * m.claim_idle_ms, 600_000))
            except asyncio.CancelledError:
                raise
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    log.exception("reclaim failed", extra={"stream": sub.stream})
            except Exception:
                log.exception("reclaim failed", extra={"stream": sub.stream})


async def keeper_loop(m: Messaging) -> None:
    """Re-create groups and restart subscribers if Redis lost them (flush, failover to an empty replica)."""
    while not m.stopping:
        await asyncio.sleep(1.0)
        try:
            subs = list(m.subscriptions.values())
            stopped = [s for s in subs if s.subscriber is not None and not s.subscriber.running]
            keys = [m.key(sub.stream) for sub in subs]
            # one round trip for all streams: EXISTS counts the keys that exist
            missing = bool(keys) and await m.redis.exists(*keys) < len(keys)
            if missing or stopped:
                await ensure_groups(m)
            for sub in stopped:
                if m.stopping:
                    break
                log.warning("restarting subscriber after its group was lost", extra={"stream": sub.stream})
                await sub.subscriber.start()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("group keeper round failed")


async def stream_health(m: Messaging) -> dict[str, dict[str, float]]:
    """Pending count, lag and oldest pending age per subscribed stream (for /metrics and /explain)."""
    now_ms = time.time() * 1000
    out: dict[str, dict[str, float]] = {}
    for sub in m.subscriptions.values():
        key = m.key(sub.stream)
        info = {"pending": 0.0, "lag": 0.0, "oldest_pending_age_seconds": 0.0, "length": 0.0}
        try:
            info["length"] = float(await m.redis.xlen(key))
            for g in await m.redis.xinfo_groups(key):
                if _text(g["name"]) == m.group:
                    info["pending"] = float(g.get("pending") or 0)
                    info["lag"] = float(g.get("lag") or 0)
            if info["pending"]:
                oldest = (await m.redis.xpending(key, m.group)).get("min")
                if oldest:
                    ms = int(wire.entry_id(oldest).split("-")[0])
                    info["oldest_pending_age_seconds"] = max(0.0, (now_ms - ms) / 1000)
        except ResponseError:
            pass
        out[sub.stream] = info
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
