"""The audit chain on every service: anchors published and kept, `GET /audit/verify`, `GET /audit/anchors`.

Wired in by `safe_procurement.shared.kit.app.create_app`: each service publishes its chain head to `audit.anchors` (through its
outbox, every `audit_anchor_interval_s` when the head moved) and keeps the heads the other services publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sqlmodel import col, select

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.contracts.audit import AuditAnchorPublished
from safe_procurement.shared.kit import audit_chain
from safe_procurement.shared.kit.auth import staff
from safe_procurement.shared.kit.db import transaction
from safe_procurement.shared.kit.web import UtcDateTime

log = logging.getLogger("safe.audit")

_ANCHOR_ARG = re.compile(r"^(\d{1,12}):([0-9a-f]{64})$")


class BreakPublic(BaseModel):
    seq: int = Field(description="The first entry found wrong (for a deletion: the missing entry's seq)")
    id: int | None = Field(description="Its row id, when the row exists")
    problem: str = Field(description="edited | deleted | re-ordered | unchained | anchor-mismatch | truncated")
    detail: str


class VerifyPublic(BaseModel):
    service: str
    ok: bool = Field(description="True when every entry is intact and in order, and matches every anchor given")
    entries: int = Field(description="Entries walked (up to and including the first break)")
    head_seq: int = Field(description="The last intact entry's seq")
    head_hash: str = Field(description="Its SHA-256")
    anchors_checked: int = Field(description="Anchors (published heads) the chain was compared with")
    first_break: BreakPublic | None
    checked_at: UtcDateTime


class AnchorPublic(BaseModel):
    service: str
    seq: int
    hash: str
    published_at: UtcDateTime
    received_at: UtcDateTime


def register(messaging: Any, runtime: Any) -> None:
    """Keep the anchors the other services publish."""
    own = runtime.spec.name

    @messaging.subscribe(streams.AUDIT_ANCHORS, AuditAnchorPublished,
                         description="Audit chain heads of the services, kept as witnesses of the other services' chains")
    async def on_audit_anchor_published(event: AuditAnchorPublished, uow: Any) -> None:
        if event.service == own:
            return
        uow.session.add(audit_chain.AuditAnchor(service=event.service, seq=event.seq, hash=event.hash,
                                                published_at=event.occurred_at, event_id=str(event.event_id)))


async def publish_anchor(runtime: Any) -> bool:
    """Publish this service's chain head if it moved since the last anchor; True if one was published.

    The replicas of a service share its chain: one anchor per `audit_anchor_interval_s` stands for all of them.
    The replica that takes the lease (a Redis key, SET NX with that expiry) publishes; the last anchored `seq`
    is kept beside it, so a head another replica anchored already is not anchored twice. Both keys lost (Redis
    flushed) only means one more anchor of the same head: the receivers keep each, harmlessly."""
    from safe_procurement.shared.kit import outbox

    async with runtime.factory() as session:
        seq, _ = await audit_chain.head(session)
    if seq == 0 or runtime.anchor_seq == seq:
        return False
    redis = runtime.redis
    keys = _anchor_keys(runtime)
    if redis is not None:
        interval_ms = int(float(getattr(runtime.settings, "audit_anchor_interval_s", 60.0)) * 900)
        try:
            if not await redis.set(keys[0], runtime.settings.consumer_name or "-", nx=True, px=max(interval_ms, 1)):
                return False  # another replica anchored the chain in this interval
            last = await redis.get(keys[1])
        except RedisError:  # no lease to be had: anchor anyway (through the outbox), as a lone replica would
            log.warning("audit anchor lease unavailable; anchoring without it", exc_info=True)
            redis, last = None, None
        if last is not None and int(last) >= seq:
            runtime.anchor_seq = seq
            return False
    async with transaction(runtime.factory) as session:
        seq, h = await audit_chain.head(session)
        outbox.emit(session, streams.AUDIT_ANCHORS, AuditAnchorPublished(
            correlation_id=f"audit/{runtime.spec.name}", producer=runtime.spec.name,
            service=runtime.spec.name, seq=seq, hash=h,
        ))
    runtime.anchor_seq = seq
    if redis is not None:
        with contextlib.suppress(RedisError):  # lost: the next replica anchors this head once more, harmlessly
            await redis.set(keys[1], str(seq))
    runtime.wake_relay()
    return True


def _anchor_keys(runtime: Any) -> tuple[str, str]:
    """(the lease, the last anchored seq) of this service's chain, shared by its replicas."""
    base = f"{runtime.settings.stream_prefix}{streams.AUDIT_ANCHORS}:{runtime.spec.name}"  # in the service's Redis ACL
    return f"{base}:lease", f"{base}:seq"


async def anchor_loop(runtime: Any) -> None:
    interval = float(getattr(runtime.settings, "audit_anchor_interval_s", 60.0))
    while True:
        try:
            await publish_anchor(runtime)
        except asyncio.CancelledError:
            raise
        except Exception:
            if not _cancelling():
                log.exception("publishing the audit anchor failed; next round retries")
        if _cancelling():  # redis-py can turn our cancellation into its own (suppressed) error: stop, as asked
            raise asyncio.CancelledError
        await asyncio.sleep(interval)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _parse_anchors(values: list[str]) -> list[audit_chain.Anchor]:
    anchors = []
    bad = []
    for i, v in enumerate(values):
        m = _ANCHOR_ARG.match(v.strip())
        if m is None:
            bad.append({"loc": ["query", "anchor", i], "msg": "expected SEQ:SHA256HEX", "type": "value_error"})
        else:
            anchors.append(audit_chain.Anchor(seq=int(m[1]), hash=m[2]))
    if bad:
        raise HTTPException(422, bad)
    return anchors


def router(runtime: Any) -> APIRouter:
    r = APIRouter()

    @r.get("/audit/verify", response_model=VerifyPublic, tags=["audit"])
    async def verify_audit(
        anchor: list[str] = Query(default=[], max_length=1000,
                                  description="Heads published by this service and kept elsewhere, as SEQ:SHA256HEX "
                                              "(`safe-procurement audit verify` collects them from the other services)"),
        _who: Any = Depends(staff),
    ) -> VerifyPublic:
        """Walk this service's audit chain and name the first entry edited, deleted or re-ordered."""
        anchors = _parse_anchors(anchor)
        async with runtime.factory() as s:
            v = await audit_chain.verify(s, anchors)
        b = v.first_break
        return VerifyPublic(service=runtime.spec.name, ok=v.ok, entries=v.entries, head_seq=v.head_seq,
                            head_hash=v.head_hash, anchors_checked=v.anchors_checked, checked_at=v.checked_at,
                            first_break=BreakPublic(seq=b.seq, id=b.id, problem=b.problem, detail=b.detail) if b else None)

    @r.get("/audit/anchors", response_model=list[AnchorPublic], tags=["audit"])
    async def list_anchors(
        service: str = Query(max_length=100, description="The service whose published heads this service kept"),
        limit: int = Query(default=100, ge=1, le=1000),
        _who: Any = Depends(staff),
    ) -> list[AnchorPublic]:
        """Chain heads another service published (newest first), kept here as witnesses."""
        async with runtime.factory() as s:
            rows = (await s.exec(select(audit_chain.AuditAnchor).where(audit_chain.AuditAnchor.service == service)
                                 .order_by(col(audit_chain.AuditAnchor.seq).desc()).limit(limit))).all()
        return [AnchorPublic(service=a.service, seq=a.seq, hash=a.hash, published_at=a.published_at,
                             received_at=a.received_at) for a in rows]

    return r
