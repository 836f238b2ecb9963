"""Loan disbursement running totals (migration 0002) and the per-transaction decision state, on SQLite and
PostgreSQL: the totals always equal the ledger sums, the reconciliation reports one that does not, the migration
backfills them, and a batch of decisions locks and reads the facilities once without aggregating the ledger."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlmodel import func, select

from safe_procurement.services.loan_disbursement import main as loan_main
from safe_procurement.services.loan_disbursement import reconcile as reconcile_cli
from safe_procurement.services.loan_disbursement.adapters import ledger
from safe_procurement.services.loan_disbursement.adapters.repository import LoanUnitOfWork
from safe_procurement.services.loan_disbursement.adapters.tables import (
    FacilityRow,
    LedgerEntry,
    LoanRequestRow,
    LoanRow,
    PlanDrawRow,
    PlanDrawTotalRow,
)
from safe_procurement.services.loan_disbursement.adapters.types import Money
from safe_procurement.services.loan_disbursement.domain.reference import Reference
from safe_procurement.services.loan_disbursement.main import build_app, load_reference
from safe_procurement.services.loan_disbursement.service_layer import handlers
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.tables import TS, AuditEntry, OutboxRow
from safe_procurement.shared.kit.uow import begin
from tests.builders import loan_requested
from tests.integration.helpers import xadd
from tests.integration.test_loan_disbursement_service import (
    decided,
    ledger_rows,
    request_loans,
    settings,
    sign,
    start_replicas,
)

D = Decimal
KIND_TOTAL = {"reservation": "reserved_eur", "release": "released_eur", "pre_financing": "pre_financing_paid_eur",
              "instalment": "instalments_paid_eur"}


async def totals_and_sums(session) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], Decimal]]:
    """(stored running totals, the same recomputed from the ledger and the draws), keyed (what, column)."""
    stored: dict[tuple[str, str], Decimal] = {}
    summed: dict[tuple[str, str], Decimal] = {}
    for f in (await session.exec(select(FacilityRow).execution_options(populate_existing=True))).all():
        for kind, column in KIND_TOTAL.items():
            stored[(f.member_state, column)] = getattr(f, column)
            total = (await session.exec(select(func.sum(LedgerEntry.amount)).where(
                LedgerEntry.member_state == f.member_state, LedgerEntry.kind == kind))).one()
            summed[(f.member_state, column)] = total or D("0.00")
    for t in (await session.exec(select(PlanDrawTotalRow))).all():
        stored[(t.member_state, t.category)] = t.drawn_eur
    draws = (await session.exec(
        select(PlanDrawRow.member_state, PlanDrawRow.category, func.sum(PlanDrawRow.amount_eur))
        .join(LoanRow, LoanRow.loan_id == PlanDrawRow.loan_id).where(LoanRow.status == "active")
        .group_by(PlanDrawRow.member_state, PlanDrawRow.category))).all()
    for ms, cat, total in draws:
        summed[(ms, cat)] = total
    for key in stored.keys() - summed.keys():
        summed[key] = D("0.00")  # a plan line whose loans were all released
    return stored, summed


# --- through the service -----------------------------------------------------------------------------------


async def test_running_totals_equal_the_ledger_after_approvals_releases_and_payments(database_url, prefix,
                                                                                     redis_client):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        first = loan_requested(("DK", "5000000"), ("EE", "1000.50"))
        second = loan_requested(("DK", "2000000"), categories=("artillery", "cyber"))
        for ev in (first, second):
            await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        approved, _ = await decided(redis_client, prefix, 2)
        assert len(approved) == 2
        await xadd(redis_client, prefix, streams.PROCUREMENT_WITHDRAWN, contracts.ProcurementWithdrawn(
            correlation_id=first.case_id, case_id=first.case_id, reason="no longer needed"))
        await wait_for(lambda: _released(rt, 2), message="the first case's releases")
        await sign(client, "DK")
        r = await client.post("/facilities/DK/pre-financing", json={"amount_eur": "1000000", "requested_on": "2026-06-01"})
        assert r.status_code == 201
        loan_id = next(x.loan_id for a in approved if a.case_id == second.case_id for x in a.loans)
        r = await client.post(f"/loans/{loan_id}/instalments", json={"amount_eur": "500000.01", "requested_on": "2027-01-01"})
        assert r.status_code == 201

        async with rt.factory() as s:
            stored, summed = await totals_and_sums(s)
        assert stored == summed
        assert {k: stored[k] for k in [("DK", c) for c in KIND_TOTAL.values()]} == {
            ("DK", "reserved_eur"): D("7000000.00"), ("DK", "released_eur"): D("5000000.00"),
            ("DK", "pre_financing_paid_eur"): D("1000000.00"), ("DK", "instalments_paid_eur"): D("500000.01")}
        assert stored[("EE", "reserved_eur")] == stored[("EE", "released_eur")] == D("1000.50")
        # the released loans gave their draws back; the active one holds its own (greedy, in category order)
        assert stored[("DK", "ammunition_and_missiles")] == stored[("EE", "ammunition_and_missiles")] == D("0.00")
        assert stored[("DK", "artillery")] == D("2000000.00") and ("DK", "cyber") not in stored
        dk = (await client.get("/facilities/DK")).json()
        assert (dk["approved_eur"], dk["disbursed_eur"], dk["pre_financing_paid_eur"], dk["instalments_paid_eur"]) == (
            "2000000.00", "1500000.01", "1000000.00", "500000.01")
        plan = {x["category"]: x for x in (await client.get("/facilities/DK/plan")).json()["lines"]}
        assert plan["artillery"]["drawn_eur"] == "2000000.00" and plan["artillery"]["remaining_eur"] == "44796822.00"
        assert plan["ammunition_and_missiles"]["drawn_eur"] == "0.00"
        assert (await client.get("/ledger/check")).json()["ok"] is True


async def _released(rt, n: int) -> bool:
    return len(await ledger_rows(rt, kind="release")) >= n


async def test_the_reconciliation_reports_a_tampered_running_total(database_url, prefix, redis_client, capsys):
    async with running(build_app(settings(database_url, prefix))) as (client, rt):
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, loan_requested(("DK", "5000000")))
        await decided(redis_client, prefix, 1)
        assert (await client.get("/ledger/check")).json()["ok"] is True
        facilities, plan_totals = FacilityRow.__table__, PlanDrawTotalRow.__table__
        async with rt.factory() as s, s.begin():
            conn = await s.connection()
            await conn.execute(sa.update(facilities).where(facilities.c.member_state == "DK")
                               .values(reserved_eur=facilities.c.reserved_eur + D("0.01")))
        report = (await client.get("/ledger/check")).json()
        assert report["ok"] is False
        assert [(d["member_state"], d["check"], d["expected"], d["actual"]) for d in report["differences"]] == [
            ("DK", "running_total_matches_ledger", "5000000.00", "5000000.01")]
        async with rt.factory() as s, s.begin():
            conn = await s.connection()
            await conn.execute(sa.update(facilities).where(facilities.c.member_state == "DK")
                               .values(reserved_eur=facilities.c.reserved_eur - D("0.01")))
            await conn.execute(sa.update(plan_totals).where(plan_totals.c.member_state == "DK")
                               .values(drawn_eur=plan_totals.c.drawn_eur - D("1000")))
        report = (await client.get("/ledger/check")).json()
        assert [(d["member_state"], d["check"], d["expected"], d["actual"]) for d in report["differences"]] == [
            ("DK", "plan_drawn_total_matches_draws", "5000000.00", "4999000.00")]
    code = await asyncio.to_thread(reconcile_cli.main, [], settings(database_url, prefix))
    assert code == 1 and "plan_drawn_total_matches_draws" in capsys.readouterr().out


@pytest.mark.parametrize("replicas", [1, 2])
async def test_large_batches_on_concurrent_replicas_never_over_commit(database_url, prefix, redis_client, replicas):
    """60 × EUR 5 000 000 against DK in batches of up to 50 (one lock and one read of the facilities per batch
    transaction): exactly 9 approved, however the replicas share them, and the totals match the ledger."""
    async with AsyncExitStack() as stack:
        client, runtimes = await start_replicas(stack, database_url, prefix, replicas, batch_size=50)
        await request_loans(redis_client, prefix, 60, ("DK", "5000000"))
        approved, rejected = await decided(redis_client, prefix, 60)
        assert len(approved) == 9 and len(rejected) == 51
        assert (await client.get("/facilities/DK")).json()["approved_eur"] == "45000000.00"
        assert (await client.get("/ledger/check")).json()["ok"] is True
        async with runtimes[0].factory() as s:
            stored, summed = await totals_and_sums(s)
        assert stored == summed


# --- the migration ---------------------------------------------------------------------------------------


def _alembic(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", db.migrations_dir(loan_main.__file__))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    return cfg


# the facilities table as revision 0001 left it (the model now has the running-total columns too)
_FACILITIES_0001 = sa.table(
    "facilities", sa.column("member_state"), sa.column("max_eur", Money()), sa.column("pre_financing_eur", Money()),
    sa.column("suspended", sa.Boolean()), sa.column("source"), sa.column("confidence"), sa.column("notes"),
    sa.column("supports_ukraine", sa.Boolean()), sa.column("plan_source"), sa.column("plan_version", sa.Integer()),
    sa.column("created_at", TS), sa.column("updated_at", TS),
)


async def test_the_migration_backfills_the_running_totals_from_existing_rows(database_url):
    cfg = _alembic(database_url)
    await asyncio.to_thread(command.upgrade, cfg, "0001")
    engine = db.make_engine(database_url, pool_size=1)
    now = datetime(2026, 5, 1, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(_FACILITIES_0001), [
                {"member_state": ms, "max_eur": D("46796822.00"), "pre_financing_eur": None, "suspended": False,
                 "source": "", "confidence": "assumed", "notes": "", "supports_ukraine": False, "plan_source": "",
                 "plan_version": 1, "created_at": now, "updated_at": now} for ms in ("DK", "EE", "PL")])
            loans = [("L1", "C1", "DK", D("5000000.00"), "active"), ("L2", "C2", "DK", D("2000000.00"), "released"),
                     ("L3", "C3", "EE", D("1000.50"), "active")]
            await conn.execute(sa.insert(LoanRequestRow.__table__), [
                {"case_id": c, "event_id": str(uuid.uuid4()), "reference": c, "status": "approved",
                 "verification_outcome": "eligible", "requested": "[]", "categories": "[]", "participants": "[]",
                 "reasons": "[]", "decided_at": now, "withdrawn_at": None} for _, c, _, _, _ in loans])
            await conn.execute(sa.insert(LoanRow.__table__), [
                {"loan_id": lid, "case_id": c, "member_state": ms, "amount_eur": a, "status": st, "approved_at": now,
                 "released_at": now if st == "released" else None} for lid, c, ms, a, st in loans])
            await conn.execute(sa.insert(PlanDrawRow.__table__), [
                {"loan_id": "L1", "category": "ammunition_and_missiles", "member_state": "DK", "amount_eur": D("5000000.00")},
                {"loan_id": "L2", "category": "artillery", "member_state": "DK", "amount_eur": D("2000000.00")},
                {"loan_id": "L3", "category": "ammunition_and_missiles", "member_state": "EE", "amount_eur": D("600.00")},
                {"loan_id": "L3", "category": "cyber", "member_state": "EE", "amount_eur": D("400.50")}])
            entries = [("DK", "L1", "reservation", "5000000.00"), ("DK", "L2", "reservation", "2000000.00"),
                       ("DK", "L2", "release", "2000000.00"), ("EE", "L3", "reservation", "1000.50"),
                       ("DK", None, "pre_financing", "1000000.00"), ("DK", "L1", "instalment", "250000.00"),
                       ("DK", "L1", "instalment", "0.01")]
            await conn.execute(sa.insert(LedgerEntry.__table__), [
                {"member_state": ms, "case_id": None, "loan_id": lid, "kind": kind, "amount": D(a), "at": now,
                 "reason": "", "requested_on": None, "actor": "t", "event_id": None} for ms, lid, kind, a in entries])
        expected = {
            ("DK", "reserved_eur"): D("7000000.00"), ("DK", "released_eur"): D("2000000.00"),
            ("DK", "pre_financing_paid_eur"): D("1000000.00"), ("DK", "instalments_paid_eur"): D("250000.01"),
            ("EE", "reserved_eur"): D("1000.50"), ("EE", "released_eur"): D("0.00"),
            ("EE", "pre_financing_paid_eur"): D("0.00"), ("EE", "instalments_paid_eur"): D("0.00"),
            ("PL", "reserved_eur"): D("0.00"), ("PL", "released_eur"): D("0.00"),
            ("PL", "pre_financing_paid_eur"): D("0.00"), ("PL", "instalments_paid_eur"): D("0.00"),
            ("DK", "ammunition_and_missiles"): D("5000000.00"), ("EE", "ammunition_and_missiles"): D("600.00"),
            ("EE", "cyber"): D("400.50"),  # nothing for DK artillery: its loan was released
        }
        factory = db.session_factory(engine)
        for _ in range(2):  # upgraded; then downgraded and upgraded again
            await asyncio.to_thread(command.upgrade, cfg, "head")
            async with db.transaction(factory) as s:
                stored, summed = await totals_and_sums(s)
                report = await ledger.reconcile(s)
            assert stored == expected and summed == expected
            assert report.ok, report.text()
            await asyncio.to_thread(command.downgrade, cfg, "0001")
        await asyncio.to_thread(command.upgrade, cfg, "head")
        # from here on the triggers keep them: a release, an instalment
        async with db.transaction(factory) as s:
            loan = await s.get(LoanRow, "L3")
            loan.status = "released"
            s.add(loan)
            s.add(LedgerEntry(member_state="EE", loan_id="L3", kind="release", amount=D("1000.50"), reason="w"))
            s.add(LedgerEntry(member_state="DK", loan_id="L1", kind="instalment", amount=D("9.99"), reason="i"))
        async with db.transaction(factory) as s:
            stored, summed = await totals_and_sums(s)
            assert (await ledger.reconcile(s)).ok
        assert stored == summed
        assert stored[("EE", "cyber")] == D("0.00") and stored[("DK", "instalments_paid_eur")] == D("250010.00")
    finally:
        await engine.dispose()


# --- one batch transaction, as the message kit runs it ----------------------------------------------------------


@pytest.fixture
async def loans_db(database_url) -> AsyncIterator[tuple[Any, Any, Reference]]:
    await db.migrate(database_url, db.migrations_dir(loan_main.__file__))
    engine = db.make_engine(database_url, pool_size=2)
    factory = db.session_factory(engine)
    reference = load_reference()
    async with begin(factory, LoanUnitOfWork) as uow:
        await handlers.seed(uow, reference)
    try:
        yield engine, factory, reference
    finally:
        await engine.dispose()


async def run_batch(factory, reference: Reference, events: list[Any], *, savepoints: bool = False) -> list[str]:
    """What the kit does with a batch: one transaction, the handlers one after another with the same session;
    with `savepoints`, each message in its own savepoint (a failure rolls back that message only). Returns the
    case ids whose message failed."""
    failed = []
    async with begin(factory, LoanUnitOfWork) as uow:
        session = uow.session
        for ev in events:
            handler = (handlers.on_procurement_withdrawn(ev, uow) if isinstance(ev, contracts.ProcurementWithdrawn)
                       else handlers.on_loan_requested(ev, uow, reference))
            if not savepoints:
                await handler
                continue
            try:
                async with session.begin_nested():
                    await handler
                    await session.flush()
            except Exception:
                failed.append(ev.case_id)
    return failed


async def statuses(factory) -> dict[str, str]:
    async with factory() as s:
        return dict((await s.exec(select(LoanRequestRow.case_id, LoanRequestRow.status))).all())


async def assert_books_balanced(factory) -> None:
    async with db.transaction(factory) as s:
        stored, summed = await totals_and_sums(s)
        report = await ledger.reconcile(s)
    assert stored == summed
    assert report.ok, report.text()


@asynccontextmanager
async def statements_of(engine):  # noqa: ANN001, ANN201
    """The SQL statements run on `engine` inside the block: on SQLite as sqlite3 runs them (the kit's direct path
    included, which SQLAlchemy's events do not see), on PostgreSQL as SQLAlchemy sends them."""
    statements: list[str] = []
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:  # the engine's one pooled connection
            driver = (await conn.get_raw_connection()).driver_connection  # the driver's public interface
        await driver.set_trace_callback(lambda statement: statements.append(" ".join(statement.split())))
        try:
            yield statements
        finally:
            await driver.set_trace_callback(None)
        return

    def record(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        statements.append(" ".join(statement.split()))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_batch_locks_and_reads_the_facilities_once_and_never_aggregates_the_ledger(loans_db):
    engine, factory, reference = loans_db
    events = [loan_requested(("DK", "5000000")) for _ in range(30)]
    events.insert(5, events[0].model_copy(update={"event_id": uuid.uuid4()}))  # the same case again, in the batch
    async with statements_of(engine) as statements:
        assert await run_batch(factory, reference, events) == []
    decisions = await statuses(factory)
    assert len(decisions) == 30 and list(decisions.values()).count("approved") == 9
    assert decisions[events[0].case_id] == "approved"  # the earliest 9 fit, the rest fail L-2
    reads = [s for s in statements if s.upper().startswith("SELECT")]
    facility_reads = [s for s in reads if re.search(r"\bFROM facilities\b", s)]
    assert len(facility_reads) == 1, facility_reads
    if engine.dialect.name == "postgresql":
        assert facility_reads[0].endswith("FOR UPDATE")
    assert not [s for s in reads if "ledger_entries" in s or "plan_draws " in s or "sum(" in s.lower()]
    plan_reads = [s for s in reads if "plan_lines" in s]
    assert len(plan_reads) == 1  # DK's plan once; then kept by the batch's own decisions
    async with factory() as s:
        dup = (await s.exec(select(AuditEntry).where(AuditEntry.action == "loan_request.duplicate"))).all()
        outbox = (await s.exec(select(func.count()).select_from(OutboxRow))).one()
    assert len(dup) == 1 and outbox == 30
    await assert_books_balanced(factory)


async def test_a_message_rolled_back_to_its_savepoint_leaves_nothing_behind(loans_db, monkeypatch):
    """The kit's fallback: one savepoint per message. A message failing after its rows were written (and after
    the decision state recorded them) is rolled back; the next message builds the state afresh, so the failed
    amount is neither in the database nor in what later decisions see."""
    _, factory, reference = loans_db
    record = ledger.Decisions.record_approval

    def failing(self, member_state, amount, draws):  # noqa: ANN001
        record(self, member_state, amount, draws)
        if amount == D("4000000.01"):
            raise RuntimeError("boom after writing")

    monkeypatch.setattr(ledger.Decisions, "record_approval", failing)
    events = [loan_requested(("DK", "5000000")) for _ in range(29)]
    poisoned = loan_requested(("DK", "4000000.01"))
    events.insert(3, poisoned)
    assert await run_batch(factory, reference, events, savepoints=True) == [poisoned.case_id]
    decisions = await statuses(factory)
    assert poisoned.case_id not in decisions
    assert len(decisions) == 29 and list(decisions.values()).count("approved") == 9  # not 8
    await assert_books_balanced(factory)


async def test_a_withdrawal_in_the_same_transaction_frees_the_amount_for_the_next_decision(loans_db):
    _, factory, reference = loans_db
    nine = [loan_requested(("DK", "5000000")) for _ in range(9)]
    withdrawn = contracts.ProcurementWithdrawn(correlation_id=nine[4].case_id, case_id=nine[4].case_id, reason="x")
    late = [loan_requested(("DK", "5000000")) for _ in range(2)]
    await run_batch(factory, reference, [*nine, withdrawn, *late])
    decisions = await statuses(factory)
    assert [decisions[e.case_id] for e in late] == ["approved", "rejected"]
    async with factory() as s:
        assert ledger.Balance.of((await ledger.facilities(s, ["DK"]))["DK"]).approved == D("45000000.00")
    await assert_books_balanced(factory)
