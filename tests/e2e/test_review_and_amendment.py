"""End to end, on SQLite and PostgreSQL: a reviewer's decision and an amendment each carry a case to its final
status through the four processes."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from tests.builders import proposal

pytestmark = pytest.mark.e2e


async def test_a_review_decision_becomes_the_verdict_and_carries_the_case_to_its_loan(safe_stack):
    body = proposal()
    body["participants"] = [*body["participants"], "CN"]  # R-PART-5: in no SAFE group → review
    async with safe_stack.client() as client:
        r = await client.submit(body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        case = await client.wait_for_status(case_id, {"needs_review"}, timeout=60)
        assert any(f["rule"] == "R-PART-5" and f["passed"] is None for f in case["verification"]["findings"])
        url = client.url("applications", f"/procurements/{case_id}/review")
        r = await client.http.post(url, json={"decision": "maybe", "justification": ""})
        assert r.status_code == 422 and {d["field"] for d in r.json()["detail"]} >= {"decision", "justification"}
        r = await client.http.post(url, json={"decision": "eligible", "evidence_refs": ["MFA-note-2026-17"],
                                              "justification": "CN supplies no component; observer only"})
        assert r.status_code == 200, r.text
        case = await client.wait_for_status(case_id, {"loan_approved", "loan_rejected"}, timeout=60)
        assert case["status"] == "loan_approved", case
        review = case["verification"]["review"]
        assert case["verification"]["outcome"] == "eligible" and review["human"] is True
        assert review["decided_by"] == "operator" and review["machine_outcome"] == "needs_review"
        assert review["evidence_refs"] == ["MFA-note-2026-17"]
        assert (await client.http.post(url, json={"decision": "ineligible", "justification": "again"})).status_code == 409
        types = [t["type"] for t in await client.timeline(case_id)]
        assert types[-3:] == ["ReviewDecisionRecorded", "LoanRequested", "LoanApproved"]


async def test_an_amendment_is_a_new_revision_verified_again_to_its_final_status(safe_stack):
    body = proposal()
    for c in body["end_products"][0]["components"]:
        c.pop("evidence_ref", None)  # R-ORIG-5: eligible content without evidence → review
    async with safe_stack.client() as client:
        r = await client.submit(body)
        case_id = r.json()["id"]
        await client.wait_for_status(case_id, {"needs_review"}, timeout=60)
        amended = copy.deepcopy(body)
        for i, c in enumerate(amended["end_products"][0]["components"]):
            c["evidence_ref"] = f"decl-{i}"
        url = client.url("applications", f"/procurements/{case_id}/amend")
        r = await client.http.post(url, json={"proposal": {**amended, "reference": "OTHER"}, "reason": "x"})
        assert r.status_code == 409
        r = await client.http.post(url, json={"proposal": amended, "reason": "supplier declarations added"})
        assert r.status_code == 200, r.text
        case = await client.wait_for_status(case_id, {"loan_approved", "loan_rejected"}, timeout=60)
        assert case["status"] == "loan_approved", case
        assert case["proposal"]["end_products"][0]["components"][0]["evidence_ref"] == "decl-0"
        revisions = (await client.http.get(client.url("applications", f"/procurements/{case_id}/revisions"))).json()
        assert [(x["revision"], x["changed"]) for x in revisions["items"]] == [(1, []), (2, ["end_products"])]
        assert revisions["items"][0]["proposal"]["end_products"][0]["components"][0].get("evidence_ref") is None
        timeline = await client.timeline(case_id)
        amended_entry = next(t for t in timeline if t["type"] == "ProposalAmended")
        assert "revision 2" in amended_entry["summary"] and "end_products" in amended_entry["summary"]
        assert (await client.http.post(url, json={"proposal": amended, "reason": "late"})).status_code == 409


async def test_a_rejected_proposal_amended_within_the_cap_is_approved(safe_stack):
    body = proposal()
    comps = body["end_products"][0]["components"]
    total = sum(Decimal(c["cost_eur"]) for c in comps)  # a US part as large as the rest: far over 35 %
    comps.append({"name": "extra", "origin_country": "US", "cost_eur": str(total), "supplier": "s",
                  "evidence_ref": "d-x"})
    async with safe_stack.client() as client:
        r = await client.submit(body)
        case_id = r.json()["id"]
        case = await client.wait_for_status(case_id, {"origin_rejected"}, timeout=60)
        fixed = copy.deepcopy(body)
        fixed["end_products"][0]["components"].pop()
        r = await client.http.post(client.url("applications", f"/procurements/{case_id}/amend"),
                                   json={"proposal": fixed, "reason": "the US part was a quotation, not ordered"})
        assert r.status_code == 200, r.text
        case = await client.wait_for_status(case_id, {"loan_approved", "loan_rejected"}, timeout=60)
        assert case["status"] == "loan_approved", case
