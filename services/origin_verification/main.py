"""Composition of the origin verification service: settings → dependencies → kit runtime → FastAPI app."""

from __future__ import annotations

import json

from fastapi import FastAPI
from sqlalchemy import func
from sqlmodel import select

from safe_procurement.services.origin_verification.adapters import replica
from safe_procurement.services.origin_verification.adapters.repository import (
    VerificationUnitOfWork,
    reports_of,
)
from safe_procurement.services.origin_verification.adapters.tables import ReportRow
from safe_procurement.services.origin_verification.bootstrap import Clock, Dependencies, bootstrap
from safe_procurement.services.origin_verification.config import Settings
from safe_procurement.services.origin_verification.domain.rulebook import RuleBook
from safe_procurement.services.origin_verification.entrypoints import admin_api, subscribers, whatif_api
from safe_procurement.services.origin_verification.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.app import Runtime, ServiceSpec, create_app
from safe_procurement.shared.kit.messaging import Messaging

PUBLISHES = {
    streams.ORIGIN_VERIFICATION_COMPLETED: contracts.OriginVerificationCompleted,
    streams.OPERATOR_ACTION_RECORDED["origin_verification"]: contracts.OperatorActionRecorded,
}


async def _startup(rt: Runtime) -> None:
    rt.metrics.gauge("safe_verification_reports", "Verification reports per outcome", ("outcome",))
    rt.metrics.gauge("safe_registry_replica_ready", "1 when the registry replica is complete", ("registry",))
    async with rt.factory() as session:
        handlers.note_readiness(rt.deps, await replica.readiness(session))


async def _gauges(rt: Runtime) -> dict[str, dict[tuple[str, ...], float]]:
    async with rt.factory() as s:
        rows = (await s.exec(select(ReportRow.outcome, func.count()).group_by(ReportRow.outcome))).all()
        status = await replica.readiness(s)
    handlers.note_readiness(rt.deps, status)
    return {
        "safe_verification_reports": {(outcome,): float(n) for outcome, n in rows},
        "safe_registry_replica_ready": {("partner_registry",): 1.0 if status.ready else 0.0},
    }


async def _participants_of(rt: Runtime, case_id: str) -> set[str] | None:
    """Who takes part in a case (from its reports): lets Member State tokens see the dead letters of their cases,
    the same rule as the applications and loan services (docs/security.md)."""
    async with rt.factory() as session:
        rows = await reports_of(session, case_id)
    return {p for r in rows for p in json.loads(r.participants)} or None


def build_app(settings: Settings | None = None, *, clock: Clock | None = None, rules: RuleBook | None = None) -> FastAPI:
    settings = settings or Settings()
    deps = bootstrap(settings, clock=clock, rules=rules)

    def setup(m: Messaging, rt: Runtime[Dependencies]) -> None:
        async def replica_probe() -> bool:
            # read from the database: with several replicas, another one may have completed the replica
            async with rt.factory() as session:
                status = await replica.readiness(session)
            handlers.note_readiness(deps, status)
            return status.ready

        rt.ready_probes[handlers.READY_CHECK] = replica_probe
        subscribers.register(m, rt)

    spec = ServiceSpec(
        name="origin_verification",
        title="SAFE origin verification",
        description="Decides each proposal against the SAFE rules (participation, contractors, component origin, "
                    "design authority) on its contract date, from a replica of the partner registry.",
        settings=settings,
        migrations=db.migrations_dir(__file__),
        deps=deps,
        routers=[admin_api.router, whatif_api.router],
        publishes=PUBLISHES,
        on_startup=[_startup],
        gauges=_gauges,
        openapi_models=[contracts.Proposal, whatif_api.WhatIfRequest],
        participants_of=_participants_of,
        unit_of_work=VerificationUnitOfWork,
    )
    return create_app(spec, messaging_setup=setup)
