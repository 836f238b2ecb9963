"""Storage tables of the partner registry (created by its Alembic migrations).

Rows are never updated: each change is a new version row. `registry_version` is the publication the
version belongs to, so the registry can be shown as it stood at any earlier publication."""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel

from safe_procurement.shared.kit.tables import TS, utcnow


class CountryVersionRow(SQLModel, table=True):
    __tablename__ = "country_versions"
    id: int | None = Field(default=None, primary_key=True)
    country: str
    version: int
    registry_version: int
    name: str
    memberships: str = Field(description="JSON list of dated group memberships")
    partnership_level: int | None = None
    partnership: str | None = Field(default=None, description="JSON: level, note, source, confidence")
    source: str
    confidence: str
    origin: str = Field(description="seed | operator")
    recorded_by: str
    reason: str | None = None
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class AgreementVersionRow(SQLModel, table=True):
    __tablename__ = "agreement_versions"
    id: int | None = Field(default=None, primary_key=True)
    agreement_id: str
    version: int
    registry_version: int
    country: str
    kind: str
    status: str
    effective_from: date | None = None
    effective_to: date | None = None
    content_counts_as_eligible: bool
    # a decimal string: exact on SQLite too (its NUMERIC goes through floats)
    max_content_share: str | None = None
    entities_eligible: bool
    source: str
    confidence: str
    unconfirmed: bool = False
    note: str | None = None
    origin: str = Field(description="seed | operator")
    supersedes: str | None = Field(default=None, description="JSON list of agreement ids this version superseded")
    recorded_by: str
    reason: str | None = None
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class RegistryMetaRow(SQLModel, table=True):
    """One row: the registry's publication counter. Writers lock it, which serialises every registry write."""

    __tablename__ = "registry_meta"
    id: int = Field(default=1, primary_key=True)
    registry_version: int = 0
    seed_version: str = ""
    countries: int = 0
    agreements: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=TS)
