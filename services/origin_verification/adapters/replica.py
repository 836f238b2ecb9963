"""The partner-registry replica: upserts from the registry's events (highest version wins, history kept),
its readiness, and the reference data the engine reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.origin_verification.adapters.tables import (
    ReplicaAgreement,
    ReplicaAgreementVersion,
    ReplicaCountry,
    ReplicaCountryVersion,
    ReplicaPublication,
)
from safe_procurement.services.origin_verification.domain.reference import (
    Agreement,
    CountryRecord,
    Membership,
    ReferenceData,
)
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import countries as codes
from safe_procurement.shared.kit.db import FixedQuery
from safe_procurement.shared.kit.tables import utcnow


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    registry_version: int | None = None
    seed_version: str | None = None
    countries: int = 0
    agreements: int = 0
    expected_countries: int | None = None
    expected_agreements: int | None = None
    # changes whenever the replica does (versions only grow): the key under which its data may be cached
    fingerprint: tuple[object, ...] = ()

    def public(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("fingerprint", None)
        return out


async def _current(session: AsyncSession, table: Any, key: str) -> Any:
    """The stored record an upsert compares its version with, read with its row lock (PostgreSQL) and afresh: two
    replicas of this service can apply two versions of one record at once (the consumer group hands consecutive
    entries to different consumers). The second waits for the first one's commit and compares with what it wrote;
    without the lock an older version could read the record before a newer one committed and then overwrite it.
    A record not there yet has no row to lock: two first versions collide on the primary key, and the loser's batch
    is redone, reading the winner's row. (SQLite: the writer already holds the database's write lock.)"""
    return await session.get(table, key, with_for_update=True, populate_existing=True)


async def upsert_country(session: AsyncSession, event: contracts.CountryStatusChanged) -> bool:
    """Keep the highest version of the country record; every version goes to the history. True if applied."""
    code = codes.canonical(event.country)
    payload = event.model_dump_json()
    if await session.get(ReplicaCountryVersion, (code, event.version)) is None:
        session.add(ReplicaCountryVersion(country=code, version=event.version, payload=payload))
    row = await _current(session, ReplicaCountry, code)
    if row is not None and row.version >= event.version:
        return False
    memberships = json.dumps([m.model_dump(mode="json") for m in event.memberships])
    if row is None:
        row = ReplicaCountry(country=code, name=event.name, memberships=memberships,
                             partnership_level=event.partnership_level, version=event.version,
                             event_id=str(event.event_id))
    else:
        row.name, row.memberships, row.partnership_level = event.name, memberships, event.partnership_level
        row.version, row.event_id, row.updated_at = event.version, str(event.event_id), utcnow()
    session.add(row)
    await session.flush()
    return True


async def upsert_agreement(session: AsyncSession, event: contracts.PartnerAgreementRecorded) -> bool:
    """Keep the highest version of the agreement; every version goes to the history. True if applied."""
    if await session.get(ReplicaAgreementVersion, (event.agreement_id, event.version)) is None:
        session.add(ReplicaAgreementVersion(agreement_id=event.agreement_id, version=event.version,
                                            payload=event.model_dump_json()))
    row = await _current(session, ReplicaAgreement, event.agreement_id)
    if row is not None and row.version >= event.version:
        await session.flush()
        return False
    values = dict(
        version=event.version, country=codes.canonical(event.country), kind=event.kind, status=event.status,
        effective_from=event.effective_from, effective_to=event.effective_to,
        content_counts_as_eligible=event.content_counts_as_eligible,
        max_content_share=str(event.max_content_share) if event.max_content_share is not None else None,
        entities_eligible=event.entities_eligible, source=event.source, confidence=event.confidence,
        event_id=str(event.event_id), updated_at=utcnow(),
    )
    if row is None:
        row = ReplicaAgreement(agreement_id=event.agreement_id, **values)
    else:
        for k, v in values.items():
            setattr(row, k, v)
    session.add(row)
    await session.flush()
    return True


async def record_publication(session: AsyncSession, event: contracts.ReferenceDataPublished) -> bool:
    if await session.get(ReplicaPublication, event.registry_version) is not None:
        return False
    session.add(ReplicaPublication(
        registry_version=event.registry_version, seed_version=event.seed_version, countries=event.countries,
        agreements=event.agreements, event_id=str(event.event_id), occurred_at=event.occurred_at,
    ))
    await session.flush()
    return True


def _latest(column: Any) -> Any:
    return select(column).order_by(col(ReplicaPublication.registry_version).desc()).limit(1).scalar_subquery()


# one round trip: the latest publication and the replica's counts and version sums
_READINESS = FixedQuery(select(  # type: ignore[call-overload]
    _latest(ReplicaPublication.registry_version), _latest(ReplicaPublication.seed_version),
    _latest(ReplicaPublication.countries), _latest(ReplicaPublication.agreements),
    select(func.count()).select_from(ReplicaCountry).scalar_subquery(),
    select(func.coalesce(func.sum(col(ReplicaCountry.version)), 0)).scalar_subquery(),
    select(func.count()).select_from(ReplicaAgreement).scalar_subquery(),
    select(func.coalesce(func.sum(col(ReplicaAgreement.version)), 0)).scalar_subquery(),
))


async def readiness(session: AsyncSession) -> Readiness:
    """Ready once a publication was processed and the replica holds at least as many records as it announced."""
    (registry_version, seed_version, announced_countries, announced_agreements, n_countries, country_versions,
     n_agreements, agreement_versions) = await _READINESS.one(session)
    if registry_version is None:
        return Readiness(False, "no ReferenceDataPublished received from the partner registry yet",
                         countries=n_countries, agreements=n_agreements)
    ok = n_countries >= announced_countries and n_agreements >= announced_agreements
    reason = ("replica complete" if ok else
              f"replica incomplete: {n_countries}/{announced_countries} countries, "
              f"{n_agreements}/{announced_agreements} agreements")
    return Readiness(ok, reason, registry_version, seed_version, n_countries, n_agreements, announced_countries,
                     announced_agreements, fingerprint=(registry_version, n_countries, int(country_versions),
                                                        n_agreements, int(agreement_versions)))


def _membership(raw: dict[str, object]) -> Membership:
    frm, to = raw.get("effective_from"), raw.get("effective_to")
    return Membership(str(raw["group"]), date.fromisoformat(str(frm)) if frm else None,
                      date.fromisoformat(str(to)) if to else None)


async def load_reference(session: AsyncSession, registry_version: int | None = None) -> ReferenceData:
    """The whole replica as domain reference data (a few hundred rows at most)."""
    countries = {
        r.country: CountryRecord(r.country, r.name, tuple(_membership(m) for m in json.loads(r.memberships)),
                                 r.partnership_level, r.version)
        for r in (await session.exec(select(ReplicaCountry))).all()
    }
    agreements = tuple(
        Agreement(
            agreement_id=a.agreement_id, country=a.country, status=a.status, effective_from=a.effective_from,
            effective_to=a.effective_to, content_counts_as_eligible=a.content_counts_as_eligible,
            max_content_share=Decimal(a.max_content_share) if a.max_content_share is not None else None,
            entities_eligible=a.entities_eligible, kind=a.kind, version=a.version, source=a.source,
            confidence=a.confidence,
        )
        for a in (await session.exec(select(ReplicaAgreement).order_by(col(ReplicaAgreement.agreement_id)))).all()
    )
    return ReferenceData(countries, agreements, registry_version)


async def agreement_history(session: AsyncSession, country: str | None = None) -> list[dict[str, object]]:
    q = select(ReplicaAgreementVersion).order_by(col(ReplicaAgreementVersion.agreement_id),
                                                 col(ReplicaAgreementVersion.version))
    rows = (await session.exec(q)).all()
    out = [json.loads(r.payload) | {"recorded_at": r.recorded_at.isoformat()} for r in rows]
    if country:
        out = [r for r in out if codes.canonical(str(r.get("country", ""))) == codes.canonical(country)]
    return out
