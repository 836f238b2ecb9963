"""Operator actions on dead letters: replay (put back on its stream, optionally corrected) or discard.

Each action is decided inside one transaction (exactly one of concurrent actions on a dead letter wins), audited,
and announced on the case's timeline with an `OperatorActionRecorded` event when the letter names a case.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.contracts.events import OperatorActionRecorded
from safe_procurement.shared.kit import outbox, wire
from safe_procurement.shared.kit.db import transaction
from safe_procurement.shared.kit.tables import AuditEntry, DeadLetter, utcnow

if TYPE_CHECKING:
    from safe_procurement.shared.kit.messaging import Messaging


class AlreadyResolved(Exception):
    """A dead letter another replay or discard resolved first (answered 409)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"dead letter is already {status}")
        self.status = status


async def replay(m: Messaging, dead_letter_id: int, actor: str, payload: str | None = None) -> DeadLetter | None:
    """Put a dead letter back on its stream (optionally corrected); audited. Raises `AlreadyResolved` when
    another action resolved it first (decided inside the transaction)."""
    async with transaction(m.factory) as session:
        dl = await _claim(session, dead_letter_id, "replayed")
        if dl is None or dl.status != "replayed":
            return dl
        body = payload if payload is not None else dl.payload
        signature = m.keyring.sign(dl.stream, body) if m.keyring is not None else None
        new_id = await m.redis.xadd(m.key(dl.stream), wire.fields(body, signature))  # type: ignore[arg-type]
        dl.replay_entry_id = wire.entry_id(new_id)
        _resolve(dl, actor, "replayed with a corrected payload" if payload is not None else "replayed")
        session.add(dl)
        session.add(AuditEntry(
            actor=actor, action="dead_letter.replay", target=f"dead-letter/{dl.id}", correlation_id=dl.correlation_id,
            reason=dl.resolution,
            details=json.dumps({"stream": dl.stream, "entry_id": dl.entry_id, "new_entry_id": dl.replay_entry_id}),
        ))
        _announce(session, m.service, dl, "dead_letter.replay", actor, dl.resolution)
    if m.on_emitted and dl.correlation_id:
        m.on_emitted()
    return dl


async def discard(m: Messaging, dead_letter_id: int, actor: str, reason: str) -> DeadLetter | None:
    """Close a dead letter without replaying it; audited. Raises `AlreadyResolved` like `replay`."""
    async with transaction(m.factory) as session:
        dl = await _claim(session, dead_letter_id, "discarded")
        if dl is None or dl.status != "discarded":
            return dl
        _resolve(dl, actor, reason)
        session.add(dl)
        session.add(AuditEntry(
            actor=actor, action="dead_letter.discard", target=f"dead-letter/{dl.id}", correlation_id=dl.correlation_id,
            reason=reason, details=json.dumps({"stream": dl.stream, "entry_id": dl.entry_id}),
        ))
        _announce(session, m.service, dl, "dead_letter.discard", actor, reason)
    if m.on_emitted and dl.correlation_id:
        m.on_emitted()
    return dl


async def _claim(session: AsyncSession, dead_letter_id: int, status: str) -> DeadLetter | None:
    """Move an open dead letter to `status` with one conditional UPDATE, the transaction's first write: of
    concurrent actions on one dead letter exactly one changes the row (PostgreSQL's row lock, SQLite's write
    lock), the others see it resolved and raise `AlreadyResolved`. None when there is no such dead letter."""
    claimed = await session.execute(
        update(DeadLetter).where(col(DeadLetter.id) == dead_letter_id, col(DeadLetter.status) == "open")
        .values(status=status)
    )
    dl = await session.get(DeadLetter, dead_letter_id, populate_existing=True)
    if dl is not None and claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise AlreadyResolved(dl.status)
    return dl


def _resolve(dl: DeadLetter, actor: str, resolution: str) -> None:
    dl.resolved_at = utcnow()
    dl.resolved_by = actor
    dl.resolution = resolution


def _announce(session: AsyncSession, service: str, dl: DeadLetter, action: str, actor: str,
              reason: str | None) -> None:
    """The action on the case's timeline, when the letter names a case."""
    if not dl.correlation_id:
        return
    outbox.emit(
        session,
        streams.OPERATOR_ACTION_RECORDED[service],
        OperatorActionRecorded(
            correlation_id=dl.correlation_id, case_id=dl.correlation_id, producer=service,
            action=action, actor=actor, reason=reason, target=f"{service}/dead-letters/{dl.id}",
        ),
    )
