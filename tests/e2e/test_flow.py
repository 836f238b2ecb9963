"""End to end: the four services as real processes started by the launcher, on a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safe_procurement.services import scenarios as examples
from safe_procurement.services.testing import scenarios
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from tests.builders import proposal

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = examples.files()
assert SCENARIOS, "the example scenarios are missing from services/scenarios"


async def test_a_proposal_travels_through_four_processes_to_an_approved_loan(safe_stack):
    async with safe_stack.client() as client:
        r = await client.submit(proposal())
        assert r.status_code == 201, r.text
        case = await client.wait_for_status(r.json()["id"], timeout=60)
        assert case["status"] == "loan_approved", case
        assert case["verification"]["outcome"] == "eligible"
        assert case["verification"]["end_products"][0]["non_eligible_share"].startswith("0.26315")
        assert case["loan"]["loans"][0]["amount_eur"] == "950000.00"
        types = [t["type"] for t in await client.timeline(case["id"])]
        assert types == ["ProcurementSubmitted", "OriginVerificationCompleted", "LoanRequested", "LoanApproved"]
        loan_id = case["loan"]["loans"][0]["loan_id"]
        r = await client.http.get(client.url("loan_disbursement", f"/loans/{loan_id}"))
        assert r.status_code == 200 and r.json()["case_id"] == case["id"]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_the_example_scenarios_reach_their_expected_outcome(safe_stack, path):
    async with safe_stack.client() as client:
        result = await scenarios.run(client, scenarios.load(path), unique=True, timeout=60)
    assert result.passed, result.line()


async def test_a_proposal_added_to_the_stream_appears_under_its_reference(safe_stack):
    body = proposal()
    await safe_stack.inject(streams.SUBMIT_PROCUREMENT, json.dumps(body))
    await safe_stack.inject(streams.SUBMIT_PROCUREMENT, "{not json")
    async with safe_stack.client() as client:
        case = await wait_for(lambda: client.case_by_reference(body["reference"]), timeout=30,
                              message="case from the stream")
        case = await client.wait_for_status(case["id"], timeout=60)
        assert case["status"] == "loan_approved"
    letters = await wait_for(lambda: safe_stack.dead_letters("applications", stream=streams.SUBMIT_PROCUREMENT),
                             timeout=30, message="the malformed submission dead-lettered")
    assert any("invalid JSON" in dl["error"] for dl in letters)


async def test_germany_cannot_borrow_and_says_why(safe_stack):
    body = proposal(lead_member_state="DE", participants=["DE", "FR"],
                    financing=[{"member_state": "DE", "amount_eur": "1000000.00"}])
    async with safe_stack.client() as client:
        r = await client.submit(body)
        case = await client.wait_for_status(r.json()["id"], timeout=60)
        assert case["status"] == "loan_rejected"
        assert any(x["rule"] == "L-1" for x in case["loan"]["reasons"]), case["loan"]


async def test_the_launcher_restarts_a_killed_service_and_the_flow_goes_on(safe_stack):
    old = safe_stack.kill("origin_verification")
    async with safe_stack.client() as client:
        r = await client.submit(proposal())  # accepted while verification is down: it waits on the stream
        assert r.status_code == 201
        safe_stack.wait_restarted("origin_verification", old)
        case = await client.wait_for_status(r.json()["id"], timeout=60)
        assert case["status"] == "loan_approved"
