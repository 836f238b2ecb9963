"""Composition of the applications service: settings → kit runtime → FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import func
from sqlmodel import col, select

from services.applications.adapters.tables import CaseParticipant, CaseRow
from services.applications.config import Settings
from services.applications.entrypoints import admin_api, case_index_api, subscribers
from services.applications.service_layer import handlers
from shared import contracts
from shared.contracts import streams
from shared.kit import db
from shared.kit.app import Runtime, ServiceSpec, create_app
from shared.kit.auth import require_operator

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
    assert rt.factory is not None and rt.engine is not None
    rows = await db.read_beside(rt.engine, rt.factory, _CASES_BY_STATUS)
    return {"safe_cases": {(status,): float(n) for status, n in rows}}


async def _participants_of(rt: Runtime, case_id: str) -> set[str] | None:
    """Who takes part in a case: lets member-state tokens see the dead letters of their own cases."""
    assert rt.factory is not None
    async with rt.factory() as s:
        rows = (await s.exec(
            select(CaseParticipant.country).join(CaseRow, col(CaseRow.seq) == col(CaseParticipant.case_seq))
            .where(CaseRow.id == case_id)
        )).all()
    return set(rows) or None


async def _register_gauges(rt: Runtime) -> None:
    rt.metrics.gauge("safe_cases", "Procurement cases per status", ("status",))


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    spec = ServiceSpec(
        name="applications",
        title="SAFE applications",
        description="Owns the procurement case and its state machine; intake over HTTP and over a stream.",
        settings=settings,
        migrations=db.migrations_dir(__file__),
        routers=[admin_api.router, case_index_api.router],
        publishes=PUBLISHES,
        on_startup=[_register_gauges],
        after_publish=handlers.after_publish,
        gauges=_case_gauges,
        openapi_models=[contracts.Proposal],
        participants_of=_participants_of,
        # the intake request, served without FastAPI's routing and dependency resolution (ServiceApp)
        direct_routes={("POST", "/procurements"): (require_operator, admin_api.submit_procurement)},
    )
    return create_app(spec, messaging_setup=subscribers.register)




