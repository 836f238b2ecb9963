"""Reading the ledger: facility locks, balances, plan remainders, the state of one transaction's loan
decisions, reconciliation.

Balances and plan remainders are read from the running totals the database keeps with every ledger entry, plan
draw and loan status (triggers of migration 0002): a few rows, however long the ledger. `reconcile` still sums
the ledger itself (the source of truth) and reports any running total that differs.

Concurrency: every writer of money (loan decisions, withdrawals, payments, facility and plan changes) first
locks facility rows with SELECT … FOR UPDATE, always in member_state order, and only then reads balances.
On PostgreSQL that serializes writers per facility across replicas (READ COMMITTED: each statement after the
lock sees every earlier commit); message handlers lock *all* facilities so that one batch transaction that
handles several cases still acquires its locks in one global order (no deadlock), once per transaction (or
per savepoint when the kit redoes a batch message by message: see `Decisions`). On SQLite the kit's
BEGIN IMMEDIATE makes every transaction a writer holding the database lock; FOR UPDATE is not emitted there."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.loan_disbursement.adapters.tables import (
    ClearingRow,
    FacilityRow,
    LedgerEntry,
    LoanRow,
    PlanDrawRow,
    PlanDrawTotalRow,
    PlanLineRow,
)
from safe_procurement.services.loan_disbursement.domain import reconcile as books
from safe_procurement.services.loan_disbursement.domain.lifecycle import Advances
from safe_procurement.services.loan_disbursement.domain.money import ZERO
from safe_procurement.services.loan_disbursement.domain.reconcile import Balance
from safe_procurement.shared.kit.db import connection_of, fetch_all, transaction_scope
from safe_procurement.shared.kit.tables import utcnow

log = logging.getLogger("safe.loan_disbursement.ledger")


async def lock_facilities(session: AsyncSession, member_states: Iterable[str] | None = None) -> dict[str, FacilityRow]:
    """Lock (FOR UPDATE) the given facilities, or all of them, in member_state order; return them by code, freshly
    read (running totals included)."""
    q = select(FacilityRow).order_by(col(FacilityRow.member_state)).with_for_update()
    if member_states is not None:
        q = q.where(col(FacilityRow.member_state).in_(sorted(set(member_states))))
    rows = (await session.exec(q.execution_options(populate_existing=True))).all()
    return {r.member_state: r for r in rows}


async def facilities(session: AsyncSession, member_states: Iterable[str] | None = None) -> dict[str, FacilityRow]:
    q = select(FacilityRow).order_by(col(FacilityRow.member_state))
    if member_states is not None:
        q = q.where(col(FacilityRow.member_state).in_(sorted(set(member_states))))
    return {r.member_state: r for r in (await session.exec(q)).all()}


async def ledger_balances(session: AsyncSession) -> dict[str, Balance]:
    """Per Member State in the ledger: Σ of each kind of entry, summed from the entries themselves (for the
    reconciliation; O(ledger))."""
    q = select(LedgerEntry.member_state, LedgerEntry.kind, func.sum(LedgerEntry.amount)).group_by(
        col(LedgerEntry.member_state), col(LedgerEntry.kind)
    )
    sums: dict[str, dict[str, Decimal]] = {}
    for ms, kind, total in (await session.exec(q)).all():
        sums.setdefault(ms, {})[kind] = total or ZERO
    return {ms: Balance(**{_FIELD[k]: v for k, v in kinds.items() if k in _FIELD}) for ms, kinds in sums.items()}


_FIELD = {"reservation": "reserved", "release": "released", "pre_financing": "pre_financing", "instalment": "instalments"}


async def plan_lines(session: AsyncSession, member_states: Iterable[str]) -> dict[str, dict[str, Decimal]]:
    rows = (await session.exec(
        select(PlanLineRow).where(col(PlanLineRow.member_state).in_(sorted(set(member_states))))
    )).all()
    out: dict[str, dict[str, Decimal]] = {}
    for r in rows:
        out.setdefault(r.member_state, {})[r.category] = r.amount_eur
    return out


async def plan_drawn(session: AsyncSession, member_states: Iterable[str]) -> dict[str, dict[str, Decimal]]:
    """What active (not released) loans drew from each plan line: the running totals."""
    q = select(PlanDrawTotalRow.member_state, PlanDrawTotalRow.category, PlanDrawTotalRow.drawn_eur).where(
        col(PlanDrawTotalRow.member_state).in_(sorted(set(member_states))))
    out: dict[str, dict[str, Decimal]] = {}
    for ms, cat, total in (await session.exec(q)).all():
        out.setdefault(ms, {})[cat] = total
    return out


async def draws_of_active_loans(session: AsyncSession) -> dict[tuple[str, str], Decimal]:
    """(Member State, category) → Σ plan_draws of the active loans, summed from the draws (reconciliation)."""
    q = (
        select(PlanDrawRow.member_state, PlanDrawRow.category, func.sum(PlanDrawRow.amount_eur))
        .join(LoanRow, col(LoanRow.loan_id) == col(PlanDrawRow.loan_id))
        .where(LoanRow.status == "active")
        .group_by(col(PlanDrawRow.member_state), col(PlanDrawRow.category))
    )
    return {(ms, cat): total or ZERO for ms, cat, total in (await session.exec(q)).all()}


# Prebuilt Core statements of the decision path (built and compiled once, not per message)
_FACILITY, _LINE, _DRAWN = FacilityRow.__table__.c, PlanLineRow.__table__.c, PlanDrawTotalRow.__table__.c
_LOCK_ALL = (
    sa.select(_FACILITY.member_state, _FACILITY.max_eur, _FACILITY.reserved_eur, _FACILITY.released_eur,
              _FACILITY.suspended, _FACILITY.suspended_reason, _FACILITY.status, _FACILITY.confidence,
              _FACILITY.source)
    .order_by(_FACILITY.member_state)
    .with_for_update()
)
_PLAN_REMAINING = (
    sa.select(_LINE.member_state, _LINE.category, _LINE.amount_eur, _DRAWN.drawn_eur)
    .select_from(PlanLineRow.__table__.outerjoin(
        PlanDrawTotalRow.__table__,
        sa.and_(_DRAWN.member_state == _LINE.member_state, _DRAWN.category == _LINE.category)))
    .where(_LINE.member_state.in_(sa.bindparam("member_states", expanding=True)))
)
_EARLIER = sa.text("SELECT case_id, status, event_id FROM loan_requests WHERE case_id IN :ids").bindparams(
    sa.bindparam("ids", expanding=True))
_WITHDRAWN = sa.text("SELECT case_id, reason FROM case_withdrawals WHERE case_id IN :ids").bindparams(
    sa.bindparam("ids", expanding=True))


async def _plan_remaining(conn: AsyncConnection, member_states: list[str]) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = {ms: {} for ms in member_states}
    for ms, cat, amount, drawn in await fetch_all(conn, _PLAN_REMAINING, {"member_states": member_states}):
        out[ms][cat] = amount - (drawn if drawn is not None else ZERO)
    return out


# --- one transaction's loan decisions ---------------------------------------------------------------------


@dataclass
class FacilityValues:
    """What a loan decision needs of a facility, read under its lock: plain values, never an ORM object (a
    savepoint rollback expires ORM objects, and an expired attribute cannot be loaded lazily in async code)."""

    member_state: str
    max_eur: Decimal
    approved: Decimal
    suspended: bool
    suspended_reason: str | None
    status: str = "decided"
    confidence: str = "official"
    source: str = ""


@dataclass
class Decisions:
    """The loan decisions of one transaction, or of one savepoint: the facility locks it holds, the values read
    under them, each plan's remainder.

    The message kit handles a batch of LoanRequested in one transaction, so the locks are taken and the
    facilities read once per batch rather than once per message. The values stay exact because nobody else can
    change them while the locks are held, and because `record_approval` applies to them what the triggers apply
    to the running totals (the decision's rows are Core inserts: at once outside a batch, with the batch's bulk
    INSERT at commit inside one; either way before the locks are released). The state belongs to the
    innermost transaction that was active when it was built; in any other (the kit's per-message savepoints,
    whose rollback also releases PostgreSQL row locks taken inside them) it is built afresh. A writer of anything
    it holds other than the loan decision itself calls `forget`.

    Its queries run on the transaction's connection without autoflush: everything else was flushed when the state
    was built, and what this transaction decided is held here (`known`, the facility and plan values)."""

    scope: Any
    conn: AsyncConnection
    facilities: dict[str, FacilityValues]
    plans: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # Member State → category → remaining
    # case → its decision ((status, event id); None: none yet), for every case read or decided here (a decided
    # case's rows may still be queued for the batch's bulk INSERT); case → withdrawal reason, for those read
    known: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    withdrawn: dict[str, str] = field(default_factory=dict)

    async def plan_remaining(self, member_states: Iterable[str]) -> dict[str, dict[str, Decimal]]:
        wanted = sorted(set(member_states))
        missing = [ms for ms in wanted if ms not in self.plans]
        if missing:
            self.plans.update(await _plan_remaining(self.conn, missing))
        return {ms: self.plans[ms] for ms in wanted}

    async def earlier_decision(self, case_id: str, batch: Sequence[str] = ()) -> tuple[tuple[str, str] | None, str | None]:
        """The case's decision so far ((status, event id) or None) and its withdrawal reason (or None). With the
        case ids of the whole batch, the first call reads them all, one query each (under the locks)."""
        if case_id not in self.known:
            ids = sorted(set(batch) - self.known.keys()) if case_id in batch else [case_id]
            self.known.update(dict.fromkeys(ids))
            self.known.update({c: (st, ev) for c, st, ev in await fetch_all(self.conn, _EARLIER, {"ids": ids})})
            self.withdrawn.update(await fetch_all(self.conn, _WITHDRAWN, {"ids": ids}))
        return self.known[case_id], self.withdrawn.get(case_id)

    def record_decision(self, case_id: str, status: str, event_id: str) -> None:
        self.known[case_id] = (status, event_id)

    def record_approval(self, member_state: str, amount: Decimal, draws: Mapping[str, Decimal]) -> None:
        """A loan reserved `amount` and drew `draws` from the plan (what the triggers add to the totals)."""
        self.facilities[member_state].approved += amount
        plan = self.plans.get(member_state)
        if plan is not None:
            for cat, drawn in draws.items():
                plan[cat] = plan.get(cat, ZERO) - drawn


def holds(decisions: Decisions | None, session: AsyncSession) -> bool:
    """Whether `decisions` belongs to the session's innermost transaction, still active."""
    scope = transaction_scope(session)
    return decisions is not None and scope is not None and decisions.scope is scope and scope.is_active


async def load_decisions(session: AsyncSession) -> Decisions:
    """A transaction's loan decision state: every facility locked FOR UPDATE in member_state order, and read."""
    if session.new or session.dirty or session.deleted:
        await session.flush()  # so that the triggers have run and the queries without autoflush see every write
    conn = await connection_of(session)
    rows = await fetch_all(conn, _LOCK_ALL, {})
    return Decisions(scope=transaction_scope(session), conn=conn, facilities={
        ms: FacilityValues(ms, max_eur, reserved - released, suspended, reason, status or "decided", confidence, source)
        for ms, max_eur, reserved, released, suspended, reason, status, confidence, source in rows
    })


async def instalments_paid(session: AsyncSession, loan_id: str) -> Decimal:
    q = select(func.sum(LedgerEntry.amount)).where(LedgerEntry.loan_id == loan_id, LedgerEntry.kind == "instalment")
    return (await session.exec(q)).one() or ZERO


async def cleared_on_loan(session: AsyncSession, loan_id: str) -> Decimal:
    """Pre-financing cleared against the loan so far (L-9)."""
    q = select(func.sum(ClearingRow.amount)).where(ClearingRow.loan_id == loan_id)
    return (await session.exec(q)).one() or ZERO


async def cleared_of(session: AsyncSession, member_state: str) -> Decimal:
    """Pre-financing of the Member State cleared against its loans so far (L-9)."""
    q = select(func.sum(ClearingRow.amount)).where(ClearingRow.member_state == member_state)
    return (await session.exec(q)).one() or ZERO


async def clearings(session: AsyncSession, entry_ids: Sequence[int]) -> dict[int, Decimal]:
    """Instalment ledger entry id → the pre-financing cleared with it."""
    if not entry_ids:
        return {}
    q = select(ClearingRow.ledger_entry_id, ClearingRow.amount).where(col(ClearingRow.ledger_entry_id).in_(entry_ids))
    return dict((await session.exec(q)).all())


async def advances(session: AsyncSession, facility: FacilityRow) -> Advances:
    """L-9's figures for a facility (read it under its lock): approved, paid, cleared."""
    bal = Balance.of(facility)
    return Advances(facility.member_state, bal.approved, bal.pre_financing, bal.instalments,
                    await cleared_of(session, facility.member_state))


async def _ledger_by_loan(session: AsyncSession, loans: dict[str, Any]
                          ) -> tuple[dict[str, dict[str, tuple[int, Decimal]]], list[books.Difference]]:
    """The ledger summed per loan and kind, and the entries that name no loan, an unknown one or an unknown kind."""
    per_loan: dict[str, dict[str, tuple[int, Decimal]]] = {}
    orphans: list[books.Difference] = []
    q = select(LedgerEntry.loan_id, LedgerEntry.member_state, LedgerEntry.kind, func.count(),
               func.sum(LedgerEntry.amount)).group_by(
        col(LedgerEntry.loan_id), col(LedgerEntry.member_state), col(LedgerEntry.kind))
    for loan_id, ms, kind, n, total in (await session.exec(q)).all():
        if kind not in books.KINDS:
            orphans.append(books.Difference(ms, "ledger_kind", f"{n} ledger entries of unknown kind {kind!r}"))
        if kind in ("reservation", "release", "instalment") and loan_id is None:
            orphans.append(books.Difference(ms, "ledger_entry_without_loan",
                                            f"{n} {kind} entries name no loan", "0", str(total)))
        if loan_id is not None:
            loan = loans.get(loan_id)
            if loan is None or loan.member_state != ms:
                orphans.append(books.Difference(ms, "ledger_entry_loan_mismatch",
                                                f"{n} {kind} entries name loan {loan_id}, unknown for {ms}"))
            per_loan.setdefault(loan_id, {})[kind] = (int(n), total or ZERO)
    return per_loan, orphans


async def reconcile(session: AsyncSession, *, pre_financing_share: Decimal = Decimal("0.15")) -> books.Report:
    """Recompute every facility's balances from the ledger and compare them with the approved loans and with the
    running totals (facility balances, plan lines drawn).

    Takes a share lock on every facility first (PostgreSQL), so no money writer commits in between and the
    report describes one consistent state."""
    facility_rows = (await session.exec(
        select(FacilityRow).order_by(col(FacilityRow.member_state)).with_for_update(read=True)
        .execution_options(populate_existing=True)
    )).all()
    known = {f.member_state for f in facility_rows}
    bal = await ledger_balances(session)
    active = dict((await session.exec(
        select(LoanRow.member_state, func.sum(LoanRow.amount_eur)).where(LoanRow.status == "active")
        .group_by(col(LoanRow.member_state))
    )).all())
    loans = {row.loan_id: row for row in (await session.exec(select(LoanRow))).all()}
    per_loan, orphans = await _ledger_by_loan(session, loans)
    for ms in sorted(set(bal) - known):
        orphans.append(books.Difference(ms, "ledger_without_facility", "ledger entries for a Member State without "
                                                                        "a facility"))
    cleared_ms = dict((await session.exec(
        select(ClearingRow.member_state, func.sum(ClearingRow.amount)).group_by(col(ClearingRow.member_state)))).all())
    cleared_loan = dict((await session.exec(
        select(ClearingRow.loan_id, func.sum(ClearingRow.amount)).group_by(col(ClearingRow.loan_id)))).all())
    facility_books = [
        books.FacilityBooks(
            member_state=f.member_state, max_eur=f.max_eur, pre_financing_eur=f.pre_financing_eur,
            reserved=summed.reserved, released=summed.released, pre_financing=summed.pre_financing,
            instalments=summed.instalments, active_loans=active.get(f.member_state) or ZERO, totals=Balance.of(f),
            cleared=cleared_ms.get(f.member_state) or ZERO,
        )
        for f in facility_rows
        for summed in (bal.get(f.member_state) or Balance(),)
    ]
    drawn = await draws_of_active_loans(session)
    stored = {(t.member_state, t.category): t.drawn_eur for t in (await session.exec(select(PlanDrawTotalRow))).all()}
    plan_books = [books.PlanLineBooks(ms, cat, drawn.get((ms, cat), ZERO), stored.get((ms, cat), ZERO))
                  for ms, cat in sorted(drawn.keys() | stored.keys())]
    loan_books = []
    for loan in sorted(loans.values(), key=lambda x: x.loan_id):
        kinds = per_loan.get(loan.loan_id, {})
        r_n, r_sum = kinds.get("reservation", (0, ZERO))
        x_n, x_sum = kinds.get("release", (0, ZERO))
        loan_books.append(books.LoanBooks(
            loan_id=loan.loan_id, member_state=loan.member_state, amount=loan.amount_eur, status=loan.status,
            reservations=r_n, reserved=r_sum, releases=x_n, released=x_sum,
            instalments=kinds.get("instalment", (0, ZERO))[1], cleared=cleared_loan.get(loan.loan_id) or ZERO,
        ))
    report = books.compare(checked_at=utcnow(), facilities=facility_books, loans=loan_books, orphans=orphans,
                           pre_financing_share=pre_financing_share, plan_lines=plan_books)
    for d in report.differences:  # loudly: every broken invariant is an error in the log, not only in the report
        log.error("ledger check: %s %s: %s", d.member_state or "-", d.check, d.message,
                  extra={"check": d.check, "member_state": d.member_state, "expected": d.expected, "actual": d.actual})
    return report
