"""Reading the ledger: facility locks, balances derived from the entries, plan remainders, reconciliation.

Concurrency: every writer of money (loan decisions, withdrawals, payments, facility and plan changes) first
locks facility rows with SELECT … FOR UPDATE, always in member_state order, and only then reads balances.
On PostgreSQL that serializes writers per facility across replicas (READ COMMITTED: each statement after the
lock sees every earlier commit); message handlers lock *all* facilities so that one batch transaction that
handles several cases still acquires its locks in one global order (no deadlock). On SQLite the kit's
BEGIN IMMEDIATE makes every transaction a writer holding the database lock; FOR UPDATE is not emitted there."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.loan_disbursement.adapters.tables import (
    FacilityRow,
    LedgerEntry,
    LoanRow,
    PlanDrawRow,
    PlanLineRow,
)
from services.loan_disbursement.domain import reconcile as books
from services.loan_disbursement.domain.money import ZERO
from shared.kit.tables import utcnow


@dataclass(frozen=True)
class Balance:
    reserved: Decimal = ZERO
    released: Decimal = ZERO
    pre_financing: Decimal = ZERO
    instalments: Decimal = ZERO

    @property
    def approved(self) -> Decimal:
        return self.reserved - self.released

    @property
    def disbursed(self) -> Decimal:
        return self.pre_financing + self.instalments


async def lock_facilities(session: AsyncSession, member_states: Iterable[str] | None = None) -> dict[str, FacilityRow]:
    """Lock (FOR UPDATE) the given facilities, or all of them, in member_state order; return them by code."""
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


async def balances(session: AsyncSession, member_states: Iterable[str] | None = None) -> dict[str, Balance]:
    """Per facility: Σ of each kind of ledger entry (missing facilities have all zeros)."""
    q = select(LedgerEntry.member_state, LedgerEntry.kind, func.sum(LedgerEntry.amount)).group_by(
        col(LedgerEntry.member_state), col(LedgerEntry.kind)
    )
    wanted = None if member_states is None else sorted(set(member_states))
    if wanted is not None:
        q = q.where(col(LedgerEntry.member_state).in_(wanted))
    sums: dict[str, dict[str, Decimal]] = {}
    for ms, kind, total in (await session.exec(q)).all():
        sums.setdefault(ms, {})[kind] = total or ZERO
    out = {ms: Balance(**{_FIELD[k]: v for k, v in kinds.items() if k in _FIELD}) for ms, kinds in sums.items()}
    for ms in wanted or []:
        out.setdefault(ms, Balance())
    return out


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
    """What active (not released) loans drew from each plan line."""
    q = (
        select(PlanDrawRow.member_state, PlanDrawRow.category, func.sum(PlanDrawRow.amount_eur))
        .join(LoanRow, col(LoanRow.loan_id) == col(PlanDrawRow.loan_id))
        .where(col(PlanDrawRow.member_state).in_(sorted(set(member_states))), LoanRow.status == "active")
        .group_by(col(PlanDrawRow.member_state), col(PlanDrawRow.category))
    )
    out: dict[str, dict[str, Decimal]] = {}
    for ms, cat, total in (await session.exec(q)).all():
        out.setdefault(ms, {})[cat] = total or ZERO
    return out


async def plan_remaining(session: AsyncSession, member_states: Iterable[str]) -> dict[str, dict[str, Decimal]]:
    wanted = sorted(set(member_states))
    lines, drawn = await plan_lines(session, wanted), await plan_drawn(session, wanted)
    return {
        ms: {cat: amount - drawn.get(ms, {}).get(cat, ZERO) for cat, amount in lines.get(ms, {}).items()}
        for ms in wanted
    }


async def instalments_paid(session: AsyncSession, loan_id: str) -> Decimal:
    q = select(func.sum(LedgerEntry.amount)).where(LedgerEntry.loan_id == loan_id, LedgerEntry.kind == "instalment")
    return (await session.exec(q)).one() or ZERO


async def reconcile(session: AsyncSession, *, pre_financing_share: Decimal = Decimal("0.15")) -> books.Report:
    """Recompute every facility's balances from the ledger and compare them with the approved loans.

    Takes a share lock on every facility first (PostgreSQL), so no money writer commits in between and the
    report describes one consistent state."""
    facility_rows = (await session.exec(
        select(FacilityRow).order_by(col(FacilityRow.member_state)).with_for_update(read=True)
    )).all()
    known = {f.member_state for f in facility_rows}
    bal = await balances(session)
    active = dict((await session.exec(
        select(LoanRow.member_state, func.sum(LoanRow.amount_eur)).where(LoanRow.status == "active")
        .group_by(col(LoanRow.member_state))
    )).all())
    per_loan: dict[str, dict[str, tuple[int, Decimal]]] = {}
    orphans: list[books.Difference] = []
    q = select(LedgerEntry.loan_id, LedgerEntry.member_state, LedgerEntry.kind, func.count(),
               func.sum(LedgerEntry.amount)).group_by(
        col(LedgerEntry.loan_id), col(LedgerEntry.member_state), col(LedgerEntry.kind))
    loans = {row.loan_id: row for row in (await session.exec(select(LoanRow))).all()}
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
    for ms in sorted(set(bal) - known):
        orphans.append(books.Difference(ms, "ledger_without_facility", "ledger entries for a Member State without "
                                                                        "a facility"))
    facility_books = [
        books.FacilityBooks(
            member_state=f.member_state, max_eur=f.max_eur, pre_financing_eur=f.pre_financing_eur,
            reserved=bal.get(f.member_state, Balance()).reserved, released=bal.get(f.member_state, Balance()).released,
            pre_financing=bal.get(f.member_state, Balance()).pre_financing,
            instalments=bal.get(f.member_state, Balance()).instalments,
            active_loans=active.get(f.member_state) or ZERO,
        )
        for f in facility_rows
    ]
    loan_books = []
    for loan in sorted(loans.values(), key=lambda x: x.loan_id):
        kinds = per_loan.get(loan.loan_id, {})
        r_n, r_sum = kinds.get("reservation", (0, ZERO))
        x_n, x_sum = kinds.get("release", (0, ZERO))
        loan_books.append(books.LoanBooks(
            loan_id=loan.loan_id, member_state=loan.member_state, amount=loan.amount_eur, status=loan.status,
            reservations=r_n, reserved=r_sum, releases=x_n, released=x_sum,
            instalments=kinds.get("instalment", (0, ZERO))[1],
        ))
    return books.compare(checked_at=utcnow(), facilities=facility_books, loans=loan_books, orphans=orphans,
                         pre_financing_share=pre_financing_share)
