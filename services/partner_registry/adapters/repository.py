"""Version rows ⇄ domain records, the queries the registry needs, and the mapping to wire events."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.partner_registry.adapters.tables import (
    AgreementVersionRow,
    CountryVersionRow,
    RegistryMetaRow,
)
from safe_procurement.services.partner_registry.domain import registry
from safe_procurement.shared import contracts
from safe_procurement.shared.kit.uow import UnitOfWork

# --- rows ⇄ domain --------------------------------------------------------------------------------


def _day(v: str | None) -> date | None:
    return date.fromisoformat(v) if v else None


def memberships_json(record: registry.CountryRecord) -> str:
    return json.dumps([
        {"group": m.group, "effective_from": m.effective_from.isoformat() if m.effective_from else None,
         "effective_to": m.effective_to.isoformat() if m.effective_to else None, "source": m.source,
         "confidence": m.confidence}
        for m in record.memberships
    ])


def country_of(row: CountryVersionRow) -> registry.CountryRecord:
    p = json.loads(row.partnership) if row.partnership else None
    return registry.CountryRecord(
        code=row.country,
        name=row.name,
        memberships=tuple(
            registry.Membership(group=m["group"], effective_from=_day(m["effective_from"]),
                                effective_to=_day(m["effective_to"]), source=m["source"], confidence=m["confidence"])
            for m in json.loads(row.memberships)
        ),
        partnership=registry.Partnership(level=p["level"], note=p.get("note"), source=p["source"],
                                         confidence=p["confidence"]) if p else None,
        source=row.source,
        confidence=row.confidence,
    )


def country_row(
    record: registry.CountryRecord, *, version: int, registry_version: int, origin: str, recorded_by: str,
    reason: str | None = None,
) -> CountryVersionRow:
    p = record.partnership
    return CountryVersionRow(
        country=record.code, version=version, registry_version=registry_version, name=record.name,
        memberships=memberships_json(record), partnership_level=p.level if p else None,
        partnership=json.dumps({"level": p.level, "note": p.note, "source": p.source, "confidence": p.confidence})
        if p else None,
        source=record.source, confidence=record.confidence, origin=origin, recorded_by=recorded_by, reason=reason,
    )


def terms_of(row: AgreementVersionRow) -> registry.AgreementTerms:
    return registry.AgreementTerms(
        country=row.country, kind=row.kind, status=row.status, effective_from=row.effective_from,
        effective_to=row.effective_to, content_counts_as_eligible=row.content_counts_as_eligible,
        max_content_share=Decimal(row.max_content_share) if row.max_content_share is not None else None,
        entities_eligible=row.entities_eligible, source=row.source, confidence=row.confidence,
        unconfirmed=row.unconfirmed, note=row.note,
    )


def agreement_of(row: AgreementVersionRow) -> registry.Agreement:
    return registry.Agreement(id=row.agreement_id, version=row.version, terms=terms_of(row), origin=row.origin)


def agreement_row(
    agreement_id: str, terms: registry.AgreementTerms, *, version: int, registry_version: int, origin: str,
    recorded_by: str, reason: str | None = None, supersedes: list[str] | None = None,
) -> AgreementVersionRow:
    return AgreementVersionRow(
        agreement_id=agreement_id, version=version, registry_version=registry_version, country=terms.country,
        kind=terms.kind, status=terms.status, effective_from=terms.effective_from, effective_to=terms.effective_to,
        content_counts_as_eligible=terms.content_counts_as_eligible,
        max_content_share=str(terms.max_content_share) if terms.max_content_share is not None else None,
        entities_eligible=terms.entities_eligible, source=terms.source, confidence=terms.confidence,
        unconfirmed=terms.unconfirmed, note=terms.note, origin=origin,
        supersedes=json.dumps(supersedes) if supersedes else None, recorded_by=recorded_by, reason=reason,
    )


# --- queries --------------------------------------------------------------------------------------


async def lock_meta(session: AsyncSession) -> RegistryMetaRow:
    """The counter row, locked for this transaction: registry writes happen one at a time."""
    meta = (await session.exec(select(RegistryMetaRow).where(RegistryMetaRow.id == 1).with_for_update())).first()
    if meta is None:  # the migration inserts it; a hand-made database may lack it
        meta = RegistryMetaRow(id=1)
        session.add(meta)
        await session.flush()
    return meta


async def meta(session: AsyncSession) -> RegistryMetaRow:
    row = (await session.exec(select(RegistryMetaRow).where(RegistryMetaRow.id == 1))).first()
    return row or RegistryMetaRow(id=1)


async def country_rows(
    session: AsyncSession, *, country: str | None = None, as_of: int | None = None
) -> list[CountryVersionRow]:
    q = select(CountryVersionRow)
    if country is not None:
        q = q.where(CountryVersionRow.country == country)
    if as_of is not None:
        q = q.where(CountryVersionRow.registry_version <= as_of)
    return list((await session.exec(q.order_by(col(CountryVersionRow.country), col(CountryVersionRow.version)))).all())


async def agreement_rows(
    session: AsyncSession, *, country: str | None = None, agreement_id: str | None = None, as_of: int | None = None
) -> list[AgreementVersionRow]:
    q = select(AgreementVersionRow)
    if country is not None:
        q = q.where(AgreementVersionRow.country == country)
    if agreement_id is not None:
        q = q.where(AgreementVersionRow.agreement_id == agreement_id)
    if as_of is not None:
        q = q.where(AgreementVersionRow.registry_version <= as_of)
    q = q.order_by(col(AgreementVersionRow.agreement_id), col(AgreementVersionRow.version))
    return list((await session.exec(q)).all())


def latest_countries(rows: list[CountryVersionRow]) -> dict[str, CountryVersionRow]:
    out: dict[str, CountryVersionRow] = {}
    for r in rows:
        if r.country not in out or r.version > out[r.country].version:
            out[r.country] = r
    return out


def latest_agreements(rows: list[AgreementVersionRow]) -> dict[str, AgreementVersionRow]:
    out: dict[str, AgreementVersionRow] = {}
    for r in rows:
        if r.agreement_id not in out or r.version > out[r.agreement_id].version:
            out[r.agreement_id] = r
    return out


def last_seeded(rows: list[AgreementVersionRow]) -> dict[str, registry.AgreementTerms]:
    out: dict[str, AgreementVersionRow] = {}
    for r in rows:
        if r.origin == registry.SEED and (r.agreement_id not in out or r.version > out[r.agreement_id].version):
            out[r.agreement_id] = r
    return {k: terms_of(v) for k, v in out.items()}


# --- wire -----------------------------------------------------------------------------------------


def country_event(row: CountryVersionRow, *, causation_id: Any = None) -> contracts.CountryStatusChanged:
    record = country_of(row)
    return contracts.CountryStatusChanged(
        correlation_id=f"country:{row.country}", causation_id=causation_id, country=row.country, name=row.name,
        memberships=[
            contracts.GroupMembership(group=m.group, effective_from=m.effective_from, effective_to=m.effective_to,
                                      source=m.source, confidence=m.confidence)
            for m in record.memberships
        ],
        partnership_level=row.partnership_level, version=row.version,
    )


def agreement_event(row: AgreementVersionRow, *, causation_id: Any = None) -> contracts.PartnerAgreementRecorded:
    t = terms_of(row)
    return contracts.PartnerAgreementRecorded(
        correlation_id=row.agreement_id, causation_id=causation_id, agreement_id=row.agreement_id,
        version=row.version, country=t.country, kind=t.kind, effective_from=t.effective_from,
        effective_to=t.effective_to, content_counts_as_eligible=t.content_counts_as_eligible,
        max_content_share=t.max_content_share, entities_eligible=t.entities_eligible, status=t.status,
        source=t.source, confidence=t.confidence, unconfirmed=t.unconfirmed, note=t.note,
    )


# --- the repository and the unit of work ----------------------------------------------------------


class SqlRegistryRepository:
    """Country and agreement version rows and the registry counter, in the unit of work's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_meta(self) -> RegistryMetaRow:
        return await lock_meta(self.session)

    async def countries(self, *, country: str | None = None, as_of: int | None = None) -> list[CountryVersionRow]:
        return await country_rows(self.session, country=country, as_of=as_of)

    async def agreements(
        self, *, country: str | None = None, agreement_id: str | None = None, as_of: int | None = None
    ) -> list[AgreementVersionRow]:
        return await agreement_rows(self.session, country=country, agreement_id=agreement_id, as_of=as_of)

    def add(self, row: CountryVersionRow | AgreementVersionRow | RegistryMetaRow) -> None:
        self.session.add(row)


class RegistryUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, *, batch: bool = False) -> None:
        super().__init__(session, batch=batch)
        self.registry = SqlRegistryRepository(session)
