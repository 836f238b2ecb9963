"""Endpoints every service has: health, metrics, AsyncAPI, dead letters (docs/interface.md)."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import func, text
from sqlmodel import col, select

from safe_procurement.shared.contracts.events import Event
from safe_procurement.shared.kit import strict
from safe_procurement.shared.kit.auth import Principal, operator, reader, staff
from safe_procurement.shared.kit.db import transaction
from safe_procurement.shared.kit.messaging import AlreadyResolved
from safe_procurement.shared.kit.runtime import Runtime
from safe_procurement.shared.kit.tables import AuditEntry, DeadLetter, OutboxRow

_CONFLICT = {"description": "Already replayed or discarded",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time the kit stores is UTC, and the API says so (RFC 3339)
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


def _in_utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


class DeadLetterPublic(BaseModel):
    id: int
    stream: str
    group: str
    entry_id: str
    event_id: str | None
    correlation_id: str | None
    payload: Any = Field(description="The original payload (parsed JSON when it is JSON, else the raw text)")
    error: str
    error_kind: str = Field(description="validation | signature | handler | redelivery")
    attempts: int
    first_failed_at: UtcDateTime
    last_failed_at: UtcDateTime
    status: str = Field(description="open | replayed | discarded")
    resolved_at: UtcDateTime | None
    resolved_by: str | None
    resolution: str | None
    replay_entry_id: str | None


class DeadLetterPage(BaseModel):
    items: list[DeadLetterPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class AuditPublic(BaseModel):
    id: int
    at: UtcDateTime = Field(description="When the action was recorded (UTC)")
    actor: str = Field(description="Who: the role of the token that acted")
    action: str = Field(description="What: e.g. case.withdraw, case.reverify, dead_letter.replay, dead_letter.discard")
    target: str = Field(description="What was acted on")
    correlation_id: str | None = Field(description="The case (or registry entity) the action concerns")
    reason: str | None = Field(description="Why, as given by the operator")
    details: Any = Field(default=None, description="Further details (JSON)")
    seq: int | None = Field(default=None, description="Place in the tamper-evident chain (GET /audit/verify)")
    prev_hash: str | None = Field(default=None, description="SHA-256 of the entry before it")
    hash: str | None = Field(default=None, description="SHA-256 of this entry's canonical JSON form")


class AuditPage(BaseModel):
    items: list[AuditPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payload: Any | None = Field(default=None, description="A corrected payload (JSON) to publish instead of the original")
    reason: Annotated[str | None, AfterValidator(strict.not_blank)] = Field(default=None, max_length=2000)


class DiscardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, AfterValidator(strict.not_blank)] = Field(
        min_length=1, max_length=2000, description="Why the message is discarded (not blank)")


def _public(dl: DeadLetter) -> DeadLetterPublic:
    try:
        payload: Any = json.loads(dl.payload)
    except Exception:
        payload = dl.payload
    return DeadLetterPublic(
        id=dl.id or 0, stream=dl.stream, group=dl.group_name, entry_id=dl.entry_id, event_id=dl.event_id,
        correlation_id=dl.correlation_id, payload=payload, error=dl.error, error_kind=dl.error_kind,
        attempts=dl.attempts, first_failed_at=dl.first_failed_at, last_failed_at=dl.last_failed_at,
        status=dl.status, resolved_at=dl.resolved_at, resolved_by=dl.resolved_by, resolution=dl.resolution,
        replay_entry_id=dl.replay_entry_id,
    )


def _audit_public(a: AuditEntry) -> AuditPublic:
    try:
        details: Any = json.loads(a.details) if a.details else None
    except Exception:
        details = a.details
    return AuditPublic(id=a.id or 0, at=a.at, actor=a.actor, action=a.action, target=a.target,
                       correlation_id=a.correlation_id, reason=a.reason, details=details, seq=a.seq,
                       prev_hash=a.prev_hash, hash=a.hash)


def _participants(payload: Any) -> set[str]:
    if not isinstance(payload, dict):
        return set()
    found: set[str] = set()
    for holder in (payload, payload.get("proposal") or {}):
        if isinstance(holder, dict) and isinstance(holder.get("participants"), list):
            found |= {str(p) for p in holder["participants"]}
    return found


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


# every keyset cursor is a row's integer key, within a 64-bit column's range
CURSOR_MAX = 2**63 - 1


def decode_cursor(cursor: str | None) -> int | None:
    """The key a cursor from `encode_cursor` holds; 422 "invalid cursor" for anything else (a cursor is client
    input: `true`, a float, a 30-digit number or a negative one must never reach the database)."""
    if not cursor:
        return None
    value = _cursor_value(cursor)
    if type(value) is not int or not 0 <= value <= CURSOR_MAX:
        raise HTTPException(422, "invalid cursor")
    return value


def _cursor_value(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except Exception as e:
        raise HTTPException(422, "invalid cursor") from e


def decode_text_cursor(cursor: str | None, pattern: str) -> str | None:
    """A cursor holding a text key that must match `pattern` (e.g. a UUID); 422 "invalid cursor" otherwise."""
    if not cursor:
        return None
    value = _cursor_value(cursor)
    if type(value) is not str or re.fullmatch(pattern, value) is None:
        raise HTTPException(422, "invalid cursor")
    return value


# a Member State's dead-letter list reads rows in batches of _BATCH, at most _SCAN per request
_BATCH, _SCAN = 500, 5000


# a dead letter's id: within the column's integer range (a larger one is a 422, never a database error)
DeadLetterId = Annotated[int, FastApiPath(ge=1, le=2**31 - 1)]


def ops_router(runtime: Runtime) -> APIRouter:
    """The endpoints every service has: health, metrics and AsyncAPI, dead letters, audit trail."""
    r = APIRouter()
    _health_routes(r, runtime)
    _metrics_routes(r, runtime)
    _dead_letter_list_route(r, runtime)
    _dead_letter_routes(r, runtime)
    _audit_routes(r, runtime)
    _ = transaction  # kept for services that import it from here
    return r


def _health_routes(r: APIRouter, runtime: Runtime) -> None:
    @r.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "alive", "service": runtime.spec.name}

    @r.get("/health/ready", tags=["health"], responses={503: {"description": "Not ready: see `checks`"}})
    async def ready() -> JSONResponse:
        """Database and Redis reachable, consumer groups declared, subscribers running."""
        checks: dict[str, bool] = {}
        try:
            async with runtime.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:
            checks["database"] = False
        try:
            checks["redis"] = bool(await runtime.redis.ping())
        except Exception:
            checks["redis"] = False
        checks["consumer_groups"] = runtime.messaging.groups_ready
        checks["subscribers"] = all(
            s.subscriber is not None and s.subscriber.running for s in runtime.messaging.subscriptions.values()
        )
        for name, probe in runtime.ready_probes.items():
            try:
                checks[name] = bool(await probe())
            except Exception:
                checks[name] = False
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not_ready", "service": runtime.spec.name, "checks": checks},
                            status_code=200 if ok else 503)


def _metrics_routes(r: APIRouter, runtime: Runtime) -> None:
    @r.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics: FastStream's, stream health, dead letters, outbox, service gauges."""
        m = runtime.metrics
        svc = runtime.spec.name
        try:
            for stream, info in (await runtime.messaging.stream_health()).items():
                m.pending.labels(svc, stream).set(info["pending"])
                m.lag.labels(svc, stream).set(info["lag"])
                m.oldest.labels(svc, stream).set(info["oldest_pending_age_seconds"])
                m.length.labels(svc, stream).set(info["length"])
        except Exception:
            pass
        async with runtime.factory() as s:
            dead = (await s.exec(select(func.count()).select_from(DeadLetter).where(DeadLetter.status == "open"))).one()
            unsent = (
                await s.exec(select(func.count()).select_from(OutboxRow).where(col(OutboxRow.published_at).is_(None)))
            ).one()
        m.dead.labels(svc).set(dead)
        m.outbox.labels(svc).set(unsent)
        if runtime.spec.gauges is not None:
            for name, series in (await runtime.spec.gauges(runtime)).items():
                g = m.custom.get(name)
                if g is None:
                    continue
                g.clear()  # a label set that is gone (no case left in a status) must not keep its old value
                for labels, value in series.items():
                    g.labels(svc, *labels).set(value)
        return PlainTextResponse(generate_latest(m.registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @r.get("/asyncapi.json", tags=["docs"])
    async def asyncapi() -> JSONResponse:
        """This service's AsyncAPI 3.0 document: every stream it reads and writes, with payload schemas."""
        return JSONResponse(asyncapi_document(runtime))


def _dead_letter_list_route(r: APIRouter, runtime: Runtime) -> None:
    @r.get("/dead-letters", response_model=DeadLetterPage, tags=["dead letters"])
    async def list_dead_letters(
        request: Request,
        status: str | None = Query(default=None, pattern="^(open|replayed|discarded)$"),
        stream: str | None = Query(default=None, max_length=200),
        correlation_id: str | None = Query(default=None, max_length=100),
        limit: int = Query(default=50, ge=1, le=500),
        cursor: str | None = Query(default=None, max_length=200),
        who: Principal = Depends(reader),
    ) -> DeadLetterPage:
        """Dead letters, newest first, with filters."""
        after = decode_cursor(cursor)
        async with runtime.factory() as s:
            q = select(DeadLetter).order_by(col(DeadLetter.id).desc())
            if status:
                q = q.where(DeadLetter.status == status)
            if stream:
                q = q.where(DeadLetter.stream == stream)
            if correlation_id:
                q = q.where(DeadLetter.correlation_id == correlation_id)
            if who.member_state is None:
                if after is not None:
                    q = q.where(col(DeadLetter.id) < after)
                rows = (await s.exec(q.limit(limit + 1))).all()
        if who.member_state is None:
            page = [_public(d) for d in rows[:limit]]
            return DeadLetterPage(items=page, next_cursor=encode_cursor(page[-1].id) if len(rows) > limit else None)
        return await _member_state_page(runtime, q, after, limit, who)


async def _member_state_page(runtime: Runtime, q: Any, after: int | None, limit: int,
                             who: Principal) -> DeadLetterPage:
    """A Member State's page: filtered as the rows come, in keyset batches, never cut before filtering. A request
    scans at most _SCAN rows; if its page is not full by then, next_cursor continues where it stopped."""
    found: list[DeadLetterPublic] = []
    scanned = 0
    while True:
        async with runtime.factory() as s:
            batch_q = q if after is None else q.where(col(DeadLetter.id) < after)
            rows = (await s.exec(batch_q.limit(_BATCH))).all()
        for d in rows:
            item = _public(d)
            if await _visible(runtime, item, who):
                found.append(item)
                if len(found) > limit:
                    page = found[:limit]
                    return DeadLetterPage(items=page, next_cursor=encode_cursor(page[-1].id))
        scanned += len(rows)
        if len(rows) < _BATCH:
            return DeadLetterPage(items=found, next_cursor=None)
        after = rows[-1].id
        if scanned >= _SCAN:
            return DeadLetterPage(items=found, next_cursor=encode_cursor(after))


async def _visible(runtime: Runtime, item: DeadLetterPublic, who: Principal) -> bool:
    """A Member State sees a dead letter only when it participates in the case it concerns."""
    if who.member_state is None:
        return True
    found = _participants(item.payload)
    if runtime.spec.participants_of is not None and item.correlation_id:
        found |= await runtime.spec.participants_of(runtime, item.correlation_id) or set()
    return who.sees(found) if found else False


async def _get(runtime: Runtime, dl_id: int, who: Principal) -> DeadLetter:
    async with runtime.factory() as s:
        dl = await s.get(DeadLetter, dl_id)
    if dl is None or not await _visible(runtime, _public(dl), who):
        raise HTTPException(404, "no such dead letter")
    return dl


def _dead_letter_routes(r: APIRouter, runtime: Runtime) -> None:
    from safe_procurement.shared.kit import approvals  # imports this module

    @r.get("/dead-letters/{dl_id}", response_model=DeadLetterPublic, tags=["dead letters"])
    async def get_dead_letter(dl_id: DeadLetterId, who: Principal = Depends(reader)) -> DeadLetterPublic:
        """One dead letter with its payload and error."""
        return _public(await _get(runtime, dl_id, who))

    @r.post("/dead-letters/{dl_id}/replay", response_model=DeadLetterPublic, tags=["dead letters"],
            responses={409: _CONFLICT})
    @approvals.gated("dead_letter.replay", when=lambda kw, _: kw["body"] is not None and kw["body"].payload is not None,
                     owner=runtime)
    async def replay(request: Request, dl_id: DeadLetterId, body: ReplayRequest | None = None,
                     who: Principal = Depends(operator)) -> DeadLetterPublic:
        """Publish the message again on its stream (optionally a corrected payload); audited."""
        dl = await _get(runtime, dl_id, who)
        if dl.status != "open":
            raise HTTPException(409, f"dead letter is already {dl.status}")
        payload = None
        if body is not None and body.payload is not None:
            payload = body.payload if isinstance(body.payload, str) else json.dumps(body.payload)
        try:
            done = await runtime.messaging.replay(dl_id, who.name, payload)
        except AlreadyResolved as e:
            raise HTTPException(409, str(e)) from None
        if done is None:
            raise HTTPException(404, "no such dead letter")
        return _public(done)

    @r.post("/dead-letters/{dl_id}/discard", response_model=DeadLetterPublic, tags=["dead letters"],
            responses={409: _CONFLICT})
    async def discard(dl_id: DeadLetterId, body: DiscardRequest, who: Principal = Depends(operator)) -> DeadLetterPublic:
        """Close the dead letter without replaying it, with a reason; audited."""
        dl = await _get(runtime, dl_id, who)
        if dl.status != "open":
            raise HTTPException(409, f"dead letter is already {dl.status}")
        try:
            done = await runtime.messaging.discard(dl_id, who.name, body.reason)
        except AlreadyResolved as e:
            raise HTTPException(409, str(e)) from None
        if done is None:
            raise HTTPException(404, "no such dead letter")
        return _public(done)


def _audit_routes(r: APIRouter, runtime: Runtime) -> None:
    @r.get("/audit", response_model=AuditPage, tags=["audit"])
    async def list_audit(
        correlation_id: str | None = Query(default=None, max_length=100, description="Only actions on this case"),
        action: str | None = Query(default=None, max_length=100, description="Only this action, e.g. case.withdraw"),
        actor: str | None = Query(default=None, max_length=100, description="Only actions by this actor"),
        target: str | None = Query(default=None, max_length=200, description="Only actions on this target"),
        action_prefix: str | None = Query(default=None, max_length=100,
                                          description="Only actions starting so, e.g. `approval.` or `instalment.`"),
        since: datetime | None = Query(default=None, description="Only actions at or after this time"),
        until: datetime | None = Query(default=None, description="Only actions before this time"),
        limit: int = Query(default=50, ge=1, le=500),
        cursor: str | None = Query(default=None, max_length=200),
        who: Principal = Depends(staff),
    ) -> AuditPage:
        """The audit trail of operator writes (who, when, what, why), newest first."""
        after = decode_cursor(cursor)
        async with runtime.factory() as s:
            q = select(AuditEntry).order_by(col(AuditEntry.id).desc())
            if correlation_id:
                q = q.where(AuditEntry.correlation_id == correlation_id)
            if action:
                q = q.where(AuditEntry.action == action)
            if actor:
                q = q.where(AuditEntry.actor == actor)
            if target:
                q = q.where(AuditEntry.target == target)
            if action_prefix:
                q = q.where(col(AuditEntry.action).startswith(action_prefix, autoescape=True))
            if since is not None:
                q = q.where(col(AuditEntry.at) >= _in_utc(since))
            if until is not None:
                q = q.where(col(AuditEntry.at) < _in_utc(until))
            if after is not None:
                q = q.where(col(AuditEntry.id) < after)
            rows = (await s.exec(q.limit(limit + 1))).all()
        page = rows[:limit]
        return AuditPage(items=[_audit_public(a) for a in page],
                         next_cursor=encode_cursor(page[-1].id) if len(rows) > limit and page else None)


def asyncapi_document(runtime: Runtime) -> dict[str, Any]:
    """FastStream's generated AsyncAPI, with each subscription's payload set to its contract schema.

    FastStream derives a subscriber's payload from its handler's typed argument; the kit's batch consumers take
    none, because each entry is decoded and validated on its own (shared/kit/wire.py, shared/kit/batches.py) so
    that one bad entry cannot fail the others. The schema the stream carries is the subscription's model."""
    from faststream.specification import AsyncAPI

    spec = AsyncAPI(runtime.broker, title=f"{runtime.spec.title} (streams)", version="1.0.0",
                    description=runtime.spec.description)
    doc: dict[str, Any] = spec.to_specification().to_jsonable()
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    messages = components.setdefault("messages", {})
    for sub in runtime.messaging.subscriptions.values():
        schema = sub.model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[sub.model.__name__] = schema
        for msg_name, msg in messages.items():
            # FastStream names a subscriber's message after its title, `<stream>:<handler>` (no prefix)
            if msg_name.startswith(f"{sub.stream}:{sub.handler.__name__}:") and msg_name.endswith("SubscribeMessage"):
                msg["payload"] = {"$ref": f"#/components/schemas/{sub.model.__name__}"}
                msg["title"] = sub.model.__name__
                msg["summary"] = (sub.model.__doc__ or "").strip()
    for stream, model in runtime.spec.publishes.items():
        for msg_name, msg in messages.items():
            if msg_name.startswith(f"{stream}:publish:"):
                msg["title"] = model.__name__
                msg["summary"] = (model.__doc__ or "").strip()
    # the envelope's field descriptions hold for every event (subclasses narrow the type, not the meaning)
    envelope = Event.model_json_schema()["properties"]
    for definition in schemas.values():
        props = definition.get("properties") or {}
        if "event_id" in props and "correlation_id" in props:
            for name, prop in props.items():
                if "description" not in prop and "description" in envelope.get(name, {}):
                    prop["description"] = envelope[name]["description"]
    used = json.dumps({k: v for k, v in doc.items() if k != "components"}) + json.dumps(messages)
    if "EmptyPayload" in schemas and "#/components/schemas/EmptyPayload" not in used:
        del schemas["EmptyPayload"]
    return doc
