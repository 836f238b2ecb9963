"""HTTP entrypoints of the loan disbursement service.

Status codes: 200 reads and updates; 201 a payment written to the ledger (the ledger entry); 404 no such
facility / loan / decision; 422 either an invalid body (`detail` lists every field) or a request refused by a
rule — L-2, L-3, L-4, L-5 — with `detail` in words and `reasons` [{member_state, rule, message}]. Refusals are
recorded in the audit log. 401/403 as everywhere (operator writes, any reader reads)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.loan_disbursement.adapters import ledger
from safe_procurement.services.loan_disbursement.adapters.repository import LoanUnitOfWork
from safe_procurement.services.loan_disbursement.adapters.tables import (
    FacilityRow,
    FacilityStatusChangeRow,
    LedgerEntry,
    LoanRequestRow,
    LoanRow,
)
from safe_procurement.services.loan_disbursement.config import Settings
from safe_procurement.services.loan_disbursement.domain import lifecycle, rules
from safe_procurement.services.loan_disbursement.domain.money import CENT, ZERO, cents_floor
from safe_procurement.services.loan_disbursement.entrypoints import admin_schemas as schemas
from safe_procurement.services.loan_disbursement.entrypoints import scope
from safe_procurement.services.loan_disbursement.service_layer import handlers
from safe_procurement.shared.contracts import Category, countries
from safe_procurement.shared.kit import approvals
from safe_procurement.shared.kit.app import Runtime, runtime_of
from safe_procurement.shared.kit.auth import Principal, operator, reader, staff
from safe_procurement.shared.kit.budget import TOO_MANY, budget_of
from safe_procurement.shared.kit.db import transaction
from safe_procurement.shared.kit.uow import begin
from safe_procurement.shared.kit.web import decode_cursor, decode_text_cursor, encode_cursor

router = APIRouter()
# loan ids are time-ordered UUIDs (version 7): the keyset of GET /loans
_LOAN_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

_REFUSAL = {422: {"model": schemas.Refusal, "description": "Invalid body, or refused by a rule (reasons in words)"}}


def _body(model: type[Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _rt(request: Request) -> tuple[Runtime, Settings]:
    rt = runtime_of(request)
    return rt, rt.settings  # type: ignore[return-value]


def _ms(member_state: str) -> str:
    return countries.canonical(member_state)


def _refusal(reasons: list[rules.Reason]) -> JSONResponse:
    """422 for a rule's refusal; 409 when a payment would pay out more than the loans approved (L-9): the request
    is valid, the state of the facility's money refuses it."""
    body = schemas.Refusal(detail="; ".join(str(r) for r in reasons),
                           reasons=[schemas.ReasonPublic(**r.__dict__) for r in reasons])
    code = 409 if any(r.rule == lifecycle.L9 for r in reasons) else 422
    return JSONResponse(json.loads(body.model_dump_json()), status_code=code)


async def _parse(request: Request, model: type[schemas.M]) -> schemas.M | JSONResponse:
    try:
        return schemas.parse_body(model, await request.body())
    except schemas.BodyError as e:
        return JSONResponse({"detail": e.detail}, status_code=422)


def _facility(row: FacilityRow, bal: ledger.Balance, plan_categories: int, share: Decimal,
              cleared: Decimal) -> schemas.FacilityPublic:
    return schemas.FacilityPublic(
        status=row.status or lifecycle.DECIDED, status_changed_on=row.status_changed_on,
        status_reference=row.status_reference, agreement_signed_on=row.agreement_signed_on,
        agreement_reference=row.agreement_reference, amount_confirmed=row.confidence == "official",
        pre_financing_cleared_eur=cleared, pre_financing_uncleared_eur=bal.pre_financing - cleared,
        payable_eur=bal.approved - bal.disbursed,
        member_state=row.member_state, max_eur=row.max_eur, approved_eur=bal.approved, disbursed_eur=bal.disbursed,
        available_eur=row.max_eur - bal.approved, pre_financing_eur=row.pre_financing_eur, suspended=row.suspended,
        source=row.source, confidence=row.confidence, notes=row.notes, tentative_eur=row.tentative_eur,
        council_max_eur=row.council_max_eur,
        pre_financing_cap_eur=cents_floor(rules.pre_financing_cap(row.max_eur, row.pre_financing_eur, share)),
        pre_financing_paid_eur=bal.pre_financing, instalments_paid_eur=bal.instalments,
        suspended_reason=row.suspended_reason,
        plan=schemas.PlanSummary(supports_ukraine=row.supports_ukraine, categories=plan_categories,
                                 version=row.plan_version, source=row.plan_source),
        updated_at=row.updated_at,
    )


async def _facilities(session: AsyncSession, share: Decimal, member_state: str | None = None) -> list[schemas.FacilityPublic]:
    wanted = None if member_state is None else [member_state]
    rows = await ledger.facilities(session, wanted)
    plans = await ledger.plan_lines(session, list(rows))
    # balances: the running totals on the facility rows (kept with every ledger entry)
    cleared = {ms: await ledger.cleared_of(session, ms) for ms in rows}
    return [_facility(r, ledger.Balance.of(r), len(plans.get(ms, {})), share, cleared[ms]) for ms, r in rows.items()]


def _entry(e: LedgerEntry, cleared: Decimal | None = None) -> schemas.LedgerEntryPublic:
    return schemas.LedgerEntryPublic(
        id=e.id or 0, member_state=e.member_state, case_id=e.case_id, loan_id=e.loan_id, kind=e.kind,
        amount_eur=e.amount, at=e.at, reason=e.reason, requested_on=e.requested_on, actor=e.actor, event_id=e.event_id,
        pre_financing_cleared_eur=cleared if cleared is not None else (ZERO if e.kind == "instalment" else None),
    )


async def _loan(session: AsyncSession, loan: LoanRow) -> schemas.LoanPublic:
    paid = await ledger.instalments_paid(session, loan.loan_id)
    cleared = await ledger.cleared_on_loan(session, loan.loan_id)
    return schemas.LoanPublic(
        loan_id=loan.loan_id, case_id=loan.case_id, member_state=loan.member_state, amount_eur=loan.amount_eur,
        status=loan.status, approved_at=loan.approved_at, released_at=loan.released_at, instalments_paid_eur=paid,
        remaining_eur=(loan.amount_eur - paid - cleared) if loan.status == "active" else ZERO,
        pre_financing_cleared_eur=cleared,
    )


# --- facilities -------------------------------------------------------------------------------------------


@router.get("/facilities", response_model=schemas.FacilityList, tags=["facilities"])
async def list_facilities(request: Request, who: Principal = Depends(reader)) -> schemas.FacilityList:
    """Every Member State facility with its balances (the ledger's running totals). A Member State token sees its
    own facility only, unless other states' totals are opened by the setting `other_states_totals_visible`."""
    rt, settings = _rt(request)
    async with rt.factory() as session:  # type: ignore[misc]
        items = await _facilities(session, settings.pre_financing_share)
    visible = [f for f in items if scope.facility_readable(
        who, f.member_state, totals_of_others=settings.other_states_totals_visible)]
    # the envelope's use is an aggregate over every facility: it names no state's figures
    return schemas.FacilityList(items=visible, envelope_eur=settings.envelope_eur.quantize(CENT),
                                maxima_total_eur=sum((f.max_eur for f in items), ZERO))


@router.get("/facilities/{member_state}", response_model=schemas.FacilityPublic, tags=["facilities"],
            responses={404: {"description": "No SAFE facility for this Member State"}})
async def get_facility(member_state: str, request: Request, who: Principal = Depends(reader)) -> schemas.FacilityPublic:
    """One facility: maximum, approved, disbursed, available, pre-financing, suspension, source."""
    rt, settings = _rt(request)
    found = []
    if scope.facility_readable(who, _ms(member_state), totals_of_others=settings.other_states_totals_visible):
        async with rt.factory() as session:  # type: ignore[misc]
            found = await _facilities(session, settings.pre_financing_share, _ms(member_state))
    if not found:
        raise HTTPException(404, f"{_ms(member_state)} has no SAFE loan facility")
    return found[0]


@router.put("/facilities/{member_state}", response_model=schemas.FacilityPublic, tags=["facilities"],
            responses={404: {"description": "No such facility"}, **_REFUSAL}, openapi_extra=_body(schemas.FacilityUpdate))
@approvals.gated("facility.update", parse=lambda raw: schemas.parse_body(schemas.FacilityUpdate, raw))
async def update_facility(member_state: str, request: Request, who: Principal = Depends(operator)) -> Any:
    """Set the Council maximum (all maxima ≤ the EUR 150 bn envelope, L-10) / pre-financing (≤ 15 % of the maximum) /
    suspension / lifecycle status (L-8; signing needs agreement_signed_on and agreement_reference); audited."""
    body = await _parse(request, schemas.FacilityUpdate)
    if isinstance(body, JSONResponse):
        return body
    rt, settings = _rt(request)
    ms = _ms(member_state)
    changes = {k: getattr(body, k) for k in body.model_fields_set if k != "reason"}
    try:
        async with begin(rt.factory, LoanUnitOfWork) as uow:  # type: ignore[arg-type]
            outcome = await handlers.update_facility(uow, ms, changes, reason=body.reason, actor=who.name,
                                                     share=settings.pre_financing_share,
                                                     envelope=settings.envelope_eur)
    except handlers.NotFound:
        raise HTTPException(404, f"{ms} has no SAFE loan facility") from None
    if not outcome.ok:
        return _refusal(outcome.reasons)
    async with rt.factory() as session:  # type: ignore[misc]
        return (await _facilities(session, settings.pre_financing_share, ms))[0]


@router.post("/facilities/{member_state}/pre-financing", status_code=201, response_model=schemas.LedgerEntryPublic,
             tags=["facilities"], responses={404: {"description": "No such facility"}, **_REFUSAL},
             openapi_extra=_body(schemas.PaymentRequest))
@approvals.gated("pre_financing.pay", parse=lambda raw: schemas.parse_body(schemas.PaymentRequest, raw),
                  amount=lambda body: body.amount_eur)
async def pay_pre_financing(member_state: str, request: Request, who: Principal = Depends(operator)) -> Any:
    """Pay pre-financing: cumulative ≤ the Council figure and ≤ 15 % of the facility (L-3), dated ≤ the last
    request date (L-4), never while suspended (L-5). 201 with the ledger entry; 422 with the reasons."""
    body = await _parse(request, schemas.PaymentRequest)
    if isinstance(body, JSONResponse):
        return body
    rt, settings = _rt(request)
    ms = _ms(member_state)
    try:
        async with begin(rt.factory, LoanUnitOfWork) as uow:  # type: ignore[arg-type]
            outcome = await handlers.pay_pre_financing(
                uow, ms, body.amount_eur, body.requested_on, actor=who.name, note=body.note,
                last_request_on=settings.last_request_on, share=settings.pre_financing_share,
            )
    except handlers.NotFound:
        raise HTTPException(404, f"{ms} has no SAFE loan facility") from None
    if not outcome.ok:
        return _refusal(outcome.reasons)
    assert outcome.entry is not None
    return _entry(outcome.entry)


@router.get("/facilities/{member_state}/ledger", response_model=schemas.LedgerPage, tags=["facilities"])
async def facility_ledger(
    member_state: str, request: Request, limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, max_length=100), who: Principal = Depends(reader),
) -> schemas.LedgerPage:
    """The facility's ledger entries, oldest first (keyset pagination); a Member State reads its own only."""
    rt, _settings = _rt(request)
    after = decode_cursor(cursor)
    scope.own_facility(who, _ms(member_state))
    q = select(LedgerEntry).where(LedgerEntry.member_state == _ms(member_state))
    if after is not None:
        q = q.where(col(LedgerEntry.id) > after)
    async with rt.factory() as session:  # type: ignore[misc]
        if await session.get(FacilityRow, _ms(member_state)) is None:
            raise HTTPException(404, f"{_ms(member_state)} has no SAFE loan facility")
        rows = (await session.exec(q.order_by(col(LedgerEntry.id)).limit(limit + 1))).all()
        page = rows[:limit]
        cleared = await ledger.clearings(session, [e.id for e in page if e.kind == "instalment" and e.id is not None])
    return schemas.LedgerPage(items=[_entry(e, cleared.get(e.id or 0)) for e in page],
                              next_cursor=encode_cursor(page[-1].id) if len(rows) > limit else None)


@router.get("/facilities/{member_state}/status-history", response_model=schemas.StatusHistory, tags=["facilities"])
async def facility_status_history(member_state: str, request: Request,
                                  who: Principal = Depends(reader)) -> schemas.StatusHistory:
    """Every lifecycle change of the facility (L-8), oldest first: from, to, date, reference, reason, who; a
    Member State reads its own only."""
    rt, _settings = _rt(request)
    ms = _ms(member_state)
    scope.own_facility(who, ms)
    async with rt.factory() as session:  # type: ignore[misc]
        if await session.get(FacilityRow, ms) is None:
            raise HTTPException(404, f"{ms} has no SAFE loan facility")
        rows = (await session.exec(select(FacilityStatusChangeRow).where(FacilityStatusChangeRow.member_state == ms)
                                   .order_by(col(FacilityStatusChangeRow.id)))).all()
    return schemas.StatusHistory(items=[schemas.StatusChangePublic(**r.model_dump()) for r in rows])


# --- investment plans ---------------------------------------------------------------------------------------


async def _plan(session: AsyncSession, ms: str) -> schemas.PlanPublic:
    row = await session.get(FacilityRow, ms)
    if row is None:
        raise HTTPException(404, f"{ms} has no SAFE loan facility")
    lines = (await ledger.plan_lines(session, [ms])).get(ms, {})
    drawn = (await ledger.plan_drawn(session, [ms])).get(ms, {})
    return schemas.PlanPublic(
        member_state=ms, supports_ukraine=row.supports_ukraine, version=row.plan_version, source=row.plan_source,
        lines=[schemas.PlanLinePublic(category=c, amount_eur=a, drawn_eur=drawn.get(c, ZERO),
                                      remaining_eur=a - drawn.get(c, ZERO)) for c, a in sorted(lines.items())],
        uncovered=[c.value for c in Category if c.value not in lines],
    )


@router.get("/facilities/{member_state}/plan", response_model=schemas.PlanPublic, tags=["investment plans"])
async def get_plan(member_state: str, request: Request, who: Principal = Depends(reader)) -> schemas.PlanPublic:
    """The Member State's investment plan: lines by category, what approved loans drew, what remains (a Member
    State reads its own only)."""
    rt, _settings = _rt(request)
    scope.own_facility(who, _ms(member_state))
    async with rt.factory() as session:  # type: ignore[misc]
        return await _plan(session, _ms(member_state))


@router.put("/facilities/{member_state}/plan", response_model=schemas.PlanPublic, tags=["investment plans"],
            responses={404: {"description": "No such facility"}, 422: {"description": "Invalid body"}},
            openapi_extra=_body(schemas.PlanUpdate))
@approvals.gated("plan.amend", parse=lambda raw: schemas.parse_body(schemas.PlanUpdate, raw))
async def put_plan(member_state: str, request: Request, who: Principal = Depends(operator)) -> Any:
    """Replace (narrow or amend) the investment plan; audited with the reason. A loan request whose categories
    the plan does not cover, or whose amount exceeds what their lines have left, is rejected with rule PLAN."""
    body = await _parse(request, schemas.PlanUpdate)
    if isinstance(body, JSONResponse):
        return body
    rt, _settings = _rt(request)
    ms = _ms(member_state)
    try:
        async with begin(rt.factory, LoanUnitOfWork) as uow:  # type: ignore[arg-type]
            await handlers.amend_plan(uow, ms, {line.category.value: line.amount_eur for line in body.lines},
                                      supports_ukraine=body.supports_ukraine, source=body.source,
                                      reason=body.reason, actor=who.name)
    except handlers.NotFound:
        raise HTTPException(404, f"{ms} has no SAFE loan facility") from None
    async with rt.factory() as session:  # type: ignore[misc]
        return await _plan(session, ms)


# --- loans ----------------------------------------------------------------------------------------------


@router.get("/loans", response_model=schemas.LoanList, tags=["loans"])
async def list_loans(
    request: Request,
    case_id: str | None = Query(default=None, max_length=100),
    member_state: str | None = Query(default=None, min_length=2, max_length=2),
    status: str | None = Query(default=None, pattern="^(active|released)$"),
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, max_length=100),
    who: Principal = Depends(reader),
) -> schemas.LoanList:
    """Approved loans, oldest first (keyset pagination on the time-ordered loan id), filtered by case, Member
    State and status; a Member State token lists the loans of the cases it takes part in or lends to."""
    rt, _settings = _rt(request)
    after = decode_text_cursor(cursor, _LOAN_ID)
    q = select(LoanRow).where(scope.loans_condition(who))
    if after is not None:
        q = q.where(col(LoanRow.loan_id) > after)
    if case_id:
        q = q.where(LoanRow.case_id == case_id)
    if member_state:
        q = q.where(LoanRow.member_state == _ms(member_state))
    if status:
        q = q.where(LoanRow.status == status)
    async with rt.factory() as session:  # type: ignore[misc]
        rows = (await session.exec(q.order_by(col(LoanRow.loan_id)).limit(limit + 1))).all()
        page = rows[:limit]
        return schemas.LoanList(items=[await _loan(session, r) for r in page],
                                next_cursor=encode_cursor(page[-1].loan_id) if len(rows) > limit else None)


@router.get("/loans/{loan_id}", response_model=schemas.LoanPublic, tags=["loans"])
async def get_loan(loan_id: str, request: Request, who: Principal = Depends(reader)) -> schemas.LoanPublic:
    """One loan: amount, status, instalments paid and what remains."""
    rt, _settings = _rt(request)
    async with rt.factory() as session:  # type: ignore[misc]
        loan = await session.get(LoanRow, loan_id)
        if loan is not None and not await scope.case_concerns(session, who, loan.case_id):
            loan = None
        if loan is None:
            raise HTTPException(404, "no such loan")
        return await _loan(session, loan)


@router.post("/loans/{loan_id}/instalments", status_code=201, response_model=schemas.LedgerEntryPublic,
             tags=["loans"], responses={404: {"description": "No such loan"}, **_REFUSAL},
             openapi_extra=_body(schemas.PaymentRequest))
@approvals.gated("instalment.pay", parse=lambda raw: schemas.parse_body(schemas.PaymentRequest, raw),
                  amount=lambda body: body.amount_eur)
async def pay_instalment(loan_id: str, request: Request, who: Principal = Depends(operator)) -> Any:
    """Pay an instalment: cumulative ≤ the approved loan (L-3), dated ≤ the last request date, 2030-12-31 by
    default (L-4), never while the facility is suspended (L-5). 201 with the ledger entry; 422 with the reasons."""
    body = await _parse(request, schemas.PaymentRequest)
    if isinstance(body, JSONResponse):
        return body
    rt, settings = _rt(request)
    try:
        async with begin(rt.factory, LoanUnitOfWork) as uow:  # type: ignore[arg-type]
            outcome = await handlers.pay_instalment(uow, loan_id, body.amount_eur, body.requested_on,
                                                    actor=who.name, note=body.note,
                                                    last_request_on=settings.last_request_on)
    except handlers.NotFound:
        raise HTTPException(404, "no such loan") from None
    if not outcome.ok:
        return _refusal(outcome.reasons)
    assert outcome.entry is not None
    return _entry(outcome.entry, outcome.cleared)


@router.get("/loan-requests/{case_id}", response_model=schemas.LoanRequestPublic, tags=["loans"])
async def get_loan_request(case_id: str, request: Request, who: Principal = Depends(reader)) -> schemas.LoanRequestPublic:
    """The recorded decision for a case: approved or rejected, every reason, the loans."""
    rt, _settings = _rt(request)
    async with rt.factory() as session:  # type: ignore[misc]
        row = await session.get(LoanRequestRow, case_id)
        if row is None or not await scope.case_concerns(session, who, case_id, json.loads(row.participants)):
            raise HTTPException(404, "no loan decision for this case")
        loans = (await session.exec(select(LoanRow).where(LoanRow.case_id == case_id)
                                    .order_by(col(LoanRow.member_state)))).all()
        return schemas.LoanRequestPublic(
            case_id=row.case_id, reference=row.reference, status=row.status,
            verification_outcome=row.verification_outcome, requested=json.loads(row.requested),
            categories=json.loads(row.categories),
            reasons=[schemas.ReasonPublic(**r) for r in json.loads(row.reasons)],
            decided_at=row.decided_at, withdrawn_at=row.withdrawn_at, loans=[await _loan(session, x) for x in loans],
            assumptions=json.loads(row.assumptions or "[]"),
        )


# --- reconciliation ---------------------------------------------------------------------------------------


@router.get("/ledger/check", tags=["ledger"], responses=TOO_MANY)
async def ledger_check(request: Request, _: Principal = Depends(staff)) -> dict[str, Any]:
    """Reconcile: balances recomputed from the ledger vs. the approved loans; every difference listed (it names
    every state's facility, loans and amounts: operators and auditors only)."""
    rt, settings = _rt(request)
    # it share-locks every facility and reads the whole ledger: two at a time per process, more answer 429
    async with budget_of(rt.budgets, "ledger-check", 2).slot(), transaction(rt.factory) as session:  # type: ignore[arg-type]
        report = await ledger.reconcile(session, pre_financing_share=settings.pre_financing_share)
    return report.as_dict()
