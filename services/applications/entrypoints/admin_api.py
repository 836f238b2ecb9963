"""HTTP entrypoints of the applications service."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from redis.exceptions import ResponseError
from sqlmodel import col, select

from safe_procurement.services.applications.adapters.repository import (
    ApplicationsUnitOfWork,
    Case,
    SqlCaseRepository,
    SqlRevisions,
)
from safe_procurement.services.applications.adapters.tables import CaseParticipant, CaseRow, TimelineRow
from safe_procurement.services.applications.bootstrap import intake_of, runtime_from
from safe_procurement.services.applications.domain import sla
from safe_procurement.services.applications.domain.case import Status, TransitionRefused, is_final
from safe_procurement.services.applications.entrypoints import admin_schemas as schemas
from safe_procurement.services.applications.service_layer import handlers, review
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import countries, streams
from safe_procurement.shared.kit import approvals
from safe_procurement.shared.kit.app import Runtime, runtime_of, validation_errors
from safe_procurement.shared.kit.auth import Principal, operator, reader
from safe_procurement.shared.kit.uow import begin
from safe_procurement.shared.kit.web import decode_cursor, encode_cursor

router = APIRouter(tags=["procurements"])

_PROBLEM = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_REFUSED = {409: {"description": "The case's status does not allow it", "content": _PROBLEM}}


def _public(row: Case) -> schemas.CasePublic:
    return schemas.CasePublic(
        id=row.id, reference=row.reference, status=row.status, proposal=json.loads(row.proposal),
        verification=json.loads(row.verification) if row.verification else None,
        loan=json.loads(row.loan) if row.loan else None, created_at=row.created_at, updated_at=row.updated_at,
    )


def _visible(row: Case | None, who: Principal) -> Case:
    if row is None:
        raise HTTPException(404, "no such procurement case")
    if who.member_state is not None:
        proposal = json.loads(row.proposal)
        concerned = [*proposal.get("participants", []),
                     *(line.get("member_state", "") for line in proposal.get("financing") or [])]
        if not who.sees(concerned):  # a participant or a lender (docs/security.md)
            raise HTTPException(404, "no such procurement case")
    return row


@router.post(
    "/procurements",
    status_code=201,
    response_model=schemas.CaseCreated,
    responses={200: {"model": schemas.CasePublic, "description": "Same reference, same proposal: the existing case"},
               409: {"description": "Same reference, different proposal", "content": _PROBLEM},
               422: {"description": "Invalid proposal: every offending field is listed"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Proposal"}}}}},
)
async def create_procurement(request: Request, who: Principal = Depends(operator)) -> Any:
    """Submit a proposal: validated, stored, and sent to origin verification."""
    # Served by the kit's direct route (ServiceSpec.direct_routes) before FastAPI routes a request; declared
    # here for the OpenAPI document, and for an app without the direct route
    return await submit_procurement(request, who)


async def submit_procurement(request: Request, who: Principal) -> Response:
    """POST /procurements for an authenticated operator."""
    raw = await request.body()
    try:
        # parsed from the raw bytes so that JSON numbers become exact Decimals, never floats
        proposal = contracts.Proposal.model_validate(json.loads(raw, parse_float=Decimal))
    except ValidationError as e:
        return JSONResponse({"detail": validation_errors(e.errors(include_url=False))}, status_code=422)
    except (ValueError, UnicodeDecodeError) as e:
        return JSONResponse({"detail": [{"loc": ["body"], "field": "body", "msg": f"invalid JSON: {e}",
                                         "type": "json_invalid"}]}, status_code=422)
    try:
        row, created = await intake_of(runtime_from(request)).submit(proposal)
    except handlers.ReferenceConflict:
        return JSONResponse(
            {"detail": f"reference {proposal.reference!r} already exists with a different proposal"}, status_code=409
        )
    if not created:
        return JSONResponse(json.loads(_public(row).model_dump_json()), status_code=200)
    # serialized here: FastAPI would validate and encode the response model a second time
    return Response(schemas.CaseCreated(id=row.id, reference=row.reference, status=row.status).model_dump_json(),
                    status_code=201, media_type="application/json")


def _now(rt: Runtime) -> datetime:
    return rt.clock()


def _sla(rt: Runtime, status: str, since: datetime, financing_requested: bool, now: datetime) -> schemas.SlaPublic:
    final = is_final(Status(status), financing_requested=financing_requested)
    c = sla.clock(status, since, now, sla.parse_targets(rt.settings.sla_targets), final=final)  # type: ignore[attr-defined]
    return schemas.SlaPublic(since=c.since, seconds_in_status=c.seconds_in_status, target=c.target, due_at=c.due_at,
                             breached=c.breached, over_by_seconds=c.over_by_seconds)


@router.get("/procurements", response_model=schemas.CasePage)
async def list_procurements(
    request: Request,
    status: str | None = Query(default=None, max_length=30),
    member_state: str | None = Query(default=None, min_length=2, max_length=2),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=100),
    who: Principal = Depends(reader),
) -> schemas.CasePage:
    """Cases, newest first, filtered by status and Member State (a participant or a lender; keyset pagination)."""
    if status is not None and status not in {s.value for s in Status}:
        raise HTTPException(422, f"unknown status {status!r}")
    after = decode_cursor(cursor)
    rt = runtime_of(request)
    q = select(CaseRow.seq, CaseRow.id, CaseRow.reference, CaseRow.status, CaseRow.lead_member_state,
               CaseRow.created_at, CaseRow.updated_at, CaseRow.status_since, CaseRow.financing_requested)
    scopes = [countries.canonical(c) for c in (member_state, who.member_state) if c]
    for i, country in enumerate(scopes):
        if not countries.is_known(country):
            raise HTTPException(422, f"unknown country {country!r}")
        # EXISTS on the participants' primary key (case_seq, country): the newest-first scan stops after one
        # page; `seq IN (subquery)` would first materialise every case of the country
        p = select(CaseParticipant.case_seq).where(CaseParticipant.case_seq == CaseRow.seq,
                                                   CaseParticipant.country == country)
        q = q.where(p.exists())
        del i
    if status:
        q = q.where(CaseRow.status == status)
    if after is not None:
        q = q.where(col(CaseRow.seq) < after)
    q = q.order_by(col(CaseRow.seq).desc()).limit(limit + 1)
    async with rt.factory() as session:
        rows = (await session.exec(q)).all()
    page = rows[:limit]
    now = _now(rt)
    items = [schemas.CaseSummary(id=r[1], reference=r[2], status=r[3], lead_member_state=r[4], created_at=r[5],
                                 updated_at=r[6], sla=_sla(rt, r[3], r[7], r[8], now)) for r in page]
    return schemas.CasePage(items=items, next_cursor=encode_cursor(page[-1][0]) if len(rows) > limit else None)


@router.get("/procurements/by-reference/{reference}", response_model=schemas.CasePublic)
async def get_by_reference(reference: str, request: Request, who: Principal = Depends(reader)) -> schemas.CasePublic:
    """The case with this business reference."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        row = await SqlCaseRepository(session).by_reference(reference)
    return _public(_visible(row, who))


@router.get("/procurements/{case_id}", response_model=schemas.CasePublic)
async def get_procurement(case_id: str, request: Request, who: Principal = Depends(reader)) -> schemas.CasePublic:
    """The case: status, proposal, verification report and loan."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        row = await SqlCaseRepository(session).get(case_id)
    return _public(_visible(row, who))


@router.get("/procurements/{case_id}/timeline", response_model=schemas.Timeline)
async def get_timeline(case_id: str, request: Request, who: Principal = Depends(reader)) -> schemas.Timeline:
    """Every event of the case, in the order it was recorded."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        row = _visible(await SqlCaseRepository(session).get(case_id), who)
        items = (await session.exec(
            select(TimelineRow).where(TimelineRow.case_id == row.id).order_by(col(TimelineRow.id))
        )).all()
    return schemas.Timeline(case_id=row.id, items=[
        schemas.TimelineItem(type=t.type, at=t.at, recorded_at=t.recorded_at, event_id=t.event_id,
                             causation_id=t.causation_id, service=t.service, summary=t.summary) for t in items
    ])


async def _operator_action(
    request: Request, case_id: str, action: Callable[..., Awaitable[Case]], reason: str, who: Principal
) -> schemas.CasePublic:
    rt = runtime_of(request)
    try:
        async with begin(rt.factory, ApplicationsUnitOfWork) as uow:
            row = await action(case_id, uow, reason=reason, actor=who.name)
    except handlers.NotFound:
        raise HTTPException(404, "no such procurement case") from None
    except TransitionRefused as e:
        raise HTTPException(409, str(e)) from None
    rt.wake_relay()
    return _public(row)


@router.post("/procurements/{case_id}/withdraw", response_model=schemas.CasePublic, responses=_REFUSED)
async def withdraw_procurement(
    case_id: str, request: Request, body: schemas.ActionRequest | None = None, who: Principal = Depends(operator)
) -> schemas.CasePublic:
    """Withdraw the case (only before a loan is approved); any loan reservation is released."""
    reason = (body.reason if body else "") or "withdrawn"
    return await _operator_action(request, case_id, handlers.withdraw, reason, who)


@router.post("/procurements/{case_id}/reverify", response_model=schemas.CasePublic, responses=_REFUSED)
async def reverify_procurement(
    case_id: str, request: Request, body: schemas.ActionRequest | None = None, who: Principal = Depends(operator)
) -> schemas.CasePublic:
    """Ask origin verification to decide the case again (e.g. after a registry correction); audited."""
    reason = (body.reason if body else "") or "re-verification"
    return await _operator_action(request, case_id, handlers.reverify, reason, who)


def _parse_body(raw: bytes, model: type[Any]) -> Any:
    """`raw` as `model`, JSON numbers as exact Decimals (raises ValidationError or ValueError)."""
    return model.model_validate(json.loads(raw, parse_float=Decimal))


async def _json_body(request: Request, model: type[Any]) -> Any:
    """The body as `model`, JSON numbers as exact Decimals; 422 listing every offending field."""
    try:
        return _parse_body(await request.body(), model)
    except ValidationError as e:
        raise HTTPException(422, validation_errors(e.errors(include_url=False))) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(422, [{"loc": ["body"], "field": "body", "msg": f"invalid JSON: {e}",
                                   "type": "json_invalid"}]) from None


def _body(model: type[Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


@router.post("/procurements/{case_id}/review", response_model=schemas.CasePublic, openapi_extra=_body(schemas.ReviewRequest),
             responses={**_REFUSED, 422: {"description": "Invalid body: every offending field is listed"}})
@approvals.gated("review.decide", parse=lambda raw: _parse_body(raw, schemas.ReviewRequest))
async def review_procurement(case_id: str, request: Request, who: Principal = Depends(operator)) -> schemas.CasePublic:
    """Record a reviewer's decision on a needs_review case: eligible or ineligible, with a justification and
    evidence references. It becomes the verdict (marked human, with who and why) and moves the case on."""
    body: schemas.ReviewRequest = await _json_body(request, schemas.ReviewRequest)
    decision = review.ReviewDecision(body.decision, body.justification, tuple(body.evidence_refs))

    async def act(case_id: str, uow: ApplicationsUnitOfWork, *, reason: str, actor: str) -> Case:
        return await review.record_review(case_id, decision, uow, actor=actor)
    return await _operator_action(request, case_id, act, body.justification, who)


@router.post("/procurements/{case_id}/amend", response_model=schemas.CasePublic,
             openapi_extra=_body(schemas.AmendmentRequest),
             responses={**_REFUSED, 403: {"description": "Neither an operator nor a participating Member State"},
                        422: {"description": "Invalid body: every offending field is listed"}})
async def amend_procurement(case_id: str, request: Request, who: Principal = Depends(reader)) -> schemas.CasePublic:
    """Amend the proposal of a case in needs_review or origin_rejected (an operator, or a user of a Member State
    that takes part in it, before and after): a new numbered revision, verified again; earlier ones stay readable."""
    if not who.can_write and who.member_state is None:
        raise HTTPException(403, "operator or member-state role required")
    rt = runtime_of(request)
    async with rt.factory() as session:
        current = _visible(await SqlCaseRepository(session).get(case_id), who)
    body: schemas.AmendmentRequest = await _json_body(request, schemas.AmendmentRequest)
    if who.member_state is not None and not who.sees(list(body.proposal.participants)):
        raise HTTPException(403, f"{who.member_state} would no longer take part in the amended proposal")

    async def act(case_id: str, uow: ApplicationsUnitOfWork, *, reason: str, actor: str) -> Case:
        return await review.amend(case_id, body.proposal, uow, reason=reason, actor=actor)
    return await _operator_action(request, current.id, act, body.reason, who)


@router.get("/procurements/{case_id}/revisions", response_model=schemas.Revisions)
async def get_revisions(case_id: str, request: Request, who: Principal = Depends(reader)) -> schemas.Revisions:
    """Every revision of the case's proposal, oldest first (none until the first amendment: the case's proposal is
    then revision 1)."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        row = _visible(await SqlCaseRepository(session).get(case_id), who)
        rows = await SqlRevisions(session).of_case(row.id)
    return schemas.Revisions(case_id=row.id, items=[
        schemas.RevisionPublic(revision=r.revision, proposal=json.loads(r.proposal), changed=json.loads(r.changed),
                               amended_by=r.amended_by, reason=r.reason, at=r.at) for r in rows])


_WAITING = {
    Status.submitted: ("the outbox relay to hand the proposal to origin verification", "applications",
                       streams.PROCUREMENT_SUBMITTED, "applications"),
    Status.verifying: ("origin verification to decide the case", "origin_verification",
                       streams.PROCUREMENT_SUBMITTED, "origin_verification"),
    Status.loan_requested: ("loan disbursement to decide the loan request", "loan_disbursement",
                            streams.LOAN_REQUESTED, "loan_disbursement"),
    Status.needs_review: ("an operator: the verification could not decide (see verification.missing)", None, None, None),
}


@router.get("/procurements/{case_id}/explain", response_model=schemas.Explanation)
async def explain_procurement(case_id: str, request: Request, who: Principal = Depends(reader)) -> schemas.Explanation:
    """Why is this case where it is: what it waits for, since when, on which stream, and what an operator can do."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        row = _visible(await SqlCaseRepository(session).get(case_id), who)
        last = (await session.exec(
            select(TimelineRow).where(TimelineRow.case_id == row.id).order_by(col(TimelineRow.id).desc()).limit(1)
        )).first()
    status = Status(row.status)
    final = is_final(status, financing_requested=row.financing_requested)
    waiting, service, stream, group = _WAITING.get(status, (None, None, None, None))
    state: dict[str, Any] | None = None
    if stream and group:
        state = {}
        try:
            for g in await rt.redis.xinfo_groups(streams.qualified(stream, rt.settings.stream_prefix)):
                name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                if name == group:
                    state = {"group": name, "pending": g.get("pending"), "lag": g.get("lag"),
                             "consumers": g.get("consumers")}
            if not state:
                state = {"group": group, "note": "the group does not exist yet: the service has never started"}
        except ResponseError:
            state = {"group": group, "note": "the stream does not exist"}
    actions: list[str] = []
    if not final:
        actions.append(f"POST /procurements/{row.id}/withdraw")
    if status in (Status.verifying, Status.needs_review, Status.origin_rejected, Status.origin_verified):
        actions.append(f"POST /procurements/{row.id}/reverify")
    if status == Status.needs_review:
        actions.append(f"POST /procurements/{row.id}/review")
    if status in (Status.needs_review, Status.origin_rejected):
        actions.append(f"POST /procurements/{row.id}/amend")
    if service and service != "applications":
        actions.append(f"GET /dead-letters?correlation_id={row.id} on {service}")
    return schemas.Explanation(
        case_id=row.id, status=row.status, final=final, since=row.status_since,
        waiting_for=None if final else waiting, service=None if final else service,
        stream=None if final else stream, message_event_id=last.event_id if (last and not final) else None,
        stream_state=None if final else state, operator_actions=actions,
        sla=_sla(rt, row.status, row.status_since, row.financing_requested, _now(rt)),
        redis_recovery=None if final or rt.guard is None else await rt.guard.explain_case(row.id),
    )
