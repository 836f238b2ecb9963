"""The registry replica on a real database: highest version wins whatever the delivery order, every
agreement version is kept, and readiness follows the registry's publication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from safe_procurement.services.origin_verification import main as ov_main
from safe_procurement.services.origin_verification.adapters import replica
from safe_procurement.shared import contracts
from safe_procurement.shared.kit import db
from tests.unit.origin_verification.seed import seed_events

MIGRATIONS = db.migrations_dir(ov_main.__file__)


@pytest.fixture
async def factory(sqlite_url: str) -> AsyncIterator[Any]:
    await db.migrate(sqlite_url, MIGRATIONS)
    engine = db.make_engine(sqlite_url)
    yield db.session_factory(engine)
    await engine.dispose()


def _country(version: int, groups: list[str]) -> contracts.CountryStatusChanged:
    return contracts.CountryStatusChanged(
        correlation_id="MD", country="MD", name="Moldova", version=version,
        memberships=[contracts.GroupMembership(group=g) for g in groups],
    )


def _agreement(version: int, cap: str | None) -> contracts.PartnerAgreementRecorded:
    return contracts.PartnerAgreementRecorded(
        correlation_id="CA-SAFE", agreement_id="CA-SAFE", version=version, country="CA", kind="safe_participation",
        effective_from=date(2026, 2, 15), content_counts_as_eligible=True,
        max_content_share=Decimal(cap) if cap else None, entities_eligible=False, source="test",
    )


async def test_a_newer_country_version_wins_whatever_the_delivery_order(factory: Any) -> None:
    async with db.transaction(factory) as s:
        assert await replica.upsert_country(s, _country(2, ["candidate", "sdp"]))
        assert not await replica.upsert_country(s, _country(1, ["candidate"]))
        assert not await replica.upsert_country(s, _country(2, ["candidate", "sdp"]))
    async with factory() as s:
        ref = await replica.load_reference(s)
    assert ref.groups("MD", date(2026, 1, 1)) == {"candidate", "sdp"}


async def test_every_agreement_version_is_kept_and_the_highest_applies(factory: Any) -> None:
    async with db.transaction(factory) as s:
        await replica.upsert_agreement(s, _agreement(3, "0.4000000001"))
        await replica.upsert_agreement(s, _agreement(1, None))
        await replica.upsert_agreement(s, _agreement(2, "0.30"))
        await replica.upsert_agreement(s, _agreement(2, "0.30"))
    async with factory() as s:
        ref = await replica.load_reference(s)
        history = await replica.agreement_history(s, "CA")
    [ag] = ref.agreements
    assert ag.version == 3 and ag.max_content_share == Decimal("0.4000000001")
    assert [h["version"] for h in history] == [1, 2, 3]


async def test_the_replica_is_ready_only_once_it_holds_what_the_registry_announced(factory: Any) -> None:
    countries, agreements, published = seed_events()
    async with factory() as s:
        assert not (await replica.readiness(s)).ready
    async with db.transaction(factory) as s:
        await replica.record_publication(s, published)
        for c in countries[:-1]:
            await replica.upsert_country(s, c)
        for a in agreements:
            await replica.upsert_agreement(s, a)
    async with factory() as s:
        status = await replica.readiness(s)
    assert not status.ready and "incomplete" in status.reason
    async with db.transaction(factory) as s:
        await replica.upsert_country(s, countries[-1])
    async with factory() as s:
        status = await replica.readiness(s)
    assert status.ready and status.registry_version == 1
    assert (status.countries, status.agreements) == (len(countries), len(agreements))
