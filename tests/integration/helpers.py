"""Helpers for integration tests: service settings for a test, stream I/O with a prefix."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import wire

# Short retry backoff, but a long claim idle time: a test must pass on the primary read path; only tests
# about recovery from dead consumers lower `claim_idle_ms`.
FAST = dict(retry_backoff_ms=50, retry_backoff_max_ms=200, claim_idle_ms=60_000, reclaim_interval_ms=200,
            relay_interval_ms=50, poll_interval_ms=50)


async def xadd(r: aioredis.Redis, prefix: str, stream: str, payload: BaseModel | str | bytes | dict) -> str:
    if isinstance(payload, BaseModel):
        data: Any = payload.model_dump_json()
    elif isinstance(payload, dict):
        data = json.dumps(payload)
    else:
        data = payload
    entry = await r.xadd(f"{prefix}{stream}", {wire.DATA: data})
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def signed_xadd(r: aioredis.Redis, prefix: str, stream: str, payload: BaseModel | dict, keys: str) -> str:
    """XADD an internal event signed as its producer would sign it (shared/kit/signing.py), with `keys`."""
    from safe_procurement.shared.kit import signing

    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    keyring = signing.Keyring(keys, service=signing.producer_of(stream), dev=False)
    entry = await r.xadd(f"{prefix}{stream}", {wire.DATA: data, wire.SIGNATURE: keyring.sign(stream, data)})
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def read_all(r: aioredis.Redis, prefix: str, stream: str) -> list[dict[str, Any]]:
    entries = await r.xrange(f"{prefix}{stream}")
    return [wire.decoded(fields) for _, fields in entries]


async def publish_registry_seed(r: aioredis.Redis, prefix: str) -> tuple[list[Any], list[Any], Any]:
    """The partner registry's seed on its streams, as the registry publishes it: the announcement first (a
    replica must not count itself ready before it holds every record), then every country and agreement.
    Returns (countries, agreements, announcement)."""
    from tests.unit.origin_verification.seed import seed_events

    countries, agreements, published = seed_events()
    await xadd(r, prefix, streams.REFERENCE_DATA_PUBLISHED, published)
    for c in countries:
        await xadd(r, prefix, streams.COUNTRY_STATUS_CHANGED, c)
    for a in agreements:
        await xadd(r, prefix, streams.PARTNER_AGREEMENT_RECORDED, a)
    return countries, agreements, published
