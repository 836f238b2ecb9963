"""HTTP entrypoints of the partner registry."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlmodel import col, or_, select

from safe_procurement.services.partner_registry.adapters import repository as repo
from safe_procurement.services.partner_registry.adapters.tables import AgreementVersionRow, CountryVersionRow
from safe_procurement.services.partner_registry.domain import registry
from safe_procurement.services.partner_registry.entrypoints import admin_schemas as schemas
from safe_procurement.services.partner_registry.service_layer import handlers
from safe_procurement.shared.contracts import countries
from safe_procurement.shared.contracts.events import GROUPS
from safe_procurement.shared.kit import approvals
from safe_procurement.shared.kit.app import runtime_of, validation_errors
from safe_procurement.shared.kit.auth import Principal, operator, reader
from safe_procurement.shared.kit.tables import AuditEntry
from safe_procurement.shared.kit.uow import begin

router = APIRouter(tags=["partner registry"])

_AS_OF = Query(default=None, ge=0, description="Answer as the registry stood at this registry version (default: now)")


def _today() -> date:
    return datetime.now(UTC).date()


def _invalid(field: str, msg: str, type_: str = "value_error") -> JSONResponse:
    return JSONResponse({"detail": [{"loc": ["body", field], "field": field, "msg": msg, "type": type_}]},
                        status_code=422)


def _code(raw: str, where: str = "code") -> str:
    if not countries.is_known(raw):
        detail = [{"loc": ["path" if where == "code" else "query", where], "field": where,
                   "msg": f"{raw!r} is not an ISO 3166-1 alpha-2 country code (EL/GR, UK/GB and XK accepted)",
                   "type": "value_error"}]
        raise HTTPException(422, detail)
    return countries.canonical(raw)


def _utc(at: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were written in UTC
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _agreement(row: AgreementVersionRow, *, current: bool) -> schemas.AgreementPublic:
    t = repo.terms_of(row)
    return schemas.AgreementPublic(
        id=row.agreement_id, version=row.version, current=current, registry_version=row.registry_version,
        country=row.country, kind=row.kind, status=row.status, effective_from=row.effective_from,
        effective_to=row.effective_to, content_counts_as_eligible=row.content_counts_as_eligible,
        max_content_share=t.max_content_share, entities_eligible=row.entities_eligible, source=row.source,
        confidence=row.confidence, unconfirmed=row.unconfirmed, note=row.note, origin=row.origin,
        supersedes=json.loads(row.supersedes) if row.supersedes else [], recorded_by=row.recorded_by,
        recorded_at=_utc(row.recorded_at), reason=row.reason,
    )


def _country_view(
    code: str, on: date, registry_version: int, row: CountryVersionRow | None, agreements: list[AgreementVersionRow]
) -> schemas.CountryPublic:
    latest = repo.latest_agreements(agreements)
    records = [_agreement(r, current=True) for r in latest.values()]
    in_force = [_agreement(r, current=True) for r in latest.values() if repo.terms_of(r).in_force_on(on)]
    if row is None:
        return schemas.CountryPublic(
            code=code, on=on, known=False, name=None, groups=[], sdp=None, partnership=None, agreements=in_force,
            agreement_records=records, memberships=[], version=None, registry_version=registry_version,
            source=None, confidence=None,
        )
    record = repo.country_of(row)
    sdp = record.sdp_on(on)
    p = record.partnership
    return schemas.CountryPublic(
        code=code, on=on, known=True, name=record.name, groups=record.groups_on(on),
        sdp=schemas.SdpPublic(signed_on=sdp.effective_from, source=sdp.source, confidence=sdp.confidence)
        if sdp else None,
        partnership=schemas.PartnershipPublic(level=p.level, note=p.note, source=p.source, confidence=p.confidence)
        if p else None,
        agreements=in_force, agreement_records=records,
        memberships=[
            schemas.MembershipPublic(group=m.group, effective_from=m.effective_from, effective_to=m.effective_to,
                                     source=m.source, confidence=m.confidence, in_force=m.in_force(on))
            for m in record.memberships
        ],
        version=row.version, registry_version=registry_version, source=record.source, confidence=record.confidence,
    )


async def _registry_version(session: Any, as_of: int | None) -> int:
    current = (await repo.meta(session)).registry_version
    return current if as_of is None else min(as_of, current)


@router.get("/countries/{code}", response_model=schemas.CountryPublic)
async def get_country(
    code: str, request: Request,
    on: date | None = Query(default=None, description="Evaluation date, YYYY-MM-DD (default: today, UTC)"),
    registry_version: int | None = _AS_OF,
    _: Principal = Depends(reader),
) -> schemas.CountryPublic:
    """The country's groups, SDP, partnership level and agreements in force on a date (aliases EL/GR, UK/GB)."""
    canonical = _code(code)
    rt = runtime_of(request)
    async with rt.factory() as session:
        rv = await _registry_version(session, registry_version)
        rows = repo.latest_countries(await repo.country_rows(session, country=canonical, as_of=rv))
        agreements = await repo.agreement_rows(session, country=canonical, as_of=rv)
    return _country_view(canonical, on or _today(), rv, rows.get(canonical), agreements)


@router.get("/countries", response_model=list[schemas.CountryPublic])
async def list_countries(
    request: Request,
    on: date | None = Query(default=None, description="Evaluation date, YYYY-MM-DD (default: today, UTC)"),
    group: str | None = Query(default=None, description="Only countries in this group on that date"),
    registry_version: int | None = _AS_OF,
    _: Principal = Depends(reader),
) -> list[schemas.CountryPublic]:
    """Every country record the registry holds, evaluated on a date."""
    if group is not None and group not in GROUPS:
        raise HTTPException(422, [{"loc": ["query", "group"], "field": "group",
                                   "msg": f"unknown group; groups are {', '.join(GROUPS)}", "type": "value_error"}])
    day = on or _today()
    rt = runtime_of(request)
    async with rt.factory() as session:
        rv = await _registry_version(session, registry_version)
        rows = repo.latest_countries(await repo.country_rows(session, as_of=rv))
        agreements = await repo.agreement_rows(session, as_of=rv)
    by_country: dict[str, list[AgreementVersionRow]] = {}
    for a in agreements:
        by_country.setdefault(a.country, []).append(a)
    views = [_country_view(c, day, rv, r, by_country.get(c, [])) for c, r in sorted(rows.items())]
    return [v for v in views if group is None or group in v.groups]


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    # parsed from the raw bytes so that JSON numbers become exact Decimals, never floats
    return model.model_validate_json(raw or b"null")


def _terms(body: schemas.AgreementCreate, country: str, status: str = registry.IN_FORCE) -> registry.AgreementTerms:
    return registry.AgreementTerms(
        country=country, kind=body.kind, status=status, effective_from=body.effective_from,
        effective_to=body.effective_to, content_counts_as_eligible=body.content_counts_as_eligible,
        max_content_share=body.max_content_share, entities_eligible=body.entities_eligible, source=body.source,
        confidence=body.confidence, unconfirmed=body.unconfirmed, note=body.note,
    )


def _created(published: handlers.Published) -> dict[str, Any]:
    return json.loads(_agreement(published.agreements[0], current=True).model_dump_json())


_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "Overlaps a confirmed agreement in force for the same country and kind"},
    422: {"description": "Invalid body: every offending field is listed"},
}


@router.post(
    "/agreements", status_code=201, response_model=schemas.AgreementPublic, responses=_WRITE_RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/AgreementCreate"}}}}},
)
@approvals.gated("agreement.record", parse=lambda raw: _parse(schemas.AgreementCreate, raw))
async def record_agreement(request: Request, who: Principal = Depends(operator)) -> Any:
    """Record a participation agreement (effective-dated) and announce it. An overlap with a confirmed agreement
    in force answers 409; an overlap with an unconfirmed seeded placeholder supersedes the placeholder."""
    try:
        body: schemas.AgreementCreate = _parse(schemas.AgreementCreate, await request.body())
    except ValidationError as e:
        return JSONResponse({"detail": validation_errors(e.errors(include_url=False))}, status_code=422)
    rt = runtime_of(request)
    try:
        async with begin(rt.factory, repo.RegistryUnitOfWork) as uow:
            published = await handlers.record_agreement(_terms(body, body.country), uow, actor=who.name)
    except registry.InvalidTerms as e:
        return _invalid(e.field, str(e))
    except registry.Conflict as e:
        return JSONResponse({"detail": str(e), "conflicts": [a.id for a in e.agreements]}, status_code=409)
    rt.wake_relay()
    return JSONResponse(_created(published), status_code=201)


@router.post(
    "/agreements/{agreement_id}/corrections", status_code=201, response_model=schemas.AgreementPublic,
    responses={404: {"description": "No such agreement"}, **_WRITE_RESPONSES},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/AgreementCorrection"}}}}},
)
@approvals.gated("agreement.correct", parse=lambda raw: _parse(schemas.AgreementCorrection, raw))
async def correct_agreement(agreement_id: str, request: Request, who: Principal = Depends(operator)) -> Any:
    """Correct an agreement: a new version with the full corrected terms and a reason; earlier versions stay."""
    try:
        body: schemas.AgreementCorrection = _parse(schemas.AgreementCorrection, await request.body())
    except ValidationError as e:
        return JSONResponse({"detail": validation_errors(e.errors(include_url=False))}, status_code=422)
    rt = runtime_of(request)
    try:
        async with begin(rt.factory, repo.RegistryUnitOfWork) as uow:
            rows = await uow.registry.agreements(agreement_id=agreement_id)
            if not rows:
                raise handlers.NotFound(agreement_id)
            country = body.country or rows[-1].country
            published = await handlers.correct_agreement(
                agreement_id, _terms(body, country, body.status), uow, actor=who.name, reason=body.reason
            )
    except handlers.NotFound:
        raise HTTPException(404, f"no agreement {agreement_id!r}") from None
    except registry.InvalidTerms as e:
        return _invalid(e.field, str(e))
    except (registry.Conflict, handlers.NothingToCorrect) as e:
        conflicts = [a.id for a in e.agreements] if isinstance(e, registry.Conflict) else []
        return JSONResponse({"detail": str(e), "conflicts": conflicts}, status_code=409)
    rt.wake_relay()
    return JSONResponse(_created(published), status_code=201)


@router.get("/agreements", response_model=list[schemas.AgreementPublic])
async def list_agreements(
    request: Request,
    country: str | None = Query(default=None, max_length=2, description="Only this country's agreements"),
    _: Principal = Depends(reader),
) -> list[schemas.AgreementPublic]:
    """Every version of every agreement (history included), by agreement then version; `current` marks the latest."""
    code = _code(country, "country") if country is not None else None
    rt = runtime_of(request)
    async with rt.factory() as session:
        rows = await repo.agreement_rows(session, country=code)
    latest = {k: v.version for k, v in repo.latest_agreements(rows).items()}
    return [_agreement(r, current=latest[r.agreement_id] == r.version) for r in rows]


@router.get("/agreements/{agreement_id}", response_model=list[schemas.AgreementPublic])
async def get_agreement(agreement_id: str, request: Request, _: Principal = Depends(reader)) -> Any:
    """Every version of one agreement, oldest first."""
    rt = runtime_of(request)
    async with rt.factory() as session:
        rows = await repo.agreement_rows(session, agreement_id=agreement_id)
    if not rows:
        raise HTTPException(404, f"no agreement {agreement_id!r}")
    return [_agreement(r, current=r is rows[-1]) for r in rows]


def _details(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"text": raw}
    return value if isinstance(value, dict) else {"value": value}


@router.get("/history", response_model=schemas.History)
async def history(
    request: Request,
    country: str | None = Query(default=None, max_length=2, description="Only this country's records"),
    limit: int = Query(default=1000, ge=1, le=10_000),
    _: Principal = Depends(reader),
) -> schemas.History:
    """Who changed what, when, on which source: every country and agreement version and the audit trail, newest first."""
    code = _code(country, "country") if country is not None else None
    rt = runtime_of(request)
    async with rt.factory() as session:
        c_rows = await repo.country_rows(session, country=code)
        a_rows = await repo.agreement_rows(session, country=code)
        q = select(AuditEntry)
        if code is not None:
            q = q.where(or_(AuditEntry.correlation_id == code, AuditEntry.correlation_id == "registry"))
        audit = (await session.exec(q.order_by(col(AuditEntry.id).desc()).limit(limit))).all()
    items = [
        schemas.HistoryEntry(at=_utc(r.recorded_at), kind="country_version", actor=r.recorded_by,
                             action=f"country.{r.origin}", target=f"countries/{r.country}",
                             registry_version=r.registry_version, version=r.version, source=r.source, reason=r.reason,
                             details={"groups": [m["group"] for m in json.loads(r.memberships)],
                                      "partnership_level": r.partnership_level})
        for r in c_rows
    ] + [
        schemas.HistoryEntry(at=_utc(r.recorded_at), kind="agreement_version", actor=r.recorded_by,
                             action=f"agreement.{r.origin}", target=f"agreements/{r.agreement_id}",
                             registry_version=r.registry_version, version=r.version, source=r.source, reason=r.reason,
                             details={"status": r.status, "effective_from": str(r.effective_from or "") or None,
                                      "effective_to": str(r.effective_to or "") or None,
                                      "max_content_share": r.max_content_share, "unconfirmed": r.unconfirmed})
        for r in a_rows
    ] + [
        schemas.HistoryEntry(at=_utc(a.at), kind="audit", actor=a.actor, action=a.action, target=a.target,
                             registry_version=None, version=None, source=None, reason=a.reason,
                             details=_details(a.details))
        for a in audit
    ]
    items.sort(key=lambda i: i.at, reverse=True)
    return schemas.History(country=code, items=items[:limit])
