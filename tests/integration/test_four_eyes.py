"""Four-eyes approval of money and reference-data changes: a request answers 202 and waits; only a second
operator (another token) can approve it, and then it is carried out exactly once; expired or rejected requests
do nothing; every step is in the audit chain."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from safe_procurement.services.loan_disbursement.config import Settings as LoanSettings
from safe_procurement.services.loan_disbursement.main import build_app as build_loans
from safe_procurement.services.partner_registry.config import Settings as RegistrySettings
from safe_procurement.services.partner_registry.main import build_app as build_registry
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import approvals, wire
from safe_procurement.shared.kit.tables import utcnow
from tests import dbs
from tests.integration.helpers import FAST, xadd

TOKENS = "operator:op-a,operator:op-b,operator:op-c,auditor:aud-1"
A = {"Authorization": "Bearer op-a"}
B = {"Authorization": "Bearer op-b"}
C = {"Authorization": "Bearer op-c"}
AUDITOR = {"Authorization": "Bearer aud-1"}
PAY = {"amount_eur": "1000.00", "requested_on": "2026-06-01"}


def loans(tmp_path: Any, prefix: str, **changes: Any) -> Any:
    return build_loans(LoanSettings(database_url=dbs.url(tmp_path, "loans"), stream_prefix=prefix, consumer_name="t1",
                                    safe_tokens=TOKENS, **{**FAST, "four_eyes": True, **changes}))


def registry(tmp_path: Any, prefix: str, **changes: Any) -> Any:
    return build_registry(RegistrySettings(database_url=dbs.url(tmp_path, "registry"), stream_prefix=prefix,
                                           consumer_name="t1", safe_tokens=TOKENS, **{**FAST, "four_eyes": True, **changes}))


async def pre_financing_entries(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/facilities/DK/ledger", headers=AUDITOR)
    assert r.status_code == 200
    return [e for e in r.json()["items"] if e["kind"] == "pre_financing"]


async def sign_dk(client: httpx.AsyncClient) -> None:
    """L-8: payments only under a signed agreement; the signature itself is a facility change, so it takes four eyes."""
    r = await client.put("/facilities/DK", headers=A, json={"status": "agreement_signed", "agreement_signed_on": "2026-05-15",
                                                             "agreement_reference": "SAFE-LA-DK-2026", "reason": "signed"})
    if r.status_code == 202:
        r = await approve(client, r.json()["approval_id"], B)
    assert r.status_code == 200, r.text


async def dk_ready_to_pay(client: httpx.AsyncClient, redis_client: Any, prefix: str) -> None:
    """DK signed and a loan approved on it (L-9: pre-financing is an advance on loans approved)."""
    from tests.builders import loan_requested
    from tests.integration.test_loan_disbursement_service import decided

    await sign_dk(client)
    await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("DK", "5000000")))
    await decided(redis_client, prefix, 1)


async def approve(client: httpx.AsyncClient, approval_id: str, who: dict[str, str], reason: str = "checked the file"):
    return await client.post(f"/approvals/{approval_id}/approve", json={"reason": reason}, headers=who)


async def test_a_payment_waits_for_a_second_operator_and_the_maker_cannot_approve_it(tmp_path, prefix, redis_url, redis_client):
    async with running(loans(tmp_path, prefix)) as (client, _rt):
        await dk_ready_to_pay(client, redis_client, prefix)
        r = await client.post("/facilities/DK/pre-financing", json={**PAY, "note": "first tranche"}, headers=A)
        assert r.status_code == 202, r.text
        approval_id = r.json()["approval_id"]
        assert r.headers["location"] == f"/approvals/{approval_id}"
        assert await pre_financing_entries(client) == []  # nothing paid yet

        pending = (await client.get("/approvals", params={"status": "pending"}, headers=AUDITOR)).json()["items"]
        assert [(p["id"], p["action"], p["amount_eur"]) for p in pending] == [(approval_id, "pre_financing.pay", "1000.00")]
        assert pending[0]["body"]["note"] == "first tranche"

        own = await approve(client, approval_id, A)
        assert own.status_code == 403
        assert (await approve(client, approval_id, AUDITOR)).status_code == 403  # auditors read, never decide
        assert (await client.post(f"/approvals/{approval_id}/approve", json={"reason": ""}, headers=B)).status_code == 422

        done = await approve(client, approval_id, B, "matches the Council decision")
        assert done.status_code == 200, done.text
        body = done.json()
        assert (body["status"], body["result_status"], body["result"]["amount_eur"]) == ("executed", 201, "1000.00")
        assert body["checker_key"] != body["maker_key"] and body["decision_reason"] == "matches the Council decision"
        paid = await pre_financing_entries(client)
        assert [e["amount_eur"] for e in paid] == ["1000.00"]
        assert (await approve(client, approval_id, C)).status_code == 409  # decided once

        trail = (await client.get("/audit", params={"target": f"approvals/{approval_id}"}, headers=AUDITOR)).json()["items"]
        assert [t["action"] for t in reversed(trail)] == ["approval.request", "approval.approve", "approval.execute"]
        assert trail[-1]["details"]["actor_key"] != trail[-2]["details"]["actor_key"]
        assert (await client.get("/audit/verify", headers=AUDITOR)).json()["ok"] is True


async def test_two_operators_approving_at_once_pay_exactly_once(tmp_path, prefix, redis_url, redis_client):
    async with running(loans(tmp_path, prefix)) as (client, _rt):
        await dk_ready_to_pay(client, redis_client, prefix)
        approval_id = (await client.post("/facilities/DK/pre-financing", json=PAY, headers=A)).json()["approval_id"]
        answers = await asyncio.gather(approve(client, approval_id, B), approve(client, approval_id, C))
        assert sorted(a.status_code for a in answers) == [200, 409]
        assert len(await pre_financing_entries(client)) == 1
        executed = (await client.get("/audit", params={"action": "approval.execute"}, headers=AUDITOR)).json()["items"]
        assert len([e for e in executed if "pre-financing" in json.dumps(e)]) == 1  # (the other: DK's signature)


async def test_an_expired_or_rejected_request_does_nothing(tmp_path, prefix, redis_url):
    async with running(loans(tmp_path, prefix, four_eyes_ttl_s=60)) as (client, rt):
        late = (await client.post("/facilities/DK/pre-financing", json=PAY, headers=A)).json()["approval_id"]
        rejected = (await client.post("/facilities/DK/pre-financing", json=PAY, headers=A)).json()["approval_id"]
        r = await client.post(f"/approvals/{rejected}/reject", json={"reason": "no Council decision yet"}, headers=B)
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        assert (await approve(client, rejected, C)).status_code == 409

        rt.clock = lambda: utcnow() + timedelta(seconds=61)  # the injected clock: a minute later
        assert [p["id"] for p in (await client.get("/approvals", params={"status": "expired"}, headers=AUDITOR)).json()["items"]] == [late]
        r = await approve(client, late, B)
        assert r.status_code == 409 and "expired" in r.json()["detail"]
        assert (await client.get(f"/approvals/{late}", headers=AUDITOR)).json()["status"] == "expired"
        assert await pre_financing_entries(client) == []
        actions = {t["action"] for t in (await client.get("/audit", params={"action_prefix": "approval."},
                                                          headers=AUDITOR)).json()["items"]}
        assert actions == {"approval.request", "approval.reject", "approval.expire"}


async def test_amounts_under_the_threshold_need_one_person_and_invalid_bodies_answer_422_at_once(tmp_path, prefix, redis_url, redis_client):
    async with running(loans(tmp_path, prefix, four_eyes_thresholds="pre_financing.pay=5000.00")) as (client, _rt):
        await dk_ready_to_pay(client, redis_client, prefix)
        r = await client.post("/facilities/DK/pre-financing", json={**PAY, "amount_eur": "4999.99"}, headers=A)
        assert r.status_code == 201
        r = await client.post("/facilities/DK/pre-financing", json={**PAY, "amount_eur": "5000.00"}, headers=A)
        assert r.status_code == 202
        r = await client.post("/facilities/DK/pre-financing", json={**PAY, "amount_eur": "1.001"}, headers=A)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "amount_eur"
        pending = (await client.get("/approvals", headers=AUDITOR)).json()["items"]
        assert [p["action"] for p in pending if p["action"] == "pre_financing.pay"] == ["pre_financing.pay"]


@pytest.mark.parametrize("method,path,body,action,check", [
    ("put", "/facilities/DK", {"suspended": True, "reason": "progress report late"}, "facility.update",
     ("/facilities/DK", lambda f: f["suspended"] is True)),
    ("put", "/facilities/DK/plan", {"lines": [{"category": "artillery", "amount_eur": "1000.00"}],
                                    "supports_ukraine": True, "reason": "amended plan"}, "plan.amend",
     ("/facilities/DK/plan", lambda p: [x["category"] for x in p["lines"]] == ["artillery"])),
])
async def test_facility_and_plan_changes_wait_for_a_second_operator(tmp_path, prefix, redis_url, method, path, body,
                                                                    action, check):
    async with running(loans(tmp_path, prefix)) as (client, _rt):
        before = (await client.get(check[0], headers=AUDITOR)).json()
        r = await client.request(method.upper(), path, json=body, headers=A)
        assert r.status_code == 202 and r.json()["action"] == action
        assert (await client.get(check[0], headers=AUDITOR)).json() == before
        done = await approve(client, r.json()["approval_id"], B)
        assert done.json()["status"] == "executed", done.text
        assert check[1]((await client.get(check[0], headers=AUDITOR)).json())


async def test_instalments_wait_for_a_second_operator(tmp_path, prefix, redis_url, redis_client):
    from tests.builders import loan_requested
    from tests.integration.test_loan_disbursement_service import decided

    async with running(loans(tmp_path, prefix)) as (client, _rt):
        await sign_dk(client)
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("DK", "5000000")))
        (approved,), _ = await decided(redis_client, prefix, 1)
        loan_id = approved.loans[0].loan_id
        r = await client.post(f"/loans/{loan_id}/instalments", json={"amount_eur": "4000000.00",
                                                                      "requested_on": "2030-12-31"}, headers=A)
        assert r.status_code == 202 and r.json()["action"] == "instalment.pay"
        assert (await client.get(f"/loans/{loan_id}", headers=AUDITOR)).json()["instalments_paid_eur"] == "0.00"
        assert (await approve(client, r.json()["approval_id"], A)).status_code == 403
        assert (await approve(client, r.json()["approval_id"], B)).json()["result_status"] == 201
        assert (await client.get(f"/loans/{loan_id}", headers=AUDITOR)).json()["instalments_paid_eur"] == "4000000.00"


async def test_registry_agreement_changes_wait_for_a_second_operator(tmp_path, prefix, redis_url):
    agreement = {"country": "NO", "kind": "safe_participation", "effective_from": "2026-01-01",
                 "content_counts_as_eligible": True, "max_content_share": "0.50", "entities_eligible": True,
                 "source": "test agreement"}
    async with running(registry(tmp_path, prefix)) as (client, _rt):
        before = (await client.get("/agreements", params={"country": "NO"}, headers=AUDITOR)).json()
        r = await client.post("/agreements", json=agreement, headers=A)
        assert r.status_code == 202 and r.json()["action"] == "agreement.record"
        assert (await client.get("/agreements", params={"country": "NO"}, headers=AUDITOR)).json() == before
        assert (await approve(client, r.json()["approval_id"], A)).status_code == 403
        done = (await approve(client, r.json()["approval_id"], B)).json()
        assert done["result_status"] == 201, done  # the registry's answer is kept on the approval
        created = done["result"]["id"]
        after = (await client.get("/agreements", params={"country": "NO"}, headers=AUDITOR)).json()
        assert created in {a["id"] for a in after}
        fix = {**agreement, "max_content_share": "0.40", "reason": "the signed text says 40 %"}
        r = await client.post(f"/agreements/{created}/corrections", json=fix, headers=B)
        assert r.status_code == 202 and r.json()["action"] == "agreement.correct"
        done = (await approve(client, r.json()["approval_id"], C)).json()
        assert done["result_status"] == 201 and done["result"]["max_content_share"] == "0.40"
        bad = await client.post("/agreements", json={**agreement, "max_content_share": "2"}, headers=A)
        assert bad.status_code == 422  # refused at once, not queued


async def test_a_dead_letter_replay_with_an_edited_payload_waits_but_a_plain_replay_does_not(tmp_path, prefix,
                                                                                          redis_client, redis_url):
    async with running(loans(tmp_path, prefix)) as (client, _rt):
        for i in range(2):
            await xadd(redis_client, prefix, streams.LOAN_REQUESTED, f"not json {i}")

        async def letters() -> list[int] | None:
            items = (await client.get("/dead-letters", params={"status": "open"}, headers=AUDITOR)).json()["items"]
            return [d["id"] for d in items] if len(items) >= 2 else None

        first, second = await wait_for(letters, message="two dead letters")
        assert (await client.post(f"/dead-letters/{first}/replay", json={"reason": "retry"}, headers=A)).status_code == 200
        r = await client.post(f"/dead-letters/{second}/replay", json={"payload": {"fixed": True}, "reason": "fixed"},
                              headers=A)
        assert r.status_code == 202 and r.json()["action"] == "dead_letter.replay"
        assert (await client.get(f"/dead-letters/{second}", headers=AUDITOR)).json()["status"] == "open"
        done = (await approve(client, r.json()["approval_id"], B)).json()
        assert done["status"] == "executed" and done["result"]["status"] == "replayed"
        replayed = await redis_client.xrange(f"{prefix}{streams.LOAN_REQUESTED}", min=done["result"]["replay_entry_id"],
                                             max=done["result"]["replay_entry_id"])
        assert wire.decoded(replayed[0][1]) == {"fixed": True}


def test_four_eyes_is_on_outside_dev_and_off_in_dev_unless_set() -> None:
    assert approvals.enabled(LoanSettings(safe_env="production", safe_tokens="operator:x")) is True
    assert approvals.enabled(LoanSettings(safe_env="dev")) is False
    assert approvals.enabled(LoanSettings(safe_env="dev", four_eyes=True)) is True
    assert approvals.enabled(LoanSettings(safe_env="production", four_eyes=False)) is False
    s = LoanSettings(four_eyes=True, four_eyes_thresholds="instalment.pay=100000.00, pre_financing.pay=0")
    assert approvals.needs_second_person(s, "instalment.pay", Decimal("99999.99")) is False
    assert approvals.needs_second_person(s, "instalment.pay", Decimal("100000.00")) is True
    assert approvals.needs_second_person(s, "facility.update", None) is True
    with pytest.raises(ValueError):
        approvals.thresholds(LoanSettings(four_eyes_thresholds="instalment.pay"))
