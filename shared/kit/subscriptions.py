"""What a service declares to consume a stream: a subscription, its handler and what a handler raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from safe_procurement.shared.kit.uow import UnitOfWork

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


# A handler gets the message and the unit of work of its transaction (shared/kit/uow.py).
Handler = Callable[[Any, UnitOfWork], Awaitable[None]]
# Loads what a whole batch's handlers will need with one query per kind (e.g. the cases named by the events)
# into the unit of work's repositories, so that handlers do not query, and so do not flush, once per message.
Prefetch = Callable[[UnitOfWork, list[Any]], Awaitable[None]]


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
