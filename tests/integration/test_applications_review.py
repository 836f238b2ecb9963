"""Review decisions and amendments in the applications service, in-process on a real Redis and database (SQLite and
PostgreSQL): who may do them, what they write (verdict, revision, timeline, audit) and what they publish."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest
from sqlmodel import select

from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.tables import AuditEntry
from tests.builders import proposal, verification_completed
from tests.integration.helpers import FAST, read_all, signed_xadd
from tests.integration.test_auth_matrix import EVENT_KEYS

TOKENS = {"operator": "op-t", "auditor": "au-t", "member-state-PL": "pl-t", "member-state-FR": "fr-t"}


def as_(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture
def app(database_url, prefix, redis_url):
    tokens = ",".join(f"{role}:{token}" for role, token in TOKENS.items())
    return build_app(Settings(database_url=database_url, stream_prefix=prefix, consumer_name="t1",
                              safe_tokens=tokens, safe_env="production", four_eyes=False, safe_event_keys=EVENT_KEYS,
                              **FAST))


async def _needs_review(client, redis_client, prefix) -> tuple[dict, str]:
    body = proposal()
    created = (await client.post("/procurements", json=body, headers=as_("operator"))).json()

    async def submitted():
        for x in await read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED):
            if x["case_id"] == created["id"]:
                return contracts.ProcurementSubmitted.model_validate(x)
        return None
    event = await wait_for(submitted, message="submitted")
    verdict = verification_completed(created["id"], event.event_id, "needs_review", checked_at=event.occurred_at,
                                     missing=["evidence for casing"])
    await signed_xadd(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED, verdict, EVENT_KEYS)

    async def in_review():
        case = (await client.get(f"/procurements/{created['id']}", headers=as_("operator"))).json()
        return case if case["status"] == "needs_review" else None
    await wait_for(in_review, message="needs_review")
    return body, created["id"]


async def test_only_an_operator_records_a_review_and_it_requests_the_loan(app, redis_client, prefix):
    async with running(app) as (client, rt):
        _, case_id = await _needs_review(client, redis_client, prefix)
        decision = {"decision": "eligible", "justification": "declarations seen on site", "evidence_refs": ["v-1"]}
        for role, code in (("auditor", 403), ("member-state-PL", 403)):
            r = await client.post(f"/procurements/{case_id}/review", json=decision, headers=as_(role))
            assert r.status_code == code, (role, r.text)
        r = await client.post(f"/procurements/{case_id}/review", json=decision, headers=as_("operator"))
        assert r.status_code == 200 and r.json()["status"] == "loan_requested"
        assert r.json()["verification"]["review"]["justification"] == "declarations seen on site"
        requests = [contracts.LoanRequested.model_validate(x)
                    for x in await wait_for(lambda: read_all(redis_client, prefix, streams.LOAN_REQUESTED))]
        assert [x.case_id for x in requests] == [case_id] and requests[0].verification_outcome == "eligible"
        assert requests[0].contract_value_eur == Decimal("1200000.00")  # L-7 gets the contract value
        async with rt.factory() as s:
            audit = (await s.exec(select(AuditEntry).where(AuditEntry.action == "case.review"))).all()
        assert [(a.actor, a.correlation_id) for a in audit] == [("operator", case_id)]


async def test_an_ineligible_review_rejects_the_case(app, redis_client, prefix):
    async with running(app) as (client, _rt):
        _, case_id = await _needs_review(client, redis_client, prefix)
        r = await client.post(f"/procurements/{case_id}/review", headers=as_("operator"),
                              json={"decision": "ineligible", "justification": "the casing is made in CN"})
        assert r.status_code == 200 and r.json()["status"] == "origin_rejected"
        assert r.json()["verification"]["outcome"] == "ineligible"


async def test_a_participating_member_state_amends_and_another_cannot_see_the_case(app, redis_client, prefix):
    async with running(app) as (client, rt):
        body, case_id = await _needs_review(client, redis_client, prefix)
        amended = copy.deepcopy(body)
        amended["contract_value_eur"] = "1100000.00"
        change = {"proposal": amended, "reason": "contract value corrected"}
        assert (await client.post(f"/procurements/{case_id}/amend", json=change,
                                  headers=as_("member-state-FR"))).status_code == 404
        assert (await client.post(f"/procurements/{case_id}/amend", json=change,
                                  headers=as_("auditor"))).status_code == 403
        leaving = {"proposal": {**amended, "participants": ["LT", "LV"], "lead_member_state": "LT"}, "reason": "x"}
        assert (await client.post(f"/procurements/{case_id}/amend", json=leaving,
                                  headers=as_("member-state-PL"))).status_code == 403
        bad = {"proposal": {**amended, "contract_value_eur": "-1"}, "reason": ""}
        r = await client.post(f"/procurements/{case_id}/amend", json=bad, headers=as_("member-state-PL"))
        assert r.status_code == 422 and {d["field"] for d in r.json()["detail"]} >= {"reason"}
        r = await client.post(f"/procurements/{case_id}/amend", json=change, headers=as_("member-state-PL"))
        assert r.status_code == 200, r.text
        assert r.json()["proposal"]["contract_value_eur"] == "1100000.00"
        again = [contracts.ReverificationRequested.model_validate(x)
                 for x in await wait_for(lambda: read_all(redis_client, prefix, streams.REVERIFICATION_REQUESTED))]
        assert again[0].proposal.contract_value_eur == contracts.Proposal.model_validate(amended).contract_value_eur
        revisions = (await client.get(f"/procurements/{case_id}/revisions", headers=as_("member-state-PL"))).json()
        assert [(x["revision"], x["changed"], x["amended_by"]) for x in revisions["items"]] == [
            (1, [], "submitted"), (2, ["contract_value_eur"], "member-state-PL")]
        assert (await client.get(f"/procurements/{case_id}/revisions", headers=as_("member-state-FR"))).status_code == 404
        async with rt.factory() as s:
            audit = (await s.exec(select(AuditEntry).where(AuditEntry.action == "case.amend"))).all()
        assert [json.loads(a.details)["revision"] for a in audit] == [2]


async def test_a_review_decision_waits_for_a_second_operator_under_four_eyes(database_url, redis_client, prefix):
    tokens = "operator:op-t,operator:op-2,auditor:au-t"
    app = build_app(Settings(database_url=database_url, stream_prefix=prefix, consumer_name="t1", safe_tokens=tokens,
                             safe_env="production", safe_event_keys=EVENT_KEYS, **FAST))  # four-eyes: on outside dev
    second = {"Authorization": "Bearer op-2"}
    async with running(app) as (client, _rt):
        _, case_id = await _needs_review(client, redis_client, prefix)
        decision = {"decision": "eligible", "justification": "declarations seen on site"}
        r = await client.post(f"/procurements/{case_id}/review", json=decision, headers=as_("operator"))
        assert r.status_code == 202 and r.json()["action"] == "review.decide", r.text
        approval_id = r.json()["approval_id"]
        case = (await client.get(f"/procurements/{case_id}", headers=as_("operator"))).json()
        assert case["status"] == "needs_review"  # nothing decided yet
        own = await client.post(f"/approvals/{approval_id}/approve", json={"reason": "ok"}, headers=as_("operator"))
        assert own.status_code == 403
        done = await client.post(f"/approvals/{approval_id}/approve", json={"reason": "file checked"}, headers=second)
        assert done.status_code == 200 and done.json()["status"] == "executed", done.text
        case = (await client.get(f"/procurements/{case_id}", headers=as_("operator"))).json()
        assert case["status"] == "loan_requested"
