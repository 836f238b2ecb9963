"""Dead consumers (pods replaced by a rollout) leave the group only once nothing is pending for them."""

from __future__ import annotations

import pytest

from safe_procurement.shared.kit import wire
from safe_procurement.shared.kit.consumers import remove_dead_consumers

pytestmark = pytest.mark.integration


async def names(redis_client, key: str, group: str) -> set[str]:
    return {(c["name"].decode() if isinstance(c["name"], bytes) else c["name"])
            for c in await redis_client.xinfo_consumers(key, group)}


async def test_a_dead_consumer_is_removed_only_after_its_pending_entries_are_claimed(redis_client, prefix):
    key, group = f"{prefix}stream", "svc"
    await redis_client.xgroup_create(key, group, id="0", mkstream=True)
    entry = await redis_client.xadd(key, {wire.DATA: "{}"})
    await redis_client.xreadgroup(group, "old-pod", {key: ">"}, count=1)  # delivered, never acknowledged
    await redis_client.xgroup_createconsumer(key, group, "new-pod")  # the live consumer

    # the old pod still holds an entry: kept, however idle
    assert await remove_dead_consumers(redis_client, key, group, "new-pod", idle_ms=0) == []
    assert await names(redis_client, key, group) == {"old-pod", "new-pod"}
    # a live consumer claims it (what reclaim_once does after CLAIM_IDLE_MS): now the old pod can go
    await redis_client.xclaim(key, group, "new-pod", 0, [entry])
    # not idle long enough yet: kept
    assert await remove_dead_consumers(redis_client, key, group, "new-pod", idle_ms=3_600_000) == []
    assert await remove_dead_consumers(redis_client, key, group, "new-pod", idle_ms=0) == ["old-pod"]
    assert await names(redis_client, key, group) == {"new-pod"}
    pending = await redis_client.xpending(key, group)
    assert pending["pending"] == 1  # the claimed entry is still there, now the new pod's
