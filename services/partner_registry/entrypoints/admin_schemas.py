"""HTTP schemas of the partner registry (never the tables, never the wire events)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from safe_procurement.shared.contracts import countries
from safe_procurement.shared.contracts.decimals import ShareOut
from safe_procurement.shared.kit.web import UtcDateTime


def _country(value: str) -> str:
    if not countries.is_known(value):
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (EL/GR, UK/GB and XK accepted)")
    return countries.canonical(value)


class AgreementCreate(BaseModel):
    """An Art. 17 participation agreement to record (effective-dated)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2; EL/GR and UK/GB are aliases")
    kind: Literal["safe_participation"] = Field(description="Agreement kind")
    effective_from: date = Field(description="First day in force (contracts signed on or after it)")
    effective_to: date | None = Field(default=None, description="First day no longer in force (exclusive); null: open")
    content_counts_as_eligible: bool = Field(description="The country's components count as eligible origin")
    max_content_share: Decimal | None = Field(
        default=None, description="Cap on the country's share of component cost, a decimal string in [0, 1]; null: none set"
    )
    entities_eligible: bool = Field(description="The country's companies may act as contractors")
    source: str = Field(min_length=1, max_length=2000, description="Where the fact comes from (decision, OJ reference…)")
    confidence: Literal["official", "secondary", "assumed"] = Field(default="official", description="How sure the source is")
    unconfirmed: bool = Field(default=False, description="True when date or terms are still assumed")
    note: str | None = Field(default=None, max_length=2000, description="Free text shown with the record")

    @field_validator("country")
    @classmethod
    def _known_country(cls, v: str) -> str:
        return _country(v)

    @field_validator("max_content_share")
    @classmethod
    def _share(cls, v: Decimal | None) -> Decimal | None:
        if v is None:
            return v
        if not v.is_finite() or v < 0 or v > 1:
            raise ValueError("must be a decimal between 0 and 1")
        exponent = v.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -10:
            raise ValueError("at most 10 decimal places")
        return v

    @field_validator("effective_to")
    @classmethod
    def _after_start(cls, v: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("effective_from")
        if v is not None and start is not None and v <= start:
            raise ValueError("effective_to must be after effective_from (the period is [from, to))")
        return v


class AgreementCorrection(AgreementCreate):
    """A correction: the full corrected terms plus why. It becomes a new version; nothing is overwritten."""

    country: str | None = Field(  # type: ignore[assignment]
        default=None, min_length=2, max_length=2, description="Must be the agreement's country (defaults to it)"
    )
    kind: Literal["safe_participation"] = Field(default="safe_participation", description="Agreement kind")
    status: Literal["in_force", "revoked", "none", "negotiating"] = Field(
        default="in_force", description="in_force, or revoked/none/negotiating to withdraw it"
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why the record is corrected (audited)")

    @field_validator("country")
    @classmethod
    def _known_country(cls, v: str | None) -> str | None:  # type: ignore[override]
        return None if v is None else _country(v)


class AgreementPublic(BaseModel):
    id: str = Field(description="Agreement id, stable across versions")
    version: int
    current: bool = Field(description="This is the latest version of the agreement")
    registry_version: int = Field(description="The registry publication this version belongs to")
    country: str
    kind: str
    status: str = Field(description="in_force | none | negotiating | revoked | superseded")
    effective_from: date | None
    effective_to: date | None
    content_counts_as_eligible: bool
    max_content_share: ShareOut | None
    entities_eligible: bool
    source: str
    confidence: str
    unconfirmed: bool
    note: str | None
    origin: str = Field(description="seed | operator")
    supersedes: list[str] = Field(description="Placeholders this version superseded")
    recorded_by: str
    recorded_at: UtcDateTime
    reason: str | None


class MembershipPublic(BaseModel):
    group: str
    effective_from: date | None
    effective_to: date | None
    source: str
    confidence: str
    in_force: bool = Field(description="In force on the requested date")


class PartnershipPublic(BaseModel):
    level: int = Field(description="EU partnership strategy level 1-3: context, never a rule")
    note: str | None
    source: str
    confidence: str


class SdpPublic(BaseModel):
    signed_on: date | None
    source: str
    confidence: str


class CountryPublic(BaseModel):
    code: str = Field(description="Canonical code (EL for Greece, GB for the United Kingdom)")
    on: date = Field(description="The date the groups and agreements are evaluated on")
    known: bool = Field(description="The registry holds a record for the country; a valid code without one has no group")
    name: str | None
    groups: list[str] = Field(description="Groups the country belongs to on that date")
    sdp: SdpPublic | None = Field(description="Security and Defence Partnership in force on that date")
    partnership: PartnershipPublic | None
    agreements: list[AgreementPublic] = Field(description="Participation agreements in force on that date")
    agreement_records: list[AgreementPublic] = Field(
        description="Latest version of every agreement record of the country, whatever its status or dates"
    )
    memberships: list[MembershipPublic] = Field(description="Every dated membership")
    version: int | None = Field(description="Version of the country record")
    registry_version: int = Field(description="The registry publication the answer reflects")
    source: str | None
    confidence: str | None


class HistoryEntry(BaseModel):
    at: UtcDateTime
    kind: Literal["country_version", "agreement_version", "audit"]
    actor: str
    action: str
    target: str
    registry_version: int | None
    version: int | None
    source: str | None
    reason: str | None
    details: dict[str, Any] | None


class History(BaseModel):
    country: str | None
    items: list[HistoryEntry]
