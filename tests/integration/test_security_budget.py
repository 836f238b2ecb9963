"""Request budgets (issue 21, "rate limits or request budgets where a service would otherwise fall over"): the
reconciliation runs at most two at a time per process; a third at that moment answers 429 with Retry-After at
once, instead of holding yet another connection and the facilities' share locks."""

from __future__ import annotations

import asyncio
from typing import Any

from safe_procurement.services.loan_disbursement.adapters import ledger
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from tests.integration.test_auth_matrix import build, headers


async def test_a_third_concurrent_ledger_check_answers_429_and_the_budget_frees_again(tmp_path, prefix, monkeypatch):
    app = build("loan_disbursement", tmp_path, prefix)
    real = ledger.reconcile
    inside = 0
    release = asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:  # the real reconciliation, held open until released
        nonlocal inside
        inside += 1
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(ledger, "reconcile", held)
    async with running(app) as (client, _rt):
        client.headers.pop("Authorization", None)
        first = [asyncio.create_task(client.get("/ledger/check", headers=headers("auditor"))) for _ in range(2)]
        async def both_inside() -> bool:
            return inside == 2

        await wait_for(both_inside, message="two reconciliations running")
        third = await client.get("/ledger/check", headers=headers("auditor"))
        assert third.status_code == 429 and third.headers["retry-after"] == "1", third.text
        release.set()
        assert [(await t).status_code for t in first] == [200, 200]
        again = await client.get("/ledger/check", headers=headers("auditor"))
        assert again.status_code == 200 and again.json()["ok"] is True
