"""Two operators writing to the partner registry at once, on two real connections (PostgreSQL).

Every registry writer first locks the registry's counter row (`lock_meta`, SELECT … FOR UPDATE) and only then
reads the agreements it checks for overlaps and the counter it increments. So the second writer waits for the
first one's commit and reads what it wrote: an agreement overlapping one recorded a moment before is refused (not
recorded beside it), and two publications never share a registry version (the replicas key their publications by
it). (SQLite has one writer at a time: every transaction there begins with the write lock.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from safe_procurement.services.partner_registry import main as registry_main
from safe_procurement.services.partner_registry.adapters.repository import RegistryUnitOfWork
from safe_procurement.services.partner_registry.domain import registry
from safe_procurement.services.partner_registry.service_layer import handlers
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.kit.uow import begin
from tests import dbs, pg_races

pytestmark = pytest.mark.skipif(not dbs.on_postgres(), reason="SQLite serializes every writing transaction")


@pytest.fixture
async def factory(tmp_path) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    async with pg_races.migrated_factory(tmp_path, "registry_races", registry_main.__file__) as f:
        yield f


def _terms(country: str, effective_from: date) -> registry.AgreementTerms:
    return registry.AgreementTerms(
        country=country, kind="safe_participation", status="in_force", effective_from=effective_from,
        effective_to=None, content_counts_as_eligible=True, max_content_share=Decimal("0.35"),
        entities_eligible=True, source="test", confidence="official",
    )


def _record(terms: registry.AgreementTerms) -> Callable[[RegistryUnitOfWork], Awaitable[handlers.Published]]:
    return lambda uow: handlers.record_agreement(terms, uow, actor="operator")


async def _race(factory: Any, first: Callable[[RegistryUnitOfWork], Awaitable[Any]],
                second: Callable[[RegistryUnitOfWork], Awaitable[Any]]) -> tuple[Any, asyncio.Task]:
    task: asyncio.Task | None = None
    async with begin(factory, RegistryUnitOfWork) as uow:
        out = await first(uow)
        task = asyncio.create_task(_in_transaction(factory, second))
        await wait_for(lambda: pg_races.blocked_or_done(factory, task), timeout=10,
                       message="the second writer committed or waits for the first")
    await asyncio.wait([task])
    return out, task


async def _in_transaction(factory: Any, step: Callable[[RegistryUnitOfWork], Awaitable[Any]]) -> Any:
    async with begin(factory, RegistryUnitOfWork) as uow:
        return await step(uow)


async def test_an_agreement_overlapping_one_recorded_at_the_same_moment_is_refused(factory):
    _, second = await _race(factory, _record(_terms("GB", date(2026, 1, 1))), _record(_terms("GB", date(2026, 6, 1))))
    assert isinstance(second.exception(), registry.Conflict)
    async with factory() as s:
        n = (await s.execute(text("SELECT count(*) FROM agreement_versions WHERE country = 'GB'"))).scalar_one()
    assert n == 1


async def test_two_writes_at_the_same_moment_publish_two_registry_versions(factory):
    first, second = await _race(factory, _record(_terms("GB", date(2026, 1, 1))), _record(_terms("NO", date(2026, 1, 1))))
    assert (first.registry_version, second.result().registry_version) == (1, 2)
    async with factory() as s:
        versions = (await s.execute(text("SELECT registry_version FROM registry_meta"))).scalars().all()
    assert versions == [2]
