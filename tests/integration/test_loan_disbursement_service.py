"""The loan disbursement service in-process on a real Redis and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, text
from sqlmodel import select

from safe_procurement.services.loan_disbursement import reconcile as reconcile_cli
from safe_procurement.services.loan_disbursement.adapters.tables import (
    FacilityRow,
    LedgerEntry,
    LoanRow,
    PlanLineRow,
)
from safe_procurement.services.loan_disbursement.config import Settings
from safe_procurement.services.loan_disbursement.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import wire
from safe_procurement.shared.kit.tables import AuditEntry, DeadLetter
from tests.builders import loan_requested
from tests.integration.helpers import FAST, read_all, xadd

D = Decimal
DK_MAX = D("46796822.00")


def settings(database_url: str, prefix: str, consumer: str = "t1", **changes) -> Settings:
    return Settings(database_url=database_url, stream_prefix=prefix, consumer_name=consumer, **{**FAST, **changes})


async def decisions(redis_client, prefix) -> tuple[list[contracts.LoanApproved], list[contracts.LoanRejected]]:
    approved = [contracts.LoanApproved.model_validate(x) for x in await read_all(redis_client, prefix, streams.LOAN_APPROVED)]
    rejected = [contracts.LoanRejected.model_validate(x) for x in await read_all(redis_client, prefix, streams.LOAN_REJECTED)]
    return approved, rejected


async def decided(redis_client, prefix, n: int):
    async def probe():
        a, r = await decisions(redis_client, prefix)
        return (a, r) if len(a) + len(r) >= n else None
    return await wait_for(probe, timeout=60, message=f"{n} loan decisions")


async def sign(client, ms: str, on: str = "2026-05-15") -> None:
    """Record the facility's loan agreement (L-8: payments only under a signed agreement)."""
    r = await client.put(f"/facilities/{ms}", json={"status": "agreement_signed", "agreement_signed_on": on,
                                                    "agreement_reference": f"SAFE-LA-{ms}-2026", "reason": "signed"})
    assert r.status_code == 200, r.text


async def ledger_rows(rt, **where) -> list[LedgerEntry]:
    async with rt.factory() as s:
        q = select(LedgerEntry)
        for k, v in where.items():
            q = q.where(getattr(LedgerEntry, k) == v)
        return list((await s.exec(q.order_by(LedgerEntry.id))).all())


# --- facilities ------------------------------------------------------------------------------------------


async def test_facilities_are_seeded_once_and_a_member_state_without_one_is_404(database_url, prefix, redis_client):
    app = build_app(settings(database_url, prefix))
    async with running(app) as (client, rt):
        r = await client.get("/facilities")
        assert r.status_code == 200 and len(r.json()["items"]) == 19
        dk = (await client.get("/facilities/DK")).json()
        assert {k: dk[k] for k in ("member_state", "max_eur", "approved_eur", "disbursed_eur", "available_eur",
                                   "pre_financing_eur", "suspended", "source")} == {
            "member_state": "DK", "max_eur": "46796822.00", "approved_eur": "0.00", "disbursed_eur": "0.00",
            "available_eur": "46796822.00", "pre_financing_eur": "7019523.30", "suspended": False,
            "source": "Council implementing decision (SAFE Art. 8)"}
        ee = (await client.get("/facilities/EE")).json()
        assert ee["max_eur"] == "2343897000.00" and ee["confidence"] == "official"
        assert (await client.get("/facilities/GR")).json()["member_state"] == "EL"
        assert (await client.get("/facilities/PL")).json()["pre_financing_eur"] is None
        assert (await client.get("/facilities/DE")).status_code == 404
        r = await client.put("/facilities/DK", json={"suspended": True, "reason": "progress report late"})
        assert r.status_code == 200 and r.json()["suspended"] is True
        plan = (await client.get("/facilities/DK/plan")).json()
        assert len(plan["lines"]) == 14 and plan["uncovered"] == []
        assert all(line["amount_eur"] == "46796822.00" for line in plan["lines"])
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        # second start: nothing re-seeded, the operator's change kept
        assert (await client.get("/facilities/DK")).json()["suspended"] is True
        async with rt.factory() as s:
            assert (await s.exec(select(func.count()).select_from(FacilityRow))).one() == 19
            assert (await s.exec(select(func.count()).select_from(PlanLineRow))).one() == 19 * 14
            seeds = (await s.exec(select(func.count()).select_from(AuditEntry)
                                  .where(AuditEntry.action == "facility.seed"))).one()
            assert seeds == 19


async def test_facility_updates_are_checked_against_15_percent_and_the_approved_total(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        r = await client.put("/facilities/DK", json={"pre_financing_eur": "7019523.31", "reason": "typo"})
        assert r.status_code == 422 and r.json()["reasons"][0]["rule"] == "L-3"
        r = await client.put("/facilities/DK", json={"pre_financing_eur": "7019523.30", "reason": "Council"})
        assert r.status_code == 200
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("DK", "5000000")))
        await decided(redis_client, prefix, 1)
        r = await client.put("/facilities/DK", json={"max_eur": "4999999.99", "reason": "cut"})
        assert r.status_code == 422 and r.json()["reasons"][0]["rule"] == "L-2"
        r = await client.put("/facilities/DK", json={"max_eur": "5000000", "pre_financing_eur": None,
                                                     "reason": "Council amendment"})
        assert r.status_code == 200 and r.json()["max_eur"] == "5000000.00" and r.json()["available_eur"] == "0.00"
        assert r.json()["pre_financing_cap_eur"] == "750000.00"
        r = await client.put("/facilities/DK", json={"max_eur": 5000000.005, "reason": "a fraction of a cent"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "max_eur"
        r = await client.put("/facilities/DK", json={"reason": "nothing"})
        assert r.status_code == 422
        async with rt.factory() as s:
            actions = (await s.exec(select(AuditEntry.action).where(AuditEntry.target == "facilities/DK"))).all()
        assert actions.count("facility.update") == 2 and actions.count("facility.update.refused") == 2


# --- decisions ---------------------------------------------------------------------------------------------


async def test_a_request_within_the_facility_is_approved_reserved_and_answered(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        ev = loan_requested(("DK", "46796822.00"), ("EE", "1000.50"))
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        (approved,), rejected = await decided(redis_client, prefix, 1)
        assert rejected == []
        assert approved.correlation_id == ev.case_id and approved.causation_id == ev.event_id
        assert {(x.member_state, x.amount_eur) for x in approved.loans} == {("DK", DK_MAX), ("EE", D("1000.50"))}
        dk = (await client.get("/facilities/DK")).json()
        assert dk["approved_eur"] == "46796822.00" and dk["available_eur"] == "0.00"
        loans = (await client.get("/loans", params={"case_id": ev.case_id})).json()["items"]
        assert len(loans) == 2 and all(x["status"] == "active" for x in loans)
        decision = (await client.get(f"/loan-requests/{ev.case_id}")).json()
        assert decision["status"] == "approved" and decision["reasons"] == []
        assert (await client.get("/ledger/check")).json()["ok"] is True


async def test_a_rejection_reserves_nothing_and_carries_every_reason(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        await client.put("/facilities/DK/plan", json={
            "lines": [{"category": "artillery", "amount_eur": "1000000"}], "supports_ukraine": True,
            "reason": "plan narrowed to artillery"})
        ev = loan_requested(("EE", "1000.00"), ("DE", "5.00"), ("DK", "10.00"), categories=("cyber",))
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        approved, (rejected,) = await decided(redis_client, prefix, 1)
        assert approved == [] and rejected.causation_id == ev.event_id and rejected.correlation_id == ev.case_id
        assert {(r.member_state, r.rule) for r in rejected.reasons} == {("DE", "L-1"), ("DK", "PLAN")}
        assert await ledger_rows(rt) == []
        assert (await client.get(f"/loan-requests/{ev.case_id}")).json()["status"] == "rejected"
        ev2 = loan_requested(("EE", "1.00"), outcome="needs_review")
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev2)
        _, rejected = await decided(redis_client, prefix, 2)
        assert [(r.member_state, r.rule) for r in rejected[1].reasons] == [("EE", "L-1")]
        # the operator amends the plan (audited): the same kind of request now passes
        r = await client.put("/facilities/DK/plan", json={
            "lines": [{"category": "artillery", "amount_eur": "1000000"}, {"category": "cyber", "amount_eur": "10"}],
            "supports_ukraine": True, "reason": "cyber added"})
        assert r.status_code == 200 and r.json()["version"] == 3
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("DK", "10.00"), categories=("cyber",)))
        approved, _ = await decided(redis_client, prefix, 3)
        assert len(approved) == 1
        plan = (await client.get("/facilities/DK/plan")).json()
        assert {x["category"]: x["remaining_eur"] for x in plan["lines"]} == {"artillery": "1000000.00", "cyber": "0.00"}


async def test_a_duplicate_request_reserves_once_whatever_its_event_id(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        ev = loan_requested(("DK", "5000000"))
        again = ev.model_copy(update={"event_id": uuid.uuid4()})
        for payload in (ev, ev, again, again):
            await xadd(redis_client, prefix, streams.LOAN_REQUESTED, payload)
        await decided(redis_client, prefix, 1)

        async def all_handled():
            return sum(s.processed for s in rt.messaging.subscriptions.values()) >= 4
        await wait_for(all_handled, message="four deliveries handled")
        approved, rejected = await decisions(redis_client, prefix)
        assert len(approved) == 1 and rejected == []
        assert len(await ledger_rows(rt, kind="reservation")) == 1
        assert (await client.get("/facilities/DK")).json()["approved_eur"] == "5000000.00"
        async with rt.factory() as s:
            dup = (await s.exec(select(AuditEntry).where(AuditEntry.action == "loan_request.duplicate"))).all()
        assert len(dup) == 1


async def test_a_withdrawal_releases_the_reservation_once_and_blocks_a_later_request(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        ev = loan_requested(("DK", "5000000"), ("EE", "7.00"))
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        await decided(redis_client, prefix, 1)
        w = contracts.ProcurementWithdrawn(correlation_id=ev.case_id, case_id=ev.case_id, reason="no longer needed")
        w2 = w.model_copy(update={"event_id": uuid.uuid4()})
        for payload in (w, w, w2):
            await xadd(redis_client, prefix, streams.PROCUREMENT_WITHDRAWN, payload)

        async def released():
            rows = await ledger_rows(rt, kind="release")
            sub = rt.messaging.subscriptions[streams.PROCUREMENT_WITHDRAWN]
            return rows if len(rows) >= 2 and sub.processed >= 3 else None
        rows = await wait_for(released, message="releases")
        assert len(rows) == 2
        assert (await client.get("/facilities/DK")).json()["approved_eur"] == "0.00"
        loans = (await client.get("/loans", params={"case_id": ev.case_id})).json()["items"]
        assert {x["status"] for x in loans} == {"released"}
        r = await client.post(f"/loans/{loans[0]['loan_id']}/instalments",
                              json={"amount_eur": "1", "requested_on": "2027-01-01"})
        assert r.status_code == 422 and "L-3" in [x["rule"] for x in r.json()["reasons"]]
        # withdrawn before the request arrives: remembered, the request is rejected
        late = str(uuid.uuid4())
        await xadd(redis_client, prefix, streams.PROCUREMENT_WITHDRAWN,
                   contracts.ProcurementWithdrawn(correlation_id=late, case_id=late, reason="changed plans"))
        await wait_for(lambda: _processed(rt, streams.PROCUREMENT_WITHDRAWN, 4), message="early withdrawal")
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("DK", "1.00"), case_id=late))
        _, (rejected,) = await decided(redis_client, prefix, 2)
        assert rejected.case_id == late and "case withdrawn" in rejected.reasons[0].message
        assert (await client.get("/ledger/check")).json()["ok"] is True


async def _processed(rt, stream: str, n: int) -> bool:
    return rt.messaging.subscriptions[stream].processed >= n


# --- payments ------------------------------------------------------------------------------------------------


async def test_pre_financing_and_instalments_are_paid_within_their_rules(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        # L-8: nothing is paid before the loan agreement is signed
        r = await client.post("/facilities/DK/pre-financing", json={"amount_eur": "1", "requested_on": "2026-06-01"})
        assert r.status_code == 409 and [x["rule"] for x in r.json()["reasons"]] == ["L-8", "L-9"]
        await sign(client, "DK")
        await sign(client, "IT")
        # L-9: pre-financing is an advance on approved loans: none approved yet, nothing can be advanced
        r = await client.post("/facilities/DK/pre-financing", json={"amount_eur": "1", "requested_on": "2026-06-01"})
        assert r.status_code == 409 and [x["rule"] for x in r.json()["reasons"]] == ["L-9"]
        ev = loan_requested(("DK", "40000000"))
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        (approved,), _ = await decided(redis_client, prefix, 1)
        loan_id = approved.loans[0].loan_id

        r = await client.post("/facilities/DK/pre-financing", json={"amount_eur": "7019523.31", "requested_on": "2026-06-01"})
        assert r.status_code == 422 and r.json()["reasons"][0]["rule"] == "L-3"
        r = await client.post("/facilities/DK/pre-financing", json={"amount_eur": 7019523.30, "requested_on": "2026-06-01"})
        assert r.status_code == 201 and r.json()["kind"] == "pre_financing" and r.json()["amount_eur"] == "7019523.30"
        r = await client.post("/facilities/DK/pre-financing", json={"amount_eur": "0.01", "requested_on": "2026-06-01"})
        assert r.status_code == 422
        r = await client.post("/facilities/IT/pre-financing", json={"amount_eur": "1", "requested_on": "2026-06-01"})
        assert r.status_code in (409, 422) and "no pre-financing" in r.json()["detail"]  # L-3 (and L-9: no loan)
        assert (await client.post("/facilities/DE/pre-financing",
                                  json={"amount_eur": "1", "requested_on": "2026-06-01"})).status_code == 404

        pay = f"/loans/{loan_id}/instalments"
        # 40 000 000.00 approved − 7 019 523.30 advanced = 32 980 476.70 payable as instalments
        r = await client.post(pay, json={"amount_eur": "32980476.71", "requested_on": "2030-12-31"})
        assert r.status_code == 409 and [x["rule"] for x in r.json()["reasons"]] == ["L-9"]
        assert "40 000 000.00" in r.json()["detail"] and "7 019 523.30" in r.json()["detail"]
        r = await client.post(pay, json={"amount_eur": "30000000.00", "requested_on": "2030-12-31"})
        assert r.status_code == 201 and r.json()["kind"] == "instalment" and r.json()["loan_id"] == loan_id
        assert r.json()["pre_financing_cleared_eur"] == "7019523.30"  # the advance cleared against the loan
        r = await client.post(pay, json={"amount_eur": "1.00", "requested_on": "2031-01-01"})
        assert r.status_code == 422 and [x["rule"] for x in r.json()["reasons"]] == ["L-4"]
        r = await client.post(pay, json={"amount_eur": "1.001", "requested_on": "2030-01-01"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "amount_eur"
        assert (await client.put("/facilities/DK", json={"suspended": True, "reason": "report unsatisfactory"})).status_code == 200
        assert (await client.get("/facilities/DK")).json()["status"] == "suspended"
        r = await client.post(pay, json={"amount_eur": "1.00", "requested_on": "2030-01-01"})
        assert r.status_code == 422 and [x["rule"] for x in r.json()["reasons"]] == ["L-5"]
        assert "report unsatisfactory" in r.json()["detail"]
        r = await client.post("/facilities/DK/pre-financing", json={"amount_eur": "1", "requested_on": "2026-06-01"})
        assert "L-5" in [x["rule"] for x in r.json()["reasons"]]
        assert (await client.put("/facilities/DK", json={"suspended": False, "reason": "reinstated"})).status_code == 200
        assert (await client.get("/facilities/DK")).json()["status"] == "agreement_signed"
        r = await client.post(pay, json={"amount_eur": "2980476.70", "requested_on": "2030-01-01"})
        assert r.status_code == 201
        r = await client.post(pay, json={"amount_eur": "0.01", "requested_on": "2030-01-01"})
        assert r.status_code in (409, 422)
        loan = (await client.get(f"/loans/{loan_id}")).json()
        assert loan["instalments_paid_eur"] == "32980476.70" and loan["remaining_eur"] == "0.00"
        assert loan["pre_financing_cleared_eur"] == "7019523.30"
        dk = (await client.get("/facilities/DK")).json()
        assert dk["disbursed_eur"] == "40000000.00" and dk["approved_eur"] == "40000000.00"
        assert dk["payable_eur"] == "0.00" and dk["pre_financing_uncleared_eur"] == "0.00"
        assert (await client.get("/loans/nope")).status_code == 404
        assert (await client.get("/ledger/check")).json()["ok"] is True
        # the ledger is append-only: the database refuses to change an entry
        with pytest.raises(Exception, match="append-only"):
            async with rt.factory() as s, s.begin():
                await s.execute(text("UPDATE ledger_entries SET reason = 'x'"))


# --- reconciliation --------------------------------------------------------------------------------------------


async def test_reconciliation_reports_a_ledger_that_disagrees_with_the_loans(database_url, prefix, redis_client, capsys):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("DK", "5000000")))
        await decided(redis_client, prefix, 1)
        assert (await client.get("/ledger/check")).json()["ok"] is True
        async with rt.factory() as s, s.begin():
            loan = (await s.exec(select(LoanRow))).one()
            s.add(LedgerEntry(member_state="DK", case_id=loan.case_id, loan_id=loan.loan_id, kind="reservation",
                              amount=D("0.01"), reason="a stray entry"))
        report = (await client.get("/ledger/check")).json()
        assert report["ok"] is False
        assert {d["check"] for d in report["differences"]} == {"approved_matches_loans", "loan_reserved_once"}
    code = await asyncio.to_thread(reconcile_cli.main, [], settings(database_url, prefix))
    assert code == 1 and "approved_matches_loans" in capsys.readouterr().out


# --- concurrency ---------------------------------------------------------------------------------------------


async def start_replicas(stack: AsyncExitStack, database_url: str, prefix: str, replicas: int,
                         **changes: Any) -> tuple[Any, list[Any]]:
    """`replicas` services on one database, started inside `stack`: a client of the last one and every runtime."""
    runtimes = []
    for i in range(replicas):
        app = build_app(settings(database_url, prefix, consumer=f"replica-{i}", **changes))
        client, rt = await stack.enter_async_context(running(app))
        runtimes.append(rt)
    return client, runtimes


async def request_loans(redis_client: Any, prefix: str, n: int, line: tuple[str, str]) -> None:
    """`n` loan requests for `line` (Member State, amount) on the stream, in one round trip."""
    pipe = redis_client.pipeline(transaction=False)
    for _ in range(n):
        pipe.xadd(f"{prefix}{streams.LOAN_REQUESTED}", {wire.DATA: loan_requested(line).model_dump_json()})
    await pipe.execute()


@pytest.mark.parametrize("replicas", [1, 2])
async def test_thirty_requests_at_once_never_over_commit_the_danish_facility(database_url, prefix, redis_client, replicas):
    """30 × EUR 5 000 000 against DK's 46 796 822 → exactly 9 approved, 21 rejected (L-2), ledger balanced."""
    async with AsyncExitStack() as stack:
        client, runtimes = await start_replicas(stack, database_url, prefix, replicas, batch_size=2)
        await request_loans(redis_client, prefix, 30, ("DK", "5000000"))
        approved, rejected = await decided(redis_client, prefix, 30)
        assert len(approved) == 9 and len(rejected) == 21
        assert all([r.rule for r in x.reasons] == ["L-2"] for x in rejected)
        assert len({a.case_id for a in approved} | {r.case_id for r in rejected}) == 30
        dk = (await client.get("/facilities/DK")).json()
        assert dk["approved_eur"] == "45000000.00" and dk["available_eur"] == "1796822.00"
        assert (await client.get("/ledger/check")).json() | {"facilities": None, "checked_at": None} == {
            "ok": True, "differences": [], "facilities": None, "checked_at": None}
        assert len(await ledger_rows(runtimes[0], kind="reservation")) == 9
        async with runtimes[0].factory() as s:
            assert (await s.exec(select(func.count()).select_from(DeadLetter))).one() == 0
        handled = [rt.messaging.subscriptions[streams.LOAN_REQUESTED].processed for rt in runtimes]
        assert sum(handled) == 30
        if replicas == 2:
            assert all(n > 0 for n in handled), f"both replicas should share the work: {handled}"


async def test_the_service_documents_its_endpoints_and_streams(database_url, prefix, redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert {"/facilities", "/facilities/{member_state}", "/facilities/{member_state}/plan",
                "/facilities/{member_state}/pre-financing", "/loans", "/loans/{loan_id}",
                "/loans/{loan_id}/instalments", "/ledger/check"} <= set(paths)
        doc = (await client.get("/asyncapi.json")).json()
        text_doc = str(doc)
        for stream in (streams.LOAN_REQUESTED, streams.PROCUREMENT_WITHDRAWN, streams.LOAN_APPROVED,
                       streams.LOAN_REJECTED):
            assert stream in text_doc
        assert (await client.get("/health/ready")).status_code == 200
