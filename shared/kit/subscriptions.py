"""What a service declares to consume a stream: a subscription, its handler, and what a handler gets and raises."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.contracts.events import Event
from shared.kit import outbox
from shared.kit.tables import AuditEntry

E = TypeVar("E", bound=BaseModel)


class Poison(Exception):
    """The entry can never be processed as it is (no payload, not JSON, wrong schema or version)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Defer(Exception):
    """The handler cannot run yet (e.g. reference data not replicated): retry later without counting
    an attempt. The entry stays pending, so a crash meanwhile loses nothing."""

    def __init__(self, message: str, delay_s: float = 1.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


@dataclass
class HandlerContext:
    """What a handler gets besides the event: its transaction and a way to emit events."""

    session: AsyncSession
    stream: str
    entry_id: str
    event: Any
    emitted: int = 0

    def emit(self, stream: str, event: Event, *, last: tuple[str, str] | None = None) -> None:
        outbox.emit(self.session, stream, event, last=last)
        self.emitted += 1

    def audit(self, actor: str, action: str, target: str, *, reason: str | None = None,
              details: Any = None) -> None:
        self.session.add(
            AuditEntry(
                actor=actor,
                action=action,
                target=target,
                correlation_id=getattr(self.event, "correlation_id", None),
                reason=reason,
                details=json.dumps(details, default=str) if details is not None else None,
            )
        )


Handler = Callable[[HandlerContext, Any], Awaitable[None]]
# Loads what a whole batch's handlers will need with one query per kind (e.g. the cases named by the events)
# into `session.info`, so that handlers do not query, and so do not flush, once per message.
Prefetch = Callable[[AsyncSession, list[Any]], Awaitable[None]]


@dataclass
class Subscription(Generic[E]):
    """One stream a service consumes, its handler, and its counters (shown on /metrics)."""

    stream: str
    model: type[E]
    handler: Handler
    description: str = ""
    max_attempts: int | None = None
    key: Callable[[Any, str], str] | None = None
    prefetch: Prefetch | None = None
    subscriber: Any = None  # the FastStream subscriber reading the stream (shared/kit/consumption.py)
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    batches: int = 0  # batches handled: processed / batches is the mean batch size

    def key_of(self, event: Any, entry_id: str) -> str:
        """The inbox key: the event id, or for commands without one, a key the subscription derives."""
        if self.key is not None:
            return self.key(event, entry_id)
        return str(event.event_id)
