"""Four-eyes approval (maker-checker) for money and reference-data changes, on any service.

Gating an action is one decorator on its route (`@approvals.gated("instalment.pay", body=PaymentRequest,
amount=lambda b: b.amount_eur)`). When four-eyes applies, the route does not run: the request (path parameters
and body, never the token) is stored as a pending approval and answered `202 {"approval_id", ...}`. Another
operator — a different token than the maker's — approves or rejects it with a reason (`POST
/approvals/{id}/approve|reject`); approving runs the stored request once, in process, as the maker, and keeps
its answer. A request expires after `SAFE_FOUR_EYES_TTL_S`; amounts under a threshold (`SAFE_FOUR_EYES_THRESHOLDS`
`action=EUR,...`) need one person. Every step is an entry in the audit chain.

Exactly once: the approval is claimed by one conditional UPDATE (`status = 'pending'` and not expired); of two
approvals at the same moment one claims it, the other answers 409. A crash between the claim and the end of the
action leaves the approval `approved` without a result: the action's own audit entry and ledger show whether it
ran; it is never run a second time automatically.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel, col, select

from safe_procurement.shared.kit.auth import Principal, operator, staff
from safe_procurement.shared.kit.db import transaction
from safe_procurement.shared.kit.tables import TS, AuditEntry, utcnow
from safe_procurement.shared.kit.web import UtcDateTime, _as_utc

log = logging.getLogger("safe.approvals")

_EXECUTING = "safe.approval"  # ASGI scope key the executor sets: the gate lets the stored request through
# action → the undecorated route, per owning runtime (None: a module-level route)
_ACTIONS: dict[tuple[str, int | None], Callable[..., Awaitable[Any]]] = {}
STATUSES = ("pending", "approved", "executed", "failed", "rejected", "expired")


class ApprovalRow(SQLModel, table=True):
    __tablename__ = "approvals"
    id: str = SQLField(primary_key=True)
    action: str
    target: str
    method: str
    path: str
    request: str  # JSON: the route's arguments (path parameters, models) and the raw body
    amount_eur: Decimal | None = SQLField(default=None, sa_type=sa.Numeric(18, 2))
    reason: str | None = None
    status: str = "pending"
    maker_role: str
    maker_key: str
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=TS)
    expires_at: datetime = SQLField(sa_type=TS)
    checker_role: str | None = None
    checker_key: str | None = None
    decided_at: datetime | None = SQLField(default=None, sa_type=TS)
    decision_reason: str | None = None
    result_status: int | None = None
    result: str | None = None
    executed_at: datetime | None = SQLField(default=None, sa_type=TS)


# --- settings -------------------------------------------------------------------------------------


def enabled(settings: Any) -> bool:
    """On outside SAFE_ENV=dev unless SAFE_FOUR_EYES=false; off in dev unless SAFE_FOUR_EYES=true."""
    explicit = getattr(settings, "four_eyes", None)
    return bool(explicit) if explicit is not None else not settings.is_dev


def thresholds(settings: Any) -> dict[str, Decimal]:
    spec = getattr(settings, "four_eyes_thresholds", "") or ""
    out: dict[str, Decimal] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise InvalidOperation
            out[name.strip()] = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"SAFE_FOUR_EYES_THRESHOLDS: {part!r} is not action=EUR") from None
    return out


def needs_second_person(settings: Any, action: str, amount: Decimal | None) -> bool:
    if not enabled(settings):
        return False
    limit = thresholds(settings).get(action)
    return limit is None or amount is None or amount >= limit


# --- the gate -------------------------------------------------------------------------------------


def _principal_in(kwargs: dict[str, Any]) -> Principal:
    for v in kwargs.values():
        if isinstance(v, Principal):
            return v
    raise RuntimeError("a gated route needs the operator Principal among its parameters")


def _stored_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for name, v in kwargs.items():
        if isinstance(v, Request):
            continue
        if isinstance(v, Principal):
            args[name] = {"principal": True}  # carried out as the maker, by role and key; the token is never kept
            continue
        if isinstance(v, BaseModel):
            args[name] = {"model": f"{type(v).__module__}:{type(v).__qualname__}", "value": v.model_dump(mode="json")}
        else:
            args[name] = {"value": v}
    return args


def _revived_args(stored: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, a in stored.items():
        if a.get("principal"):
            continue
        if "model" in a:
            module, _, qual = a["model"].partition(":")
            cls: Any = importlib.import_module(module)
            for part in qual.split("."):
                cls = getattr(cls, part)
            out[name] = cls.model_validate(a["value"])
        else:
            out[name] = a["value"]
    return out


def gated(action: str, *, parse: Callable[[bytes], Any] | None = None,
          amount: Callable[[Any], Decimal | None] | None = None,
          when: Callable[[dict[str, Any], Any], bool] | None = None, owner: Any = None) -> Callable[[Any], Any]:
    """Make a route need four eyes. The route must take `request: Request` and its operator `Principal`.
    `parse`: the route's own parsing of its raw body (a body it refuses runs the route, which answers 422 at once
    and changes nothing — so it must be the very function the route uses); `amount`: the EUR amount compared
    with the action's threshold; `when(kwargs, parsed)`: gate only when this says so; `owner`: the runtime a route
    built per app closes over (the approval is carried out by that app's route)."""

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def gate(**kwargs: Any) -> Any:
            request: Request = kwargs["request"]
            if request.scope.get(_EXECUTING):
                return await fn(**kwargs)
            rt = request.app.state.runtime
            raw = await request.body()
            parsed: Any = None
            if parse is not None:
                try:
                    parsed = parse(raw)
                except Exception:
                    return await fn(**kwargs)  # answers 422 with every offending field, changes nothing
            if when is not None and not when(kwargs, parsed):
                return await fn(**kwargs)
            amt = amount(parsed) if amount is not None and parsed is not None else None
            if not needs_second_person(rt.settings, action, amt):
                return await fn(**kwargs)
            who = _principal_in(kwargs)
            # the status the route answers when it returns a model (e.g. 201), kept for when it is carried out
            status = getattr(request.scope.get("route"), "status_code", None) or 200
            row = await request_approval(rt, status=status, action=action, target=request.url.path, method=request.method,
                                         path=request.url.path, args=_stored_args(kwargs),
                                         raw=raw.decode("utf-8", "surrogateescape"), amount=amt,
                                         reason=getattr(parsed, "reason", None), maker=who)
            return JSONResponse(
                {"approval_id": row.id, "status": "pending", "action": action, "target": row.target,
                 "expires_at": _as_utc(row.expires_at).isoformat(),  # type: ignore[union-attr]
                 "detail": "needs the approval of a second operator: POST /approvals/{id}/approve"},
                status_code=202, headers={"Location": f"/approvals/{row.id}"},
            )

        _ACTIONS[(action, None if owner is None else id(owner))] = fn
        return gate

    return decorate


def _action_of(app: Any, action: str) -> Callable[..., Awaitable[Any]] | None:
    """The undecorated route of `action`: the one built for this app's runtime (kit routes close over it), else
    the module-level one (service routes find their runtime through the request)."""
    return _ACTIONS.get((action, id(app.state.runtime))) or _ACTIONS.get((action, None))


def _audit(session: Any, actor: Principal | str, action: str, row: ApprovalRow, reason: str | None,
           **details: Any) -> None:
    role = actor.role if isinstance(actor, Principal) else actor
    key = actor.key if isinstance(actor, Principal) else None
    session.add(AuditEntry(actor=role, action=action, target=f"approvals/{row.id}", reason=reason,
                           details=json.dumps({"approval_id": row.id, "action": row.action, "target": row.target,
                                               "amount_eur": None if row.amount_eur is None else str(row.amount_eur),
                                               "actor_key": key, **details}, default=str)))


async def request_approval(rt: Any, *, status: int = 200, action: str, target: str, method: str, path: str, args: dict[str, Any],
                           raw: str, amount: Decimal | None, reason: str | None, maker: Principal) -> ApprovalRow:
    now = rt.clock()
    row = ApprovalRow(
        id=str(uuid.uuid4()), action=action, target=target, method=method, path=path,
        request=json.dumps({"args": args, "body": raw, "status": status}), amount_eur=amount, reason=reason,
        maker_role=maker.role, maker_key=maker.key, created_at=now,
        expires_at=now + timedelta(seconds=float(getattr(rt.settings, "four_eyes_ttl_s", 172800.0))),
    )
    async with transaction(rt.factory) as session:
        session.add(row)
        _audit(session, maker, "approval.request", row, reason, expires_at=row.expires_at.isoformat())
    return row


# --- deciding and carrying out ------------------------------------------------------------------


class DecisionRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="Why the second operator approves or rejects")


class ApprovalPublic(BaseModel):
    id: str
    action: str = Field(description="What is asked, e.g. instalment.pay, facility.update, dead_letter.replay")
    target: str = Field(description="The path the request was made to")
    method: str
    body: Any = Field(description="The request body as the maker sent it")
    amount_eur: str | None = Field(description="The amount compared with the action's threshold, if any")
    reason: str | None = Field(description="The maker's reason, if the body gave one")
    status: str = Field(description="pending | approved | executed | failed | rejected | expired")
    maker_role: str
    maker_key: str = Field(description="Identifies the maker's token (a digest, never the token)")
    created_at: UtcDateTime
    expires_at: UtcDateTime
    checker_role: str | None
    checker_key: str | None
    decided_at: UtcDateTime | None
    decision_reason: str | None
    result_status: int | None = Field(description="The HTTP status the action answered when carried out")
    result: Any = Field(description="The action's answer when carried out")
    executed_at: UtcDateTime | None


class ApprovalPage(BaseModel):
    items: list[ApprovalPublic]


def _public(row: ApprovalRow, now: datetime) -> ApprovalPublic:
    stored = json.loads(row.request)
    try:
        body: Any = json.loads(stored["body"]) if stored["body"] else None
    except ValueError:
        body = stored["body"]
    status = row.status
    if status == "pending" and _as_utc(row.expires_at) <= now:  # type: ignore[operator]
        status = "expired"
    return ApprovalPublic(
        id=row.id, action=row.action, target=row.target, method=row.method, body=body,
        amount_eur=None if row.amount_eur is None else str(row.amount_eur), reason=row.reason, status=status,
        maker_role=row.maker_role, maker_key=row.maker_key, created_at=row.created_at, expires_at=row.expires_at,
        checker_role=row.checker_role, checker_key=row.checker_key, decided_at=row.decided_at,
        decision_reason=row.decision_reason, result_status=row.result_status,
        result=json.loads(row.result) if row.result else None, executed_at=row.executed_at,
    )


async def _carry_out(app: Any, row: ApprovalRow) -> tuple[int, Any]:
    fn = _action_of(app, row.action)
    if fn is None:
        return 500, {"detail": f"no gated action {row.action!r} in this service"}
    stored = json.loads(row.request)
    raw = stored["body"].encode("utf-8", "surrogateescape")
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    scope = {"type": "http", "method": row.method, "path": row.path, "raw_path": row.path.encode(),
             "query_string": b"", "headers": [(b"content-type", b"application/json")], "app": app,
             "state": {}, _EXECUTING: row.id}
    kwargs = _revived_args(stored["args"])
    kwargs["request"] = Request(scope, receive)
    maker = Principal(role=row.maker_role, name=row.maker_role, key=row.maker_key)
    kwargs.update({name: maker for name, a in stored["args"].items() if a.get("principal")})
    try:
        out = await fn(**kwargs)
    except HTTPException as e:
        return e.status_code, {"detail": e.detail}
    except Exception as e:  # recorded on the approval; the action's own transaction rolled back
        log.exception("approved action failed", extra={"approval_id": row.id, "action": row.action})
        return 500, {"detail": f"{type(e).__name__}: {e}"}
    if isinstance(out, Response):
        try:
            return out.status_code, json.loads(bytes(out.body)) if out.body else None
        except ValueError:
            return out.status_code, bytes(out.body).decode("utf-8", "replace")
    ok = int(stored.get("status", 200))
    if isinstance(out, BaseModel):
        return ok, out.model_dump(mode="json")
    return ok, json.loads(json.dumps(out, default=str))


def router(runtime: Any) -> APIRouter:
    r = APIRouter()

    def now() -> datetime:
        return runtime.clock()

    _read_routes(r, runtime, now)
    _decision_routes(r, runtime, now)
    return r


def _read_routes(r: APIRouter, runtime: Any, now: Callable[[], datetime]) -> None:
    @r.get("/approvals", response_model=ApprovalPage, tags=["approvals"])
    async def list_approvals(
        status: str | None = Query(default=None, pattern="^(" + "|".join(STATUSES) + ")$"),
        action: str | None = Query(default=None, max_length=100),
        limit: int = Query(default=100, ge=1, le=500),
        _who: Principal = Depends(staff),
    ) -> ApprovalPage:
        """Four-eyes requests, newest first (`status=pending`: those waiting for a second operator)."""
        t = now()
        async with runtime.factory() as s:
            q = select(ApprovalRow).order_by(col(ApprovalRow.created_at).desc())
            if status == "pending":
                q = q.where(ApprovalRow.status == "pending", col(ApprovalRow.expires_at) > t)
            elif status == "expired":
                q = q.where(sa.or_(ApprovalRow.status == "expired",
                                   sa.and_(ApprovalRow.status == "pending", col(ApprovalRow.expires_at) <= t)))
            elif status:
                q = q.where(ApprovalRow.status == status)
            if action:
                q = q.where(ApprovalRow.action == action)
            rows = (await s.exec(q.limit(limit))).all()
        return ApprovalPage(items=[_public(row, t) for row in rows])

    @r.get("/approvals/{approval_id}", response_model=ApprovalPublic, tags=["approvals"])
    async def get_approval(approval_id: str, _who: Principal = Depends(staff)) -> ApprovalPublic:
        """One four-eyes request with its decision and, once carried out, the action's answer."""
        async with runtime.factory() as s:
            row = await s.get(ApprovalRow, approval_id)
        if row is None:
            raise HTTPException(404, "no such approval")
        return _public(row, now())


async def _decide(runtime: Any, now: Callable[[], datetime], approval_id: str, who: Principal, reason: str,
                  approve: bool) -> ApprovalRow:
    """Record a second operator's decision on a pending request (exactly one decision wins)."""
    t = now()
    expired = False
    async with transaction(runtime.factory) as s:
        row = await s.get(ApprovalRow, approval_id)
        if row is None:
            raise HTTPException(404, "no such approval")
        if row.status != "pending":
            raise HTTPException(409, f"approval is already {row.status}")
        if who.key == row.maker_key:
            raise HTTPException(403, "the operator who made the request cannot decide it: a second operator must")
        if _as_utc(row.expires_at) <= t:  # type: ignore[operator]
            expired = True
            claimed = await s.execute(sa.update(ApprovalRow).where(
                col(ApprovalRow.id) == approval_id, col(ApprovalRow.status) == "pending").values(status="expired"))
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                _audit(s, "system", "approval.expire", row, "expired before a decision",
                       expires_at=_as_utc(row.expires_at).isoformat())  # type: ignore[union-attr]
        else:
            status = "approved" if approve else "rejected"
            claimed = await s.execute(sa.update(ApprovalRow).where(
                col(ApprovalRow.id) == approval_id, col(ApprovalRow.status) == "pending",
            ).values(status=status, checker_role=who.role, checker_key=who.key, decided_at=t,
                     decision_reason=reason))
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise HTTPException(409, "approval was decided by someone else meanwhile")
            _audit(s, who, f"approval.{'approve' if approve else 'reject'}", row, reason,
                   maker_key=row.maker_key)
    if expired:
        raise HTTPException(409, "approval expired before a decision; nothing was done")
    async with runtime.factory() as s:
        fresh = await s.get(ApprovalRow, approval_id)
    assert fresh is not None
    return fresh


def _decision_routes(r: APIRouter, runtime: Any, now: Callable[[], datetime]) -> None:
    @r.post("/approvals/{approval_id}/approve", response_model=ApprovalPublic, tags=["approvals"],
            responses={403: {"description": "The maker cannot approve their own request"},
                       409: {"description": "Already decided or expired"}})
    async def approve(approval_id: str, body: DecisionRequest, request: Request,
                      who: Principal = Depends(operator)) -> ApprovalPublic:
        """Approve a pending request made by another operator, with a reason; the action is then carried out
        once and its answer kept on the approval."""
        row = await _decide(runtime, now, approval_id, who, body.reason, approve=True)
        code, result = await _carry_out(request.app, row)
        async with transaction(runtime.factory) as s:
            await s.execute(sa.update(ApprovalRow).where(col(ApprovalRow.id) == approval_id).values(
                status="executed" if code < 400 else "failed", result_status=code,
                result=json.dumps(result, default=str), executed_at=now()))
            _audit(s, who, "approval.execute" if code < 400 else "approval.fail", row, None,
                   result_status=code, maker_key=row.maker_key)
        runtime.wake_relay()
        async with runtime.factory() as s:
            done = await s.get(ApprovalRow, approval_id)
        assert done is not None
        return _public(done, now())

    @r.post("/approvals/{approval_id}/reject", response_model=ApprovalPublic, tags=["approvals"],
            responses={403: {"description": "The maker cannot decide their own request"},
                       409: {"description": "Already decided or expired"}})
    async def reject(approval_id: str, body: DecisionRequest, who: Principal = Depends(operator)) -> ApprovalPublic:
        """Reject a pending request made by another operator, with a reason; nothing is carried out."""
        row = await _decide(runtime, now, approval_id, who, body.reason, approve=False)
        return _public(row, now())


# --- migration --------------------------------------------------------------------------------------


def migrate_up() -> None:
    from alembic import op

    op.create_table(
        "approvals",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("amount_eur", sa.Numeric(18, 2), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("maker_role", sa.String(100), nullable=False),
        sa.Column("maker_key", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("checker_role", sa.String(100), nullable=True),
        sa.Column("checker_key", sa.String(64), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("decision_reason", sa.Text, nullable=True),
        sa.Column("result_status", sa.Integer, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("executed_at", TS, nullable=True),
    )
    op.create_index("ix_approvals_status", "approvals", ["status", "created_at"])


def migrate_down() -> None:
    from alembic import op

    op.drop_table("approvals")
