"""Storage tables of the loan disbursement service (created by its Alembic migrations).

`ledger_entries` is append-only (database triggers refuse UPDATE and DELETE); every balance is derived
from it. The other tables describe facilities, plans, decisions and loans.

Running totals (migration 0002): `facilities.reserved_eur` … `instalments_paid_eur` (Σ of each kind of ledger
entry of the facility) and `plan_draw_totals` (Σ of what active loans drew from each plan line) are kept by
database triggers, in the transaction that writes the entry, draw or loan status; the application only reads
them (a decision reads a few rows instead of aggregating the ledger). The reconciliation checks them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from safe_procurement.services.loan_disbursement.adapters.types import Money
from safe_procurement.services.loan_disbursement.domain.money import ZERO
from safe_procurement.shared.kit.tables import TS, utcnow


class FacilityRow(SQLModel, table=True):
    __tablename__ = "facilities"
    member_state: str = Field(primary_key=True, max_length=2)
    max_eur: Decimal = Field(sa_type=Money())
    tentative_eur: Decimal | None = Field(default=None, sa_type=Money())
    council_max_eur: Decimal | None = Field(default=None, sa_type=Money())
    pre_financing_eur: Decimal | None = Field(default=None, sa_type=Money())
    suspended: bool = False
    suspended_reason: str | None = None
    source: str = ""
    confidence: str = "assumed"
    notes: str = ""
    supports_ukraine: bool = False
    plan_source: str = ""
    plan_version: int = 1
    # L-8 lifecycle (migration 0003): pending | decided | agreement_signed | suspended | closed; NULL until the
    # service fills it from the seed at start
    status: str | None = Field(default=None, max_length=20)
    status_before_suspension: str | None = Field(default=None, max_length=20)
    status_changed_on: date | None = None
    status_reference: str | None = None
    agreement_signed_on: date | None = None
    agreement_reference: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    # running totals of the facility's ledger entries, by kind: written by triggers only (never by the ORM, which
    # updates just the attributes it changed); read them under the facility lock, from a fresh SELECT
    reserved_eur: Decimal = Field(default=ZERO, sa_type=Money())
    released_eur: Decimal = Field(default=ZERO, sa_type=Money())
    pre_financing_paid_eur: Decimal = Field(default=ZERO, sa_type=Money())
    instalments_paid_eur: Decimal = Field(default=ZERO, sa_type=Money())


class PlanLineRow(SQLModel, table=True):
    __tablename__ = "plan_lines"
    member_state: str = Field(primary_key=True, foreign_key="facilities.member_state")
    category: str = Field(primary_key=True)
    amount_eur: Decimal = Field(sa_type=Money())


class LoanRequestRow(SQLModel, table=True):
    """One decision per case (the primary key): a second request for the case never decides again."""

    __tablename__ = "loan_requests"
    case_id: str = Field(primary_key=True)
    event_id: str
    reference: str
    status: str  # approved | rejected
    verification_outcome: str
    requested: str  # JSON [{"member_state", "amount_eur"}]
    categories: str  # JSON list
    participants: str  # JSON list
    reasons: str  # JSON [{"member_state", "rule", "message"}]
    # JSON [str]: every assumption the decision used (migration 0003; NULL/absent: none)
    assumptions: str | None = Field(default=None, sa_column_kwargs={"server_default": "[]"})
    decided_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    withdrawn_at: datetime | None = Field(default=None, sa_type=TS)


class LoanRow(SQLModel, table=True):
    __tablename__ = "loans"
    __table_args__ = (sa.UniqueConstraint("case_id", "member_state", name="uq_loans_case_member_state"),)
    loan_id: str = Field(primary_key=True)
    case_id: str = Field(foreign_key="loan_requests.case_id")
    member_state: str = Field(foreign_key="facilities.member_state")
    amount_eur: Decimal = Field(sa_type=Money())
    status: str = "active"  # active | released
    approved_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    released_at: datetime | None = Field(default=None, sa_type=TS)


class PlanDrawRow(SQLModel, table=True):
    """What an approved loan took from each line of its Member State's investment plan."""

    __tablename__ = "plan_draws"
    loan_id: str = Field(primary_key=True, foreign_key="loans.loan_id")
    category: str = Field(primary_key=True)
    member_state: str
    amount_eur: Decimal = Field(sa_type=Money())


class PlanDrawTotalRow(SQLModel, table=True):
    """Running total per (Member State, category): Σ plan_draws of the loans that are active. Written by
    triggers only (on plan_draws, and on loans when a status changes); rows stay when they reach zero."""

    __tablename__ = "plan_draw_totals"
    member_state: str = Field(primary_key=True)
    category: str = Field(primary_key=True)
    drawn_eur: Decimal = Field(default=ZERO, sa_type=Money())


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"
    id: int | None = Field(default=None, primary_key=True)
    member_state: str = Field(foreign_key="facilities.member_state")
    case_id: str | None = None
    loan_id: str | None = Field(default=None, foreign_key="loans.loan_id")
    # reservation | release | pre_financing | instalment; clearing (pre-financing cleared against a loan, L-9) and
    # status (a lifecycle change, L-8, amount 0) have no running total
    kind: str
    amount: Decimal = Field(sa_type=Money())
    at: datetime = Field(default_factory=utcnow, sa_type=TS)
    reason: str = ""
    requested_on: date | None = None
    actor: str = "loan_disbursement"
    event_id: str | None = None  # the event that caused the entry, if any


class CaseWithdrawalRow(SQLModel, table=True):
    """A withdrawn case: released exactly once; a later loan request for it is rejected."""

    __tablename__ = "case_withdrawals"
    case_id: str = Field(primary_key=True)
    event_id: str
    reason: str
    withdrawn_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    released_eur: Decimal = Field(sa_type=Money())


class FacilityStatusChangeRow(SQLModel, table=True):
    """One lifecycle change of a facility (L-8), append-only: the facility's status history."""

    __tablename__ = "facility_status_changes"
    id: int | None = Field(default=None, primary_key=True)
    member_state: str = Field(foreign_key="facilities.member_state")
    from_status: str | None = None
    to_status: str
    effective_on: date | None = None
    reference: str | None = None
    reason: str
    actor: str
    at: datetime = Field(default_factory=utcnow, sa_type=TS)


class ClearingRow(SQLModel, table=True):
    """Pre-financing cleared against a loan with one instalment (L-9), append-only; keyed by the instalment's
    ledger entry."""

    __tablename__ = "pre_financing_clearings"
    ledger_entry_id: int = Field(primary_key=True, foreign_key="ledger_entries.id")
    member_state: str = Field(foreign_key="facilities.member_state")
    loan_id: str = Field(foreign_key="loans.loan_id")
    amount: Decimal = Field(sa_type=Money())
    at: datetime = Field(default_factory=utcnow, sa_type=TS)
