"""Composition of the loan disbursement service: settings → kit runtime → FastAPI app."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI

from safe_procurement.services.loan_disbursement.adapters.repository import LoanUnitOfWork
from safe_procurement.services.loan_disbursement.bootstrap import bootstrap
from safe_procurement.services.loan_disbursement.config import Settings
from safe_procurement.services.loan_disbursement.domain import reference
from safe_procurement.services.loan_disbursement.entrypoints import (
    admin_api,
    admin_schemas,
    scope,
    subscribers,
)
from safe_procurement.services.loan_disbursement.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.app import Runtime, ServiceSpec, create_app
from safe_procurement.shared.kit.uow import begin

PUBLISHES = {
    streams.LOAN_APPROVED: contracts.LoanApproved,
    streams.LOAN_REJECTED: contracts.LoanRejected,
    streams.OPERATOR_ACTION_RECORDED["loan_disbursement"]: contracts.OperatorActionRecorded,
}
DEFAULT_FACILITIES = Path(__file__).resolve().parent / "data" / "facilities.yaml"


def load_reference(path: str | Path | None = None) -> reference.Reference:
    """The facilities seed file (YAML or JSON), parsed and validated (amounts must be quoted strings)."""
    p = Path(path) if path else DEFAULT_FACILITIES
    raw = p.read_text(encoding="utf-8")
    data: Any = json.loads(raw) if p.suffix == ".json" else yaml.safe_load(raw)
    return reference.parse(data)


async def _seed(rt: Runtime) -> None:
    settings: Settings = rt.settings  # type: ignore[assignment]
    ref = await asyncio.to_thread(load_reference, settings.facilities_file or None)
    rt.deps.reference = ref
    async with begin(rt.factory, LoanUnitOfWork) as uow:
        await handlers.seed(uow, ref)


async def _participants_of(rt: Runtime, case_id: str) -> set[str] | None:
    """Participants and lenders of a case: the Member States that see its dead letters (entrypoints/scope.py)."""
    async with rt.factory() as session:
        return await scope.participants_of(session, case_id)


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    spec = ServiceSpec(
        deps=bootstrap(settings),
        name="loan_disbursement",
        title="SAFE loan disbursement",
        description="Member State SAFE facilities and investment plans; decides loan requests (L-1..L-5, PLAN) "
                    "against an append-only ledger, pays pre-financing and instalments, never over-commits.",
        settings=settings,
        migrations=db.migrations_dir(__file__),
        routers=[admin_api.router],
        publishes=PUBLISHES,
        on_startup=[_seed],
        openapi_models=[admin_schemas.FacilityUpdate, admin_schemas.PaymentRequest, admin_schemas.PlanUpdate],
        participants_of=_participants_of,
        unit_of_work=LoanUnitOfWork,
    )
    return create_app(spec, messaging_setup=subscribers.register)
