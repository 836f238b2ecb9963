"""Storage tables of the applications service (created by its Alembic migrations)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import foreign, relationship
from sqlmodel import Field, SQLModel

from safe_procurement.shared.kit.tables import TS, utcnow


class CaseRow(SQLModel, table=True):
    __tablename__ = "cases"
    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True)
    reference: str = Field(unique=True)
    status: str
    lead_member_state: str
    proposal_hash: str
    proposal: str
    financing_requested: bool
    verification: str | None = None
    verification_request_id: str | None = None
    loan: str | None = None
    status_since: datetime = Field(default_factory=utcnow, sa_type=TS)
    created_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class CaseParticipant(SQLModel, table=True):
    __tablename__ = "case_participants"
    case_seq: int | None = Field(default=None, primary_key=True)
    country: str = Field(primary_key=True)


# Write-only (never loaded: lazy="raise"): a new case gets its participant rows in the same flush, which fills
# in the case's seq, so adding a case needs no flush of its own.
CaseRow.__mapper__.add_property("participants", relationship(
    CaseParticipant, primaryjoin=CaseRow.seq == foreign(CaseParticipant.case_seq), lazy="raise", uselist=True,
    cascade="save-update", passive_deletes=True))


class TimelineRow(SQLModel, table=True):
    __tablename__ = "timeline"
    id: int | None = Field(default=None, primary_key=True)
    case_id: str
    type: str
    at: datetime = Field(sa_type=TS)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    event_id: str | None = None
    causation_id: str | None = None
    service: str
    summary: str


class ProposalRevisionRow(SQLModel, table=True):
    """One numbered revision of a case's proposal (migration 0002_i20_proposal_revisions): revision 1 is the
    proposal as submitted, written when the case is first amended; every amendment adds the next. Append-only."""

    __tablename__ = "proposal_revisions"
    case_id: str = Field(primary_key=True)
    revision: int = Field(primary_key=True)
    proposal: str
    changed: str = "[]"  # JSON [str]: the top-level fields that differ from the revision before
    amended_by: str
    reason: str
    at: datetime = Field(default_factory=utcnow, sa_type=TS)
