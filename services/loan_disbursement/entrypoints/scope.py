"""The Member State scope of the loan disbursement service, in one place (docs/security.md).

A Member State sees what concerns it: a case (its loan decision, its loans, its dead letters) where it is a
participant or a lender, and its own facility (totals, ledger, plan). Other states' facility totals only when
`LOAN_DISBURSEMENT_OTHER_STATES_TOTALS_VISIBLE` is set (default: closed); another state's ledger and plan never.
Operators and auditors see everything. Every route asks this module, none decides on its own."""

from __future__ import annotations

import json

from fastapi import HTTPException
from sqlalchemy import ColumnElement, exists, or_, true
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.loan_disbursement.adapters.tables import LoanRequestRow, LoanRow
from safe_procurement.shared.contracts import countries
from safe_procurement.shared.kit.auth import Principal


def _codes(ms: str) -> list[str]:
    """Every spelling of a Member State (EL and GR are one state)."""
    return sorted({ms, *(alias for alias, canon in countries.ALIASES.items() if canon == ms)})


def loans_condition(who: Principal) -> ColumnElement[bool]:
    """SQL over `LoanRow`: the loans whose case concerns `who` (a participant of the case, or a lender on it)."""
    ms = who.member_state
    if ms is None:
        return true()
    codes = _codes(ms)
    # participants are stored as a JSON list of codes: '["PL", "LT"]'
    participant = exists().where(
        col(LoanRequestRow.case_id) == col(LoanRow.case_id),
        or_(*(col(LoanRequestRow.participants).contains(f'"{c}"') for c in codes)),
    )
    other = LoanRow.__table__.alias("lender")  # type: ignore[attr-defined]
    lender = exists().where(other.c.case_id == col(LoanRow.case_id), other.c.member_state.in_(codes))
    return or_(participant, lender)


async def case_concerns(session: AsyncSession, who: Principal, case_id: str,
                        participants: list[str] | None = None) -> bool:
    """Whether the case concerns `who`: participant (from its loan request) or lender (one of its loans)."""
    if who.member_state is None:
        return True
    if participants is None:
        row = await session.get(LoanRequestRow, case_id)
        participants = json.loads(row.participants) if row is not None else []
    lenders = (await session.exec(select(LoanRow.member_state).where(LoanRow.case_id == case_id))).all()
    return who.sees([*participants, *lenders])


def facility_readable(who: Principal, ms: str, *, totals_of_others: bool) -> bool:
    """A facility's totals: staff, the state itself, and other states only when the setting opens them."""
    return who.member_state is None or who.member_state == ms or totals_of_others


def own_facility(who: Principal, ms: str, what: str = "SAFE loan facility") -> None:
    """A facility's ledger and plan (case ids, loan ids, amounts, references): staff and the state itself.
    Anyone else: 404, as for a facility that does not exist (nothing is said about another state)."""
    if who.member_state is not None and who.member_state != ms:
        raise HTTPException(404, f"{ms} has no {what}")


async def participants_of(session: AsyncSession, case_id: str) -> set[str] | None:
    """Participants and lenders of a case: who may see the dead letters about it."""
    row = await session.get(LoanRequestRow, case_id)
    found = set(json.loads(row.participants)) if row is not None else set()
    found |= set((await session.exec(select(LoanRow.member_state).where(LoanRow.case_id == case_id))).all())
    return found or None

