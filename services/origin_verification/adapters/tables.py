"""Storage tables of the origin verification service (created by its Alembic migrations)."""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel

from safe_procurement.shared.kit.tables import TS, utcnow


class ReportRow(SQLModel, table=True):
    """One verification report; a re-verification adds a row, the old ones stay."""

    __tablename__ = "verification_reports"
    id: int | None = Field(default=None, primary_key=True)
    case_id: str
    request_event_id: str = Field(unique=True)
    request_type: str
    event_id: str  # the OriginVerificationCompleted that carried it
    outcome: str
    rules_version: str
    registry_version: int | None = None
    contract_signed_on: date
    participants: str  # JSON list, for member-state scoping
    result: str  # VerificationResult JSON
    proposal: str  # the proposal as verified: declared origin and evidence per component (R-ORIG-5)
    created_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class ReplicaCountry(SQLModel, table=True):
    __tablename__ = "ov_replica_countries"
    country: str = Field(primary_key=True)
    name: str
    memberships: str  # JSON list of GroupMembership
    partnership_level: int | None = None
    version: int
    event_id: str
    updated_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class ReplicaCountryVersion(SQLModel, table=True):
    __tablename__ = "ov_replica_country_versions"
    country: str = Field(primary_key=True)
    version: int = Field(primary_key=True)
    payload: str
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class ReplicaAgreement(SQLModel, table=True):
    __tablename__ = "ov_replica_agreements"
    agreement_id: str = Field(primary_key=True)
    version: int
    country: str = Field(index=True)
    kind: str
    status: str
    effective_from: date | None = None
    effective_to: date | None = None
    content_counts_as_eligible: bool
    max_content_share: str | None = None  # decimal string: exact on SQLite and PostgreSQL alike
    entities_eligible: bool
    source: str
    confidence: str
    event_id: str
    updated_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class ReplicaAgreementVersion(SQLModel, table=True):
    __tablename__ = "ov_replica_agreement_versions"
    agreement_id: str = Field(primary_key=True)
    version: int = Field(primary_key=True)
    payload: str
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class ReplicaPublication(SQLModel, table=True):
    __tablename__ = "ov_replica_publications"
    registry_version: int = Field(primary_key=True)
    seed_version: str
    countries: int
    agreements: int
    event_id: str
    occurred_at: datetime = Field(sa_type=TS)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=TS)
