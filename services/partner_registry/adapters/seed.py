"""The seed file (a reviewed data file, not code): parsed, validated, and mapped to domain records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from safe_procurement.services.partner_registry.domain import registry
from safe_procurement.shared.contracts import countries
from safe_procurement.shared.contracts.events import GROUPS

DEFAULT_SEED = Path(__file__).resolve().parent.parent / "seed" / "registry.yaml"

Confidence = Literal["official", "secondary", "assumed"]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedMembership(_Row):
    group: str
    effective_from: date | None = None
    effective_to: date | None = None
    source: str = Field(min_length=1)
    confidence: Confidence

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        if v not in GROUPS:
            raise ValueError(f"unknown group {v!r}; groups are {', '.join(GROUPS)}")
        return v

    @model_validator(mode="after")
    def _period(self) -> SeedMembership:
        registry.check_period(self.effective_from, self.effective_to)
        return self


class SeedPartnership(_Row):
    level: int = Field(ge=1, le=3)
    note: str | None = None
    source: str = Field(min_length=1)
    confidence: Confidence


class SeedCountry(_Row):
    name: str = Field(min_length=1)
    source: str = Field(min_length=1)
    confidence: Confidence
    partnership: SeedPartnership | None = None
    memberships: list[SeedMembership] = Field(default_factory=list)


class SeedAgreement(_Row):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9\-]*$")
    country: str
    kind: Literal["safe_participation"]
    status: str
    effective_from: date | None = None
    effective_to: date | None = None
    content_counts_as_eligible: bool
    max_content_share: str | None = Field(default=None, description="A decimal string (quoted), never a float")
    entities_eligible: bool
    source: str = Field(min_length=1)
    confidence: Confidence
    unconfirmed: bool = False
    note: str | None = None

    @field_validator("max_content_share", mode="before")
    @classmethod
    def _share_is_text(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str):
            raise ValueError("write shares as quoted decimal strings (e.g. \"0.50\"), never as YAML numbers")
        return v


class SeedFile(_Row):
    seed_version: str = Field(min_length=1)
    sources: dict[str, str] = Field(default_factory=dict, description="Named sources (YAML anchors)")
    countries: dict[str, SeedCountry]
    agreements: list[SeedAgreement] = Field(default_factory=list)


@dataclass(frozen=True)
class Seed:
    version: str
    countries: dict[str, registry.CountryRecord]
    agreements: dict[str, registry.AgreementTerms]


class SeedError(ValueError):
    pass


def _code(raw: str, where: str) -> str:
    if not countries.is_known(raw):
        raise SeedError(f"{where}: {raw!r} is not an ISO 3166-1 alpha-2 code")
    code = countries.canonical(raw)
    if code != raw:
        raise SeedError(f"{where}: write the canonical code {code!r}, not the alias {raw!r}")
    return code


def _share(raw: str | None, where: str) -> Decimal | None:
    if raw is None:
        return None
    try:
        share = Decimal(raw)
    except InvalidOperation:
        raise SeedError(f"{where}: max_content_share {raw!r} is not a decimal") from None
    return share


def parse(data: Any) -> Seed:
    """Validate a parsed seed document and map it to domain records."""
    doc = SeedFile.model_validate(data)
    records: dict[str, registry.CountryRecord] = {}
    for raw, c in doc.countries.items():
        code = _code(str(raw), f"countries.{raw}")
        records[code] = registry.CountryRecord(
            code=code,
            name=c.name,
            memberships=tuple(
                registry.Membership(
                    group=m.group, effective_from=m.effective_from, effective_to=m.effective_to,
                    source=m.source, confidence=m.confidence,
                )
                for m in c.memberships
            ),
            partnership=registry.Partnership(
                level=c.partnership.level, note=c.partnership.note, source=c.partnership.source,
                confidence=c.partnership.confidence,
            ) if c.partnership else None,
            source=c.source,
            confidence=c.confidence,
        ).normalized()
    agreements: dict[str, registry.AgreementTerms] = {}
    for i, a in enumerate(doc.agreements):
        where = f"agreements[{i}] ({a.id})"
        if a.id in agreements:
            raise SeedError(f"{where}: duplicate agreement id")
        code = _code(a.country, where)
        if code not in records:
            raise SeedError(f"{where}: country {code} has no country record in the seed")
        terms = registry.AgreementTerms(
            country=code, kind=a.kind, status=a.status, effective_from=a.effective_from,
            effective_to=a.effective_to, content_counts_as_eligible=a.content_counts_as_eligible,
            max_content_share=_share(a.max_content_share, where), entities_eligible=a.entities_eligible,
            source=a.source, confidence=a.confidence, unconfirmed=a.unconfirmed, note=a.note,
        )
        try:
            terms.validate()
        except registry.InvalidTerms as e:
            raise SeedError(f"{where}: {e.field}: {e}") from None
        agreements[a.id] = terms
    confirmed = [(i, t) for i, t in agreements.items() if t.status == registry.IN_FORCE]
    for n, (id_a, a_terms) in enumerate(confirmed):
        for id_b, b_terms in confirmed[n + 1:]:
            if (a_terms.country, a_terms.kind) == (b_terms.country, b_terms.kind) and registry.periods_overlap(
                a_terms.effective_from, a_terms.effective_to, b_terms.effective_from, b_terms.effective_to
            ):
                raise SeedError(f"agreements {id_a} and {id_b} overlap")
    return Seed(version=doc.seed_version, countries=records, agreements=agreements)


def load(path: str | Path | None = None) -> Seed:
    """Read and validate the seed file (the packaged one by default)."""
    p = Path(path) if path else DEFAULT_SEED
    with p.open(encoding="utf-8") as f:
        return parse(yaml.safe_load(f))
