"""Composition of the applications service: settings → kit runtime → FastAPI app."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func
from sqlmodel import col, select

from safe_procurement.services.applications.adapters.repository import ApplicationsUnitOfWork
from safe_procurement.services.applications.adapters.tables import CaseParticipant, CaseRow
from safe_procurement.services.applications.bootstrap import bootstrap
from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.domain import sla
from safe_procurement.services.applications.domain.case import Status, is_final
from safe_procurement.services.applications.entrypoints import (
    admin_api,
    admin_schemas,
    case_index_api,
    subscribers,
)
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.app import Runtime, ServiceSpec, create_app
from safe_procurement.shared.kit.auth import require_operator

PUBLISHES = {
    streams.PROCUREMENT_SUBMITTED: contracts.ProcurementSubmitted,
    streams.REVERIFICATION_REQUESTED: contracts.ReverificationRequested,
    streams.LOAN_REQUESTED: contracts.LoanRequested,
    streams.PROCUREMENT_WITHDRAWN: contracts.ProcurementWithdrawn,
    streams.OPERATOR_ACTION_RECORDED["applications"]: contracts.OperatorActionRecorded,
}


_CASES_BY_STATUS = db.FixedQuery(select(CaseRow.status, func.count()).group_by(CaseRow.status))


async def _case_gauges(rt: Runtime) -> dict[str, dict[tuple[str, ...], float]]:
    """Cases per status. On SQLite, counted beside the service's connection (a scrape must not stall the batches)."""
    rows = await db.read_beside(rt.engine, rt.factory, _CASES_BY_STATUS)
    return {"safe_cases": {(status,): float(n) for status, n in rows},
            "safe_cases_over_sla": await cases_over_sla(rt)}


async def cases_over_sla(rt: Runtime) -> dict[tuple[str, ...], float]:
    """Cases in each status with a target that have been in it longer than the target (0 for none)."""
    now = rt.clock()
    out: dict[tuple[str, ...], float] = {}
    async with rt.factory() as s:
        for status, target in sla.parse_targets(rt.settings.sla_targets).items():  # type: ignore[attr-defined]
            # at least this old: a target of n working days spans at least n calendar days, so the database
            # narrows the cases down and the exact due time is computed only for those
            least = timedelta(days=target.amount) if target.unit == "wd" else target.due(now) - now
            q = select(CaseRow.status_since, CaseRow.financing_requested).where(
                CaseRow.status == status, col(CaseRow.status_since) < now - least)
            rows = (await s.exec(q)).all()
            out[(status,)] = float(sum(
                1 for since, financing in rows
                if sla.clock(status, since, now, {status: target},
                             final=is_final(Status(status), financing_requested=financing)).breached))
    return out


async def _participants_of(rt: Runtime, case_id: str) -> set[str] | None:
    """Who takes part in a case: lets member-state tokens see the dead letters of their own cases."""
    async with rt.factory() as s:
        rows = (await s.exec(
            select(CaseParticipant.country).join(CaseRow, col(CaseRow.seq) == col(CaseParticipant.case_seq))
            .where(CaseRow.id == case_id)
        )).all()
    return set(rows) or None


async def _register_gauges(rt: Runtime) -> None:
    rt.metrics.gauge("safe_cases", "Procurement cases per status", ("status",))
    rt.metrics.gauge("safe_cases_over_sla", "Cases in their status longer than its SLA target", ("status",))


def build_app(settings: Settings | None = None, *, redis: Redis | None = None) -> FastAPI:
    """The applications service; `redis` replaces the client its settings describe (a test's stand-in)."""
    settings = settings or Settings()
    spec = ServiceSpec(
        deps=bootstrap(settings),
        name="applications",
        title="SAFE applications",
        description="Owns the procurement case and its state machine; intake over HTTP and over a stream.",
        settings=settings,
        migrations=db.migrations_dir(__file__),
        routers=[admin_api.router, case_index_api.router],
        publishes=PUBLISHES,
        on_startup=[_register_gauges],
        unit_of_work=ApplicationsUnitOfWork,
        gauges=_case_gauges,
        openapi_models=[contracts.Proposal, admin_schemas.ReviewRequest, admin_schemas.AmendmentRequest],
        participants_of=_participants_of,
        # the intake request, served without FastAPI's routing and dependency resolution (ServiceApp)
        direct_routes={("POST", "/procurements"): (require_operator, admin_api.submit_procurement)},
    )
    return create_app(spec, messaging_setup=subscribers.register, redis=redis)




