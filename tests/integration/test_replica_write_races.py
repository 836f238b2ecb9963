"""The registry replica keeps the highest version even when two replicas of origin verification apply two versions
of one record at the same time (PostgreSQL).

The consumer group hands consecutive entries of a stream to different consumers, so version 3 of an agreement can
be applied on one connection while version 2 is applied on another. Each reads the stored version, compares and
writes. Under READ COMMITTED the older one could read version 1 before the newer one committed, then wait on its
UPDATE, then overwrite version 3 with version 2 once the newer one committed: the replica would verify every later
case against superseded terms (and its readiness fingerprint would go down). The replica reads the record it may
replace with its row lock, so the second writer reads what the first committed. (SQLite has one writer at a time:
every transaction there begins with the write lock.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from safe_procurement.services.origin_verification import main as ov_main
from safe_procurement.services.origin_verification.adapters import replica
from safe_procurement.services.origin_verification.adapters.repository import VerificationUnitOfWork
from safe_procurement.services.origin_verification.adapters.rules_file import load_rulebook
from safe_procurement.services.origin_verification.bootstrap import Dependencies, system_clock
from safe_procurement.services.origin_verification.service_layer import handlers
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.kit import uow
from tests import dbs, pg_races

pytestmark = pytest.mark.skipif(not dbs.on_postgres(), reason="SQLite serializes every writing transaction")


@pytest.fixture
async def factory(tmp_path) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    async with pg_races.migrated_factory(tmp_path, "replica_races", ov_main.__file__) as f:
        yield f


@pytest.fixture(scope="module")
def deps() -> Dependencies:
    return Dependencies(rules=load_rulebook(None), clock=system_clock)


def _agreement(version: int) -> contracts.PartnerAgreementRecorded:
    return contracts.PartnerAgreementRecorded(
        correlation_id="CA-SAFE", agreement_id="CA-SAFE", version=version, country="CA", kind="safe_participation",
        effective_from=date(2026, 2, 15), content_counts_as_eligible=True,
        max_content_share=Decimal(f"0.{version}0"), entities_eligible=False, source=f"test v{version}",
    )


def _country(version: int) -> contracts.CountryStatusChanged:
    return contracts.CountryStatusChanged(
        correlation_id="MD", country="MD", name=f"Moldova v{version}", version=version,
        memberships=[contracts.GroupMembership(group="candidate")],
    )


async def _agreement_version(factory: Any) -> tuple[int, str]:
    async with factory() as s:
        [ag] = (await replica.load_reference(s)).agreements
    return ag.version, str(ag.max_content_share)


async def _country_version(factory: Any) -> tuple[int, str]:
    async with factory() as s:
        row = (await s.execute(text("SELECT version, name FROM ov_replica_countries WHERE country = 'MD'"))).one()
    return int(row[0]), str(row[1])


CASES = {
    "agreement": (_agreement, handlers.on_partner_agreement_recorded, _agreement_version,
                  lambda v: (v, f"0.{v}0")),
    "country": (_country, handlers.on_country_status_changed, _country_version, lambda v: (v, f"Moldova v{v}")),
}


@pytest.mark.parametrize("record", sorted(CASES))
async def test_an_older_version_applied_beside_a_newer_one_does_not_replace_it(factory, deps, record):
    event_of, handler, stored, expected = CASES[record]
    await _apply(factory, deps, handler, event_of(1))

    older: asyncio.Task | None = None
    async with uow.begin(factory, VerificationUnitOfWork, batch=True) as newer:  # one replica: version 3
        await handler(event_of(3), newer, deps)
        # another replica applies version 2 meanwhile, in its own transaction: it must wait for this one
        older = asyncio.create_task(_apply(factory, deps, handler, event_of(2)))
        await wait_for(lambda: pg_races.blocked_or_done(factory, older), timeout=10,
                       message="version 2 committed or waits for version 3's transaction")
    await older

    assert await stored(factory) == expected(3)  # either order ends with version 3; version 2 is in the history


async def _apply(factory: Any, deps: Dependencies, handler: Callable[..., Any], event: Any) -> None:
    async with uow.begin(factory, VerificationUnitOfWork, batch=True) as w:
        await handler(event, w, deps)


@pytest.mark.parametrize("record", sorted(CASES))
async def test_two_first_versions_at_once_collide_and_the_redone_older_one_leaves_the_newer(factory, deps, record):
    """A record not stored yet has no row to lock: both writers see none and insert. The primary key refuses the
    second insert; the kit redoes that batch, which then reads the newer version and keeps it."""
    event_of, handler, stored, expected = CASES[record]
    older: asyncio.Task | None = None
    async with uow.begin(factory, VerificationUnitOfWork, batch=True) as newer:
        await handler(event_of(2), newer, deps)
        older = asyncio.create_task(_apply(factory, deps, handler, event_of(1)))
        await wait_for(lambda: pg_races.blocked_or_done(factory, older), timeout=10,
                       message="version 1 committed or waits for version 2's transaction")
    await asyncio.wait([older])
    assert isinstance(older.exception(), IntegrityError)
    await _apply(factory, deps, handler, event_of(1))  # the batch redone
    assert await stored(factory) == expected(2)
