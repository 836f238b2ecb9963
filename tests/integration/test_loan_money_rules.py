"""L-6..L-10 through the loan disbursement service, on SQLite and PostgreSQL: the EL sequence of issue 20 refused at
the instalment, 30 concurrent payments that never over-pay, the facility lifecycle through the API, the envelope."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import AsyncExitStack
from decimal import Decimal

from sqlmodel import select

from safe_procurement.services.loan_disbursement.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.tables import AuditEntry
from tests.builders import loan_requested
from tests.integration.helpers import xadd
from tests.integration.test_loan_disbursement_service import decided, settings, sign

D = Decimal


async def test_the_el_sequence_is_refused_at_the_instalment_that_would_pay_on_top(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, _rt):
        await sign(client, "EL")
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("EL", "787669283")))
        (approved,), _ = await decided(redis_client, prefix, 1)
        loan_id = approved.loans[0].loan_id
        r = await client.post("/facilities/EL/pre-financing",
                              json={"amount_eur": "118150392.45", "requested_on": "2026-06-01"})
        assert r.status_code == 201
        r = await client.post(f"/loans/{loan_id}/instalments",
                              json={"amount_eur": "787669283.00", "requested_on": "2026-07-01"})
        assert r.status_code == 409 and [x["rule"] for x in r.json()["reasons"]] == ["L-9"]
        assert "905 819 675.45" in r.json()["detail"] and "787 669 283.00" in r.json()["detail"]
        el = (await client.get("/facilities/EL")).json()
        assert el["disbursed_eur"] == "118150392.45" and el["payable_eur"] == "669518890.55"
        # what is left is paid; the advance is cleared against the loan, visibly on the ledger
        r = await client.post(f"/loans/{loan_id}/instalments",
                              json={"amount_eur": "669518890.55", "requested_on": "2026-07-01"})
        assert r.status_code == 201 and r.json()["pre_financing_cleared_eur"] == "118150392.45"
        assert "cleared against this loan (L-9)" in r.json()["reason"]
        entries = (await client.get("/facilities/EL/ledger")).json()["items"]
        assert [(e["kind"], e["amount_eur"], e["pre_financing_cleared_eur"]) for e in entries] == [
            ("reservation", "787669283.00", None), ("pre_financing", "118150392.45", None),
            ("instalment", "669518890.55", "118150392.45")]
        el = (await client.get("/facilities/EL")).json()
        assert el["disbursed_eur"] == "787669283.00" == el["approved_eur"] == el["max_eur"]
        assert el["pre_financing_uncleared_eur"] == "0.00"
        assert (await client.get("/ledger/check")).json()["ok"] is True


async def test_thirty_concurrent_payments_never_pay_out_more_than_approved(database_url, prefix, redis_client):
    """15 pre-financing and 15 instalment requests of EUR 50 000 at once, over two replicas, against a loan of
    EUR 1 000 000: exactly 20 are paid, 10 refused with 409 (L-9), and the books balance."""
    async with AsyncExitStack() as stack:
        clients = []
        for i in range(2):
            app = build_app(settings(database_url, prefix, consumer=f"replica-{i}"))
            client, _rt = await stack.enter_async_context(running(app))
            clients.append(client)
        await sign(clients[0], "DK")
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("DK", "1000000")))
        (approved,), _ = await decided(redis_client, prefix, 1)
        loan_id = approved.loans[0].loan_id
        body = {"amount_eur": "50000.00", "requested_on": "2026-06-01"}
        calls = [clients[i % 2].post("/facilities/DK/pre-financing" if i % 2 else f"/loans/{loan_id}/instalments",
                                     json=body) for i in range(30)]
        answers = await asyncio.gather(*calls)
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] * 20 + [409] * 10, codes
        assert all(r.json()["reasons"][0]["rule"] == "L-9" for r in answers if r.status_code == 409)
        dk = (await clients[1].get("/facilities/DK")).json()
        assert dk["disbursed_eur"] == "1000000.00" and dk["approved_eur"] == "1000000.00"
        loan = (await clients[0].get(f"/loans/{loan_id}")).json()
        assert D(loan["instalments_paid_eur"]) + D(loan["pre_financing_cleared_eur"]) <= D("1000000.00")
        assert (await clients[0].get("/ledger/check")).json()["ok"] is True


async def test_financing_by_a_non_participant_or_above_the_contract_value_is_rejected(database_url, prefix,
                                                                                      redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, _rt):
        by_ro = loan_requested(("RO", "1000000")).model_copy(update={"participants": ["PL", "LT"]})
        too_much = loan_requested(("EL", "5000000")).model_copy(update={"contract_value_eur": D("1000000.00")})
        hu = loan_requested(("HU", "1000"))
        for ev in (by_ro, too_much, hu):
            await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        _, rejected = await decided(redis_client, prefix, 3)
        by_case = {r.case_id: r for r in rejected}
        assert [x.rule for x in by_case[by_ro.case_id].reasons] == ["L-6"]
        assert [x.rule for x in by_case[too_much.case_id].reasons] == ["L-7"]
        assert [x.rule for x in by_case[hu.case_id].reasons] == ["L-8"]
        assert by_case[hu.case_id].assumptions and "HU facility maximum" in by_case[hu.case_id].assumptions[0]
        stored = (await client.get(f"/loan-requests/{too_much.case_id}")).json()
        assert stored["status"] == "rejected" and stored["reasons"][0]["rule"] == "L-7"


async def test_a_loan_on_a_tentative_facility_says_so(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, _rt):
        ev = loan_requested(("PL", "1000000"))
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        (approved,), _ = await decided(redis_client, prefix, 1)
        assert len(approved.assumptions) == 1 and approved.assumptions[0].startswith("L-8: the PL facility maximum")
        assert (await client.get(f"/loan-requests/{ev.case_id}")).json()["assumptions"] == approved.assumptions


async def test_operators_move_a_facility_along_its_lifecycle(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        statuses = {f["member_state"]: f["status"] for f in (await client.get("/facilities")).json()["items"]}
        assert statuses["HU"] == "pending" and statuses["RO"] == "decided"
        assert set(statuses.values()) == {"pending", "decided"}  # none signed: the source says none is
        r = await client.put("/facilities/HU", json={"status": "agreement_signed", "agreement_signed_on": "2026-05-01",
                                                     "agreement_reference": "LA-HU", "reason": "too early"})
        assert r.status_code == 422 and r.json()["reasons"][0]["rule"] == "L-8"
        r = await client.put("/facilities/HU", json={"agreement_reference": "LA-HU", "reason": "no status"})
        assert r.status_code == 422 and "give status" in r.text
        r = await client.put("/facilities/HU", json={"status": "decided", "effective_on": "2026-05-20",
                                                     "status_reference": "Council ID (EU) 2026/123",
                                                     "reason": "Council implementing decision adopted"})
        assert r.status_code == 200 and r.json()["status"] == "decided"
        r = await client.put("/facilities/HU", json={"status": "agreement_signed", "reason": "signed"})
        assert r.status_code == 422 and "agreement_reference" in r.json()["detail"]
        await sign(client, "HU", on="2026-05-28")
        hu = (await client.get("/facilities/HU")).json()
        assert (hu["status"], hu["agreement_signed_on"], hu["agreement_reference"]) == (
            "agreement_signed", "2026-05-28", "SAFE-LA-HU-2026")
        history = (await client.get("/facilities/HU/status-history")).json()["items"]
        assert [(h["from_status"], h["to_status"]) for h in history] == [
            (None, "pending"), ("pending", "decided"), ("decided", "agreement_signed")]
        assert history[1]["reference"] == "Council ID (EU) 2026/123" and history[1]["effective_on"] == "2026-05-20"
        async with rt.factory() as s:
            audit = (await s.exec(select(AuditEntry).where(AuditEntry.target == "facilities/HU",
                                                           AuditEntry.action == "facility.update"))).all()
        assert [json.loads(a.details)["after"]["status"] for a in audit] == ["decided", "agreement_signed"]
        assert (await client.put("/facilities/HU", json={"status": "closed", "reason": "repaid"})).status_code == 200
        r = await client.put("/facilities/HU", json={"status": "decided", "reason": "reopen"})
        assert r.status_code == 422 and "closed is final" in r.json()["detail"]


async def test_a_facility_update_that_breaks_the_envelope_is_refused(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, _rt):
        listing = (await client.get("/facilities")).json()
        assert listing["envelope_eur"] == "150000000000.00"
        # EE's Council maximum is 317 035 171 below its tentative allocation: exactly that much room in 150 bn
        assert D(listing["maxima_total_eur"]) == D("150000000000") - D("317035171")
        r = await client.put("/facilities/EE", json={"max_eur": "2660932171.01", "reason": "typo"})
        assert r.status_code == 422 and [x["rule"] for x in r.json()["reasons"]] == ["L-10"]
        assert (await client.get("/facilities/EE")).json()["max_eur"] == "2343897000.00"
        r = await client.put("/facilities/EE", json={"max_eur": "2660932171.00", "reason": "tentative figure"})
        assert r.status_code == 200
        assert (await client.get("/facilities")).json()["maxima_total_eur"] == "150000000000.00"


async def test_a_withdrawal_keeps_a_loan_that_money_was_already_paid_against(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        await sign(client, "DK")
        ev = loan_requested(("DK", "1000"))
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        (approved,), _ = await decided(redis_client, prefix, 1)
        r = await client.post("/facilities/DK/pre-financing", json={"amount_eur": "150", "requested_on": "2026-06-01"})
        assert r.status_code == 201
        await xadd(redis_client, prefix, streams.PROCUREMENT_WITHDRAWN, contracts.ProcurementWithdrawn(
            correlation_id=ev.case_id, case_id=ev.case_id, reason=f"withdrawn {uuid.uuid4()}"))

        async def audited():
            async with rt.factory() as s:
                return (await s.exec(select(AuditEntry).where(AuditEntry.action == "case.withdrawn"))).first()
        entry = await wait_for(audited, message="the withdrawal")
        assert json.loads(entry.details)["kept"][0]["reason"].startswith("L-9")
        loan = (await client.get(f"/loans/{approved.loans[0].loan_id}")).json()
        assert loan["status"] == "active"
        assert (await client.get("/ledger/check")).json()["ok"] is True
