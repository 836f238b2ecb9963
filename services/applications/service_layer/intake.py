"""Group commit for HTTP intake: concurrent submissions share one transaction.

Each POST /procurements used to be its own transaction (BEGIN IMMEDIATE, a savepoint, a flush, a commit). Under
load, requests now queue here and one writer commits whatever has queued while the previous commit ran, so a
request never waits for a timer, only for the transaction in progress. A request is answered only after the
transaction holding its case committed: 201 still means stored, and the outbox row with it.

If the shared transaction fails as a whole (e.g. a replica inserted one of the references first, so the commit
hits the unique index), every request of that batch is redone alone, with the single-request path and its
savepoint, so each gets its own answer (created, the existing case, or 409)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.applications.adapters.repository import ApplicationsUnitOfWork, Case
from safe_procurement.services.applications.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.kit.uow import begin

log = logging.getLogger("safe.applications.intake")

Pending = tuple[contracts.Proposal, "asyncio.Future[tuple[Case, bool]]"]


class SubmitBatcher:
    def __init__(
        self, factory: async_sessionmaker[AsyncSession], *, max_batch: int = 200,
        on_committed: Callable[[], None] | None = None,
        publish_after_commit: Callable[[AsyncConnection], Awaitable[object]] | None = None,
    ) -> None:
        self._factory = factory
        self._max = max_batch
        self._on_committed = on_committed
        self._publish_after_commit = publish_after_commit  # a relay round on the batch's connection
        self._queue: list[Pending] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.fallbacks = 0

    async def submit(self, proposal: contracts.Proposal) -> tuple[Case, bool]:
        """Store the case (or find it: idempotent on `reference`); raises ReferenceConflict."""
        fut: asyncio.Future[tuple[Case, bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((proposal, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="applications-intake")
        return await asyncio.shield(fut)  # a client hanging up does not undo a commit under way

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max:]
            try:
                await self._commit(batch)
            except Exception as ex:  # noqa: BLE001 - each request is answered, never left hanging
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(ex)

    async def _commit(self, batch: list[Pending]) -> None:
        engine = self._factory.kw.get("bind") if self._publish_after_commit is not None else None
        if engine is None:
            created = await self._store(batch, None)
            if created and self._on_committed is not None:
                self._on_committed()
        else:
            async with engine.connect() as conn:  # the batch, then its events out, on one checked-out connection
                created = await self._store(batch, conn)
                if created:
                    await self._publish_after_commit(conn)  # type: ignore[misc]
        if created is None:  # after the connection went back to the pool: each request alone
            self.fallbacks += 1
            await self._one_by_one(batch)

    async def _store(self, batch: list[Pending], conn: AsyncConnection | None) -> bool | None:
        """Store the batch in one transaction and answer its requests; whether a case was created, or None if
        the shared transaction failed (nobody answered yet)."""
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            async with begin(self._factory, ApplicationsUnitOfWork, batch=True, connection=conn) as uow:
                await handlers.prefetch_references(uow, [p for p, _ in batch])
                for proposal, fut in batch:
                    try:
                        results.append((fut, await handlers.submit(proposal, uow, via="HTTP"), None))
                    except handlers.ReferenceConflict as e:
                        results.append((fut, None, e))
            self.batches += 1
        except Exception:
            log.warning("shared intake transaction failed; each request of the batch is redone alone", exc_info=True)
            return None
        for fut, result, error in results:
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
        return any(r is not None and r[1] for _, r, _ in results)

    async def _one_by_one(self, batch: list[Pending]) -> None:
        for proposal, fut in batch:
            try:
                async with begin(self._factory, ApplicationsUnitOfWork) as uow:
                    result = await handlers.submit(proposal, uow, via="HTTP")
            except Exception as e:  # noqa: BLE001 - the request's own answer (409, or a 500 for it alone)
                if not fut.done():
                    fut.set_exception(e)
                continue
            if result[1] and self._on_committed is not None:
                self._on_committed()
            if not fut.done():
                fut.set_result(result)
