"""The origin verification unit of work: its reports and its replica of the partner registry."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.origin_verification.adapters import replica
from safe_procurement.services.origin_verification.adapters.tables import ReportRow
from safe_procurement.services.origin_verification.domain.reference import ReferenceData
from safe_procurement.shared import contracts
from safe_procurement.shared.kit.db import add_row, connection_of, fetch_all
from safe_procurement.shared.kit.uow import UnitOfWork

_ANSWERED_AMONG = sa.select(ReportRow.__table__.c.request_event_id).where(  # type: ignore[attr-defined]
    ReportRow.__table__.c.request_event_id.in_(sa.bindparam("ids", expanding=True)))  # type: ignore[attr-defined]


async def reports_of(session: AsyncSession, case_id: str) -> list[ReportRow]:
    q = select(ReportRow).where(ReportRow.case_id == case_id).order_by(col(ReportRow.id))
    return list((await session.exec(q)).all())


class SqlReports:
    """Verification reports. Which requests of a batch were answered is read with one query (`prefetch`)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._asked: set[str] = set()  # request ids whose answer is known in `_answered`
        self._answered: set[str] = set()

    async def prefetch(self, request_event_ids: list[str]) -> None:
        found = await fetch_all(await connection_of(self.session), _ANSWERED_AMONG, {"ids": request_event_ids})
        self._asked |= set(request_event_ids)
        self._answered |= {r[0] for r in found}

    async def answered(self, request_event_id: str) -> bool:
        if request_event_id in self._asked:
            return request_event_id in self._answered
        q = select(ReportRow.id).where(ReportRow.request_event_id == request_event_id)
        return (await self.session.exec(q)).first() is not None

    def add(self, **values: Any) -> None:
        add_row(self.session, ReportRow, **values)  # a bulk INSERT per batch (an ORM object outside one)
        self._asked.add(values["request_event_id"])
        self._answered.add(values["request_event_id"])

    async def of_case(self, case_id: str) -> list[ReportRow]:
        return await reports_of(self.session, case_id)


class SqlReplica:
    """The replica of the registry. Its readiness is read once per transaction: a batch of requests is
    verified against one state of the replica."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._readiness: replica.Readiness | None = None

    async def readiness(self) -> replica.Readiness:
        if self._readiness is None:
            self._readiness = await replica.readiness(self.session)
        return self._readiness

    async def reference(self, registry_version: int | None) -> ReferenceData:
        return await replica.load_reference(self.session, registry_version)

    async def upsert_country(self, event: contracts.CountryStatusChanged) -> None:
        await replica.upsert_country(self.session, event)
        self._readiness = None

    async def upsert_agreement(self, event: contracts.PartnerAgreementRecorded) -> None:
        await replica.upsert_agreement(self.session, event)
        self._readiness = None

    async def record_publication(self, event: contracts.ReferenceDataPublished) -> None:
        await replica.record_publication(self.session, event)
        self._readiness = None


class VerificationUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, *, batch: bool = False) -> None:
        super().__init__(session, batch=batch)
        self.reports = SqlReports(session)
        self.replica = SqlReplica(session)
