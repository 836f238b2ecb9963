"""A case's read-modify-write is not overtaken by another transaction's commit.

On PostgreSQL an operator's action (an HTTP request, its own transaction) and a flow event (a consumed batch, on
another connection or another replica) can read the same case at the same time. If both then write the status they
computed, the later commit silently undoes the earlier one: a case withdrawn by its operator would go on to request
its loan. The applications service reads the cases it is about to change with a row lock on PostgreSQL, so the
second transaction reads what the first committed and decides on that. (SQLite has one writer at a time: every
transaction there begins with the write lock.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from safe_procurement.services.applications import main as applications_main
from safe_procurement.services.applications.adapters.repository import ApplicationsUnitOfWork
from safe_procurement.services.applications.domain.case import Status
from safe_procurement.services.applications.service_layer import handlers
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import uow
from tests import builders, dbs, pg_races

pytestmark = pytest.mark.skipif(not dbs.on_postgres(), reason="SQLite serializes every writing transaction")


@pytest.fixture
async def factory(tmp_path) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    async with pg_races.migrated_factory(tmp_path, "races", applications_main.__file__) as f:
        yield f


async def _status_and_events(factory, case_id: str) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    async with factory() as s:
        status = (await s.execute(text("SELECT status FROM cases WHERE id = :i"), {"i": case_id})).scalar_one()
        events = (await s.execute(text("SELECT stream FROM outbox WHERE correlation_id = :i ORDER BY id"),
                                  {"i": case_id})).scalars().all()
    return status, list(events)


async def test_a_withdrawal_during_a_batch_of_verdicts_is_not_undone_by_the_verdict(factory):
    async with uow.begin(factory, ApplicationsUnitOfWork) as w:
        case, _ = await handlers.submit(builders.proposal_model(), w, via="HTTP")
    verdict = builders.verification_completed(case.id, case.verification_request_id, "eligible")

    withdrawal: asyncio.Task | None = None
    async with uow.begin(factory, ApplicationsUnitOfWork, batch=True) as flow:
        await handlers.prefetch_cases(flow, [verdict])  # as the kit does for a batch: the cases read up front
        # the flow has read the case (submitted); the operator withdraws it meanwhile, in a transaction of its own
        withdrawal = asyncio.create_task(_withdraw(factory, case.id))
        await wait_for(lambda: pg_races.blocked_or_done(factory, withdrawal), timeout=10,
                       message="the withdrawal committed or waits for the flow's transaction")
        await handlers.on_verification_completed(verdict, flow)
    await withdrawal

    status, events = await _status_and_events(factory, case.id)
    # either order of the two transactions ends withdrawn: verdict first → loan requested, then withdrawn (its
    # reservation released downstream); withdrawal first → the verdict is recorded but not applied
    assert status == Status.withdrawn.value, events
    assert events[-1] == streams.PROCUREMENT_WITHDRAWN


async def _withdraw(factory, case_id: str) -> None:  # type: ignore[no-untyped-def]
    async with uow.begin(factory, ApplicationsUnitOfWork) as op:
        await handlers.withdraw(case_id, op, reason="test", actor="operator")
