"""HTTP entrypoints of the origin verification service."""

from __future__ import annotations

import json
from datetime import date

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from safe_procurement.services.origin_verification.adapters import replica
from safe_procurement.services.origin_verification.adapters.repository import (
    VerificationUnitOfWork,
    reports_of,
)
from safe_procurement.services.origin_verification.adapters.tables import ReportRow
from safe_procurement.services.origin_verification.bootstrap import Dependencies, deps_of
from safe_procurement.services.origin_verification.entrypoints import admin_schemas as schemas
from safe_procurement.services.origin_verification.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.kit.app import runtime_of, validation_errors
from safe_procurement.shared.kit.auth import Principal, reader, staff
from safe_procurement.shared.kit.budget import TOO_MANY, budget_of

router = APIRouter(tags=["origin verification"])


def _deps(request: Request) -> Dependencies:
    return deps_of(request)


def _public(row: ReportRow) -> schemas.ReportPublic:
    return schemas.ReportPublic(
        id=row.id or 0, case_id=row.case_id, request_event_id=row.request_event_id, request_type=row.request_type,
        event_id=row.event_id, outcome=row.outcome, rules_version=row.rules_version,
        registry_version=row.registry_version, contract_signed_on=row.contract_signed_on, created_at=row.created_at,
        result=contracts.VerificationResult.model_validate_json(row.result),
    )


@router.get("/verifications/{case_id}", response_model=schemas.VerificationHistory)
async def get_verifications(case_id: str, request: Request, who: Principal = Depends(reader)) -> schemas.VerificationHistory:
    """Every verification report of a case, oldest first; a re-verification adds one, the old ones stay."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        rows = await reports_of(session, case_id)
    rows = [r for r in rows if who.sees(json.loads(r.participants))]
    if not rows:
        raise HTTPException(404, "no verification report for this case")
    return schemas.VerificationHistory(case_id=case_id, reports=[_public(r) for r in rows])


@router.get("/rules", response_model=schemas.RulesPublic)
async def get_rules(
    request: Request,
    on: date | None = Query(default=None, description="Contract signing date (default: the latest rule set)"),
    _: Principal = Depends(reader),
) -> schemas.RulesPublic:
    """The versioned rules configuration in force (for a contract date), every value with source and confidence."""
    book = _deps(request).rules
    rule_set = book.for_date(on) if on is not None else book.current
    return schemas.RulesPublic(
        on=on, in_force=rule_set.version, rule_set=rule_set.public(),
        versions=[{"version": rs.version, "effective_from": rs.effective_from, "description": rs.description}
                  for rs in book.rule_sets],
    )


@router.get("/replica", response_model=schemas.ReplicaStatus)
async def get_replica(request: Request, _: Principal = Depends(reader)) -> schemas.ReplicaStatus:
    """Readiness of the partner-registry replica: the publication it follows and what it holds."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        status = await replica.readiness(session)
    handlers.note_readiness(_deps(request), status)
    return schemas.ReplicaStatus(**status.public())  # type: ignore[arg-type]


@router.get("/replica/agreements")
async def get_replica_agreements(
    request: Request, country: str | None = Query(default=None, min_length=2, max_length=2),
    _: Principal = Depends(staff),
) -> dict[str, object]:
    """Every version of every participation agreement the replica received (history included)."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        items = await replica.agreement_history(session, country)
    return {"items": items}


@router.post(
    "/verifications/preview",
    response_model=contracts.VerificationResult,
    responses={422: {"description": "Invalid proposal"}, 503: {"description": "Registry replica not ready"}, **TOO_MANY},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Proposal"}}}}},
)
async def preview_verification(request: Request, _: Principal = Depends(staff)) -> JSONResponse:
    """Verify a proposal without storing or publishing anything (what the verdict would be now)."""
    try:
        # parsed from the raw bytes so that JSON numbers become exact Decimals, never floats
        proposal = contracts.Proposal.model_validate_json(await request.body())
    except ValidationError as e:
        return JSONResponse({"detail": validation_errors(e.errors(include_url=False))}, status_code=422)
    rt = runtime_of(request)
    # CPU-bound on up to 50 000 components: four at a time per process, more answer 429
    async with budget_of(rt.budgets, "preview", 4).slot(), rt.factory() as session:
        try:
            uow = VerificationUnitOfWork(session)
            result, _status = await handlers.evaluate(uow, proposal, _deps(request))
        except handlers.ReplicaNotReady as e:
            raise HTTPException(503, str(e)) from None
    return JSONResponse(json.loads(result.model_dump_json()))
