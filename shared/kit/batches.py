"""One batch of entries through its handlers: decoded strictly, run in one transaction with the inbox.

- each entry's payload is checked (signature), parsed as strict JSON (numbers are Decimals) and validated against
  the subscription's model on its own: one bad entry is dead-lettered (`Poison`), the others go on;
- the common case runs the whole batch in one transaction without a savepoint per message; if anything fails
  (a handler, or the commit, e.g. an inbox key another replica committed first) the batch is redone message by
  message, each in its own savepoint, so one failure cannot undo the others;
- the inbox: each event's key is recorded in the same transaction as its effect; duplicates are acknowledged and
  skipped.

The kit runs handlers itself rather than as FastStream handlers: FastStream calls one handler per message or per
batch, while the guarantees above need one database transaction around many messages with a savepoint each.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.kit import logs, signing, strict, wire
from safe_procurement.shared.kit.dead_letters import dead_letter
from safe_procurement.shared.kit.subscriptions import Defer, Poison, Subscription
from safe_procurement.shared.kit.tables import InboxRow
from safe_procurement.shared.kit.uow import Delivery, UnitOfWork
from safe_procurement.shared.kit.uow import begin as uow_begin

log = logging.getLogger("safe.messaging")

# Handlers run together in one optimistic batch transaction (a unit of work with `batch` True): any failure
# redoes the batch message by message, each in its own savepoint, with `batch` False and nothing prefetched.

Parsed = list[tuple[wire.Entry, Any]]
Poisoned = list[tuple[wire.Entry, Poison]]


@dataclass
class Outcome:
    """What became of a batch: entries to acknowledge, to count as failed, to retry later without counting."""

    ack: list[str] = field(default_factory=list)
    failures: list[tuple[wire.Entry, str, str | None]] = field(default_factory=list)
    deferred: list[tuple[wire.Entry, float]] = field(default_factory=list)
    emitted: int = 0
    duplicates: int = 0


class _Isolate(Exception):
    """The optimistic whole-batch run hit a failure; the batch is redone message by message."""


def decode(sub: Subscription[Any], entries: Sequence[wire.Entry],
           keyring: signing.Keyring | None) -> tuple[Parsed, Poisoned]:
    """Each entry's event, or the reason it can never be processed."""
    parsed: Parsed = []
    poison: Poisoned = []
    for entry in entries:
        try:
            if keyring is not None:
                signing_check(keyring, sub.stream, entry.fields)
            payload = wire.payload(entry.fields)
            if payload is None:
                raise Poison("validation", f"entry has no {wire.DATA} field")
            parsed.append((entry, sub.model.model_validate(loads_exact(payload))))
        except Poison as p:
            poison.append((entry, p))
        except ValidationError as ve:
            poison.append((entry, Poison("validation", _validation_text(ve))))
        except Exception as ex:  # undecodable in some other way
            poison.append((entry, Poison("validation", f"{type(ex).__name__}: {ex}")))
    return parsed, poison


class BatchRunner:
    """Runs decoded batches of one service's consumer group against its database."""

    def __init__(self, *, service: str, group: str, factory: async_sessionmaker[AsyncSession],
                 unit_of_work: Callable[..., UnitOfWork] = UnitOfWork) -> None:
        self.service, self.group, self.factory = service, group, factory
        self.unit_of_work = unit_of_work  # (session, *, batch) → the service's unit of work

    async def run(self, sub: Subscription[Any], parsed: Parsed, poison: Poisoned,
                  conn: AsyncConnection | None = None) -> Outcome:
        try:
            try:
                # common case first: the whole batch in one transaction, no savepoint per message
                return await self._run(sub, parsed, poison, isolate=False, conn=conn)
            except _Isolate:
                return await self._run(sub, parsed, poison, isolate=True, conn=conn)
        except Exception as ex:  # the batch transaction itself failed: nothing of it happened
            log.exception("batch transaction failed", extra={"stream": sub.stream})
            err = error_text(ex)
            return Outcome(failures=[(e, err, sub.key_of(ev, e.entry_id)) for e, ev in parsed]
                           + [(e, err, None) for e, _ in poison])

    async def _run(self, sub: Subscription[Any], parsed: Parsed, poison: Poisoned, *, isolate: bool,
                   conn: AsyncConnection | None) -> Outcome:
        outcome = Outcome()
        try:
            async with uow_begin(self.factory, self.unit_of_work, batch=not isolate, connection=conn) as uow:
                session = uow.session
                if isolate:
                    await self._isolated(uow, sub, parsed, outcome)
                else:
                    await self._optimistic(uow, sub, parsed, outcome)
                for entry, p in poison:
                    await dead_letter(session, sub, self.group, entry, str(p), p.kind, attempts=1)
                    outcome.ack.append(entry.entry_id)
        except _Isolate:
            raise
        except Exception as ex:
            if not isolate:  # e.g. a concurrent replica committed the same inbox key first
                raise _Isolate() from ex
            raise
        return outcome

    async def _optimistic(self, uow: UnitOfWork, sub: Subscription[Any], parsed: Parsed,
                          outcome: Outcome) -> None:
        """All handlers in the one transaction. The inbox is not looked up first: a redelivered event collides
        with its inbox row at the commit, and the batch is redone isolated, where processed events are found
        before their handler runs. Redeliveries are rare (a crash, a reclaim), a lookup per batch is not."""
        if sub.prefetch is not None and parsed:
            await sub.prefetch(uow, [ev for _, ev in parsed])
        seen: set[str] = set()
        for entry, event, event_id in _unseen(sub, parsed, seen, outcome):
            delivery = uow.delivery = Delivery(sub.stream, entry.entry_id)
            emitted = uow.emitted
            try:
                async with logs.consumer_span(self.service, sub.stream, event, event_id) as span:
                    await sub.handler(event, uow)
                    uow.processed(event_id, delivery)
            except Exception as ex:
                raise _Isolate() from ex
            seen.add(event_id)
            _handled(outcome, sub, entry, event, event_id, uow.emitted - emitted, span)

    async def _isolated(self, uow: UnitOfWork, sub: Subscription[Any], parsed: Parsed,
                        outcome: Outcome) -> None:
        """Each handler in its own savepoint: a failure undoes that message only."""
        session = uow.session
        ids = [sub.key_of(ev, e.entry_id) for e, ev in parsed]
        seen: set[str] = set()
        if ids:
            seen = set((await session.exec(select(InboxRow.event_id).where(col(InboxRow.event_id).in_(ids)))).all())
        for entry, event, event_id in _unseen(sub, parsed, seen, outcome):
            emitted = uow.emitted
            span = await self._one(uow, sub, entry, event, event_id, outcome)
            if span is not None:
                seen.add(event_id)
                _handled(outcome, sub, entry, event, event_id, uow.emitted - emitted, span)

    async def _one(self, uow: UnitOfWork, sub: Subscription[Any], entry: wire.Entry, event: Any,
                   event_id: str, outcome: Outcome) -> trace.Span | None:
        """One handler in a savepoint: its span, or None when it did not complete (the outcome says what became
        of it)."""
        session = uow.session
        delivery = uow.delivery = Delivery(sub.stream, entry.entry_id)
        try:
            async with logs.consumer_span(self.service, sub.stream, event, event_id) as span, session.begin_nested():
                await sub.handler(event, uow)
                uow.processed(event_id, delivery)
                await session.flush()
            return span
        except IntegrityError as ie:
            if _is_inbox_conflict(ie):
                _duplicate(outcome, entry)
            else:
                outcome.failures.append((entry, error_text(ie), event_id))
        except Defer as d:
            outcome.deferred.append((entry, d.delay_s))
        except Poison as p:  # the handler says it can never succeed: dead letter now
            await dead_letter(session, sub, self.group, entry, str(p), p.kind, attempts=1)
            outcome.ack.append(entry.entry_id)
        except Exception as ex:
            outcome.failures.append((entry, error_text(ex), event_id))
        return None


def _unseen(sub: Subscription[Any], parsed: Parsed, seen: set[str],
            outcome: Outcome) -> Iterator[tuple[wire.Entry, Any, str]]:
    """Each entry with its event and key, but for those whose key is in `seen` (read as it grows: the keys handled
    earlier in the batch, or found in the inbox), which are duplicates."""
    for entry, event in parsed:
        event_id = sub.key_of(event, entry.entry_id)
        if event_id in seen:
            _duplicate(outcome, entry)
        else:
            yield entry, event, event_id


def _duplicate(outcome: Outcome, entry: wire.Entry) -> None:
    """An event processed before: acknowledged and counted, its handler not run."""
    outcome.duplicates += 1
    outcome.ack.append(entry.entry_id)


def _handled(outcome: Outcome, sub: Subscription[Any], entry: wire.Entry, event: Any, event_id: str,
             emitted: int, span: trace.Span) -> None:
    outcome.ack.append(entry.entry_id)
    outcome.emitted += emitted
    if logs.MESSAGES.isEnabledFor(logging.INFO):  # in the message's trace, not the batch's
        logs.handled(span, event_id=event_id, correlation_id=getattr(event, "correlation_id", None),
                     stream=sub.stream)


def loads_exact(payload: bytes) -> Any:
    """JSON numbers become Decimals, never floats (pydantic's own JSON parser rounds 17-digit amounts); the same
    strict JSON as over HTTP (shared/kit/strict.py: no duplicate keys, NaN, exponent numbers or NUL)."""
    try:
        return strict.loads(payload)
    except strict.StrictJsonError as e:
        raise Poison("validation", f"validation failed: (payload): {e}") from None


def signing_check(keyring: signing.Keyring, stream: str, fields: dict[bytes, bytes]) -> None:
    """Dead-letter (kind `signature`) an internal entry whose signature does not verify."""
    try:
        keyring.verify(stream, fields)
    except signing.SignatureError as e:
        raise Poison("signature", f"signature: {e}") from None


def error_text(ex: BaseException) -> str:
    tb = traceback.format_exception(type(ex), ex, ex.__traceback__, limit=6)
    return f"{type(ex).__name__}: {ex}\n" + "".join(tb[-3:])


def _validation_text(ve: ValidationError) -> str:
    parts = []
    for err in ve.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(payload)"
        parts.append(f"{loc}: {err.get('msg')}")
    return "validation failed: " + "; ".join(parts[:50])


def _is_inbox_conflict(ie: IntegrityError) -> bool:
    text = str(ie.orig).lower() if ie.orig is not None else str(ie).lower()
    return "inbox" in text
