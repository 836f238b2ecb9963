"""Removing dead consumers from a consumer group, safely.

Under a Kubernetes Deployment the consumer name is the pod name, so every rollout leaves the old pods'
consumers in every group. A consumer is removed only when it has no pending entries (whatever it held has
been claimed by the live consumers, see Messaging.reclaim_once) and has been idle for far longer than the
claim time; XGROUP DELCONSUMER then loses nothing. Should a live consumer be removed after a long quiet
period, its next XREADGROUP simply creates it again."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def remove_dead_consumers(redis: Any, key: str, group: str, me: str, idle_ms: int) -> list[str]:
    """Delete the consumers of `group` on `key` other than `me` that have nothing pending and have been idle
    at least `idle_ms`. Returns the names removed."""
    removed = []
    for info in await redis.xinfo_consumers(key, group):
        name = _text(info.get("name", info.get(b"name", "")))
        pending = int(info.get("pending", info.get(b"pending", 0)))
        idle = int(info.get("idle", info.get(b"idle", 0)))
        if name == me or pending or idle < idle_ms:
            continue
        # DELCONSUMER returns the entries it dropped from the PEL: 0 here unless one was delivered to the
        # consumer in between (a consumer that came back); then it is redelivered after CLAIM_IDLE_MS anyway
        dropped = await redis.xgroup_delconsumer(key, group, name)
        removed.append(name)
        log.info("removed dead consumer", extra={"stream": key, "group": group, "consumer": name,
                                                 "idle_ms": idle, "dropped": dropped})
    return removed
