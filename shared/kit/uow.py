"""The unit of work: one transaction, the service's repositories over it, its outbox and its inbox.

Every service extends `UnitOfWork` with its repositories (`services/<svc>/adapters/repository.py`) and hands
handlers `(message, uow)`. What a handler changes, the events it emits and the inbox key of the message it
handles commit together or not at all: nothing lost, nothing doubled.

`batch` is True when the messaging kit runs several messages (or the intake several submissions) in this one
optimistic transaction; only repositories read it (to queue their writes for one statement at the commit).
Handlers never see it: the same handler runs alone, in a batch, or against a fake unit of work."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.contracts.events import Event
from safe_procurement.shared.kit import outbox
from safe_procurement.shared.kit.db import BATCH, add_row, transaction
from safe_procurement.shared.kit.tables import AuditEntry, InboxRow


@dataclass(frozen=True)
class Delivery:
    """The stream entry being handled (commands without an event id name it)."""

    stream: str
    entry_id: str


class UnitOfWork:
    """The SQL unit of work every service's own one extends."""

    def __init__(self, session: AsyncSession, *, batch: bool = False) -> None:
        self.session = session
        self.batch = batch
        session.info[BATCH] = batch  # read by the kit's row helpers (safe_procurement.shared.kit.db)
        self.emitted = 0
        self.delivery: Delivery | None = None

    def emit(self, stream: str, event: Event, *, last: tuple[str, str] | None = None) -> None:
        """Put an event in the outbox of this transaction (published by the relay after the commit)."""
        outbox.emit(self.session, stream, event, last=last)
        self.emitted += 1

    def audit(self, actor: str, action: str, target: str, *, correlation_id: str | None = None,
              reason: str | None = None, details: Any = None) -> None:
        self.session.add(AuditEntry(
            actor=actor, action=action, target=target, correlation_id=correlation_id, reason=reason,
            details=details if details is None or isinstance(details, str) else json.dumps(details, default=str),
        ))

    def processed(self, key: str, delivery: Delivery) -> None:
        """The inbox row of a handled message: a redelivery of the same key collides with it."""
        add_row(self.session, InboxRow, event_id=key, stream=delivery.stream, entry_id=delivery.entry_id)

    async def flush(self) -> None:
        await self.session.flush()


U = TypeVar("U", bound=UnitOfWork)
UnitOfWorkFactory = Callable[..., U]  # (session, *, batch) → a service's unit of work


@asynccontextmanager
async def begin(
    factory: async_sessionmaker[AsyncSession], make: Callable[..., U], *, batch: bool = False,
    connection: AsyncConnection | None = None,
) -> AsyncIterator[U]:
    """A unit of work in a new transaction: committed when the block ends, rolled back if it raises."""
    async with transaction(factory, connection=connection) as session:
        yield make(session, batch=batch)
