"""Scale-out on PostgreSQL: two replicas of every service on one Redis share the work through the
consumer groups — no case lost, none doubled, the ledger matches the approved loans."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from safe_procurement.services.launcher import SERVICES
from tests import builders, dbs

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg_databases(pg_admin_url):
    with dbs.pg_databases(SERVICES, label="repl") as urls:
        yield urls


def kind_of(i: int) -> dict:
    """One of three outcomes in turn: approved, ineligible, rejected."""
    body = builders.proposal(tag="REPL")
    if i % 3 == 1:  # ineligible: too much non-eligible content
        body["end_products"][0]["components"][2]["cost_eur"] = "900000.00"
    if i % 3 == 2:  # a Member State without a facility
        body.update(lead_member_state="DE", participants=["DE", "FR"],
                    financing=[{"member_state": "DE", "amount_eur": "1000.00"}])
    return body


async def test_two_replicas_of_every_service_on_postgresql_lose_and_double_nothing(safe_stack_factory, pg_databases):
    stack = safe_stack_factory(replicas={s: 2 for s in SERVICES}, database_urls=pg_databases)
    async with stack.client() as client:
        before = (await client.facility("PL")).json()
        posted = await asyncio.gather(*(client.submit(kind_of(i)) for i in range(60)))
        assert all(r.status_code in (200, 201) for r in posted), [r.text for r in posted if r.status_code >= 300]
        cases = await asyncio.gather(*(client.wait_for_status(r.json()["id"], timeout=90) for r in posted))
        by_status: dict[str, int] = {}
        for case in cases:
            by_status[case["status"]] = by_status.get(case["status"], 0) + 1
            timeline = [t["type"] for t in await client.timeline(case["id"])]
            assert timeline.count("OriginVerificationCompleted") == 1, timeline
            assert timeline.count("LoanApproved") + timeline.count("LoanRejected") <= 1, timeline
        assert by_status == {"loan_approved": 20, "origin_rejected": 20, "loan_rejected": 20}
        after = (await client.facility("PL")).json()
        approved = sum(Decimal(c["loan"]["loans"][0]["amount_eur"]) for c in cases if c["status"] == "loan_approved")
        assert Decimal(after["approved_eur"]) - Decimal(before["approved_eur"]) == approved
        check = await client.http.get(client.url("loan_disbursement", "/ledger/check"))
        assert check.status_code == 200
        for service in SERVICES:
            assert await client.dead_letters(service, status="open") == [], service
