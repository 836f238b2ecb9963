"""Defect 4 of issue 21: concurrent replay and discard of one dead letter. Exactly one action wins (200), every
other answers 409, one audit entry, one replayed entry on the stream; decided inside the transaction (the
conditional UPDATE), so it holds on SQLite and on PostgreSQL (SAFE_TEST_DB=postgres) alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from safe_procurement.services.testing.inprocess import running
from safe_procurement.shared.contracts import streams
from tests.builders import proposal
from tests.integration.helpers import xadd
from tests.integration.test_auth_matrix import _letter_for, build, headers


async def _letters(client: Any, redis_client: Any, prefix: str, n: int) -> list[int]:
    out = []
    for _ in range(n):
        bad = proposal(financing=[])
        bad["end_products"][0]["components"][0]["cost_eur"] = "1.001"  # invalid: dead-lettered at once
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, bad)
        out.append(await _letter_for(client, bad["reference"]))
    return out


async def _audit(client: Any, dl: int) -> list[dict[str, Any]]:
    r = await client.get("/audit", headers=headers("operator"))
    return [a for a in r.json()["items"] if a["target"] == f"dead-letter/{dl}"]


@pytest.mark.parametrize("mix", ["replay-and-discard", "ten-replays", "ten-discards"])
async def test_concurrent_actions_on_one_dead_letter_give_exactly_one_200_and_409s(mix, tmp_path, prefix,
                                                                                   redis_client):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        client.headers.pop("Authorization", None)
        (dl,) = await _letters(client, redis_client, prefix, 1)
        stream = f"{prefix}{streams.SUBMIT_PROCUREMENT}"
        before = await redis_client.xlen(stream)
        calls = {"replay-and-discard": ["replay", "discard"] * 5, "ten-replays": ["replay"] * 10,
                 "ten-discards": ["discard"] * 10}[mix]

        async def act(kind: str) -> Any:
            body = {"reason": "duplicate"} if kind == "discard" else {}
            return await client.post(f"/dead-letters/{dl}/{kind}", json=body, headers=headers("operator"))

        answers = await asyncio.gather(*(act(k) for k in calls))
        codes = sorted(r.status_code for r in answers)
        assert codes == [200] + [409] * (len(calls) - 1), [(r.status_code, r.text[:120]) for r in answers]
        winner = next(r for r in answers if r.status_code == 200).json()
        letter = (await client.get(f"/dead-letters/{dl}", headers=headers("operator"))).json()
        assert letter["status"] == winner["status"] in ("replayed", "discarded")
        assert len(await _audit(client, dl)) == 1
        # one replay at most reached the stream
        added = await redis_client.xlen(stream) - before
        assert added == (1 if winner["status"] == "replayed" else 0)
        for r in answers:
            if r.status_code == 409:
                assert r.json()["detail"] == f"dead letter is already {winner['status']}"
