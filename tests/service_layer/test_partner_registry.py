"""Partner registry handlers against a fake unit of work: the seed, agreements recorded and corrected."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from safe_procurement.services.partner_registry.adapters import seed as seed_file
from safe_procurement.services.partner_registry.domain import registry
from safe_procurement.services.partner_registry.service_layer import handlers
from safe_procurement.shared.contracts import streams
from tests.service_layer.fakes import FakeRegistryUnitOfWork


def terms(**changes: object) -> registry.AgreementTerms:
    values: dict[str, object] = dict(
        country="GB", kind="safe_participation", status="in_force", effective_from=date(2026, 1, 1),
        effective_to=None, content_counts_as_eligible=True, max_content_share=Decimal("0.35"),
        entities_eligible=True, source="test", confidence="official",
    )
    values.update(changes)
    return registry.AgreementTerms(**values)  # type: ignore[arg-type]


async def test_the_seed_is_published_once() -> None:
    uow = FakeRegistryUnitOfWork()
    seed = seed_file.load(None)
    published = await handlers.load_seed(seed, uow)
    assert published is not None and published.registry_version == 1
    countries = uow.emitted_on(streams.COUNTRY_STATUS_CHANGED)
    assert {c.country for c in countries} == set(seed.countries)
    [marker] = uow.emitted_on(streams.REFERENCE_DATA_PUBLISHED)
    assert (marker.registry_version, marker.countries) == (1, len(seed.countries))
    assert marker.agreements == len(uow.emitted_on(streams.PARTNER_AGREEMENT_RECORDED))
    emitted = len(uow.events)
    assert await handlers.load_seed(seed, uow) is None  # the same seed again: nothing new
    assert len(uow.events) == emitted


async def test_recording_an_agreement_publishes_it_and_a_new_registry_version() -> None:
    uow = FakeRegistryUnitOfWork()
    published = await handlers.record_agreement(terms(), uow, actor="op")
    [row] = published.agreements
    assert (row.version, row.registry_version, row.origin) == (1, 1, registry.OPERATOR)
    [event] = uow.emitted_on(streams.PARTNER_AGREEMENT_RECORDED)
    assert (event.agreement_id, event.country, event.max_content_share) == (row.agreement_id, "GB", Decimal("0.35"))
    [marker] = uow.emitted_on(streams.REFERENCE_DATA_PUBLISHED)
    assert (marker.registry_version, marker.agreements) == (1, 1)
    assert [a["action"] for a in uow.audits] == ["agreement.record"]


async def test_an_overlapping_confirmed_agreement_is_refused_and_nothing_is_written() -> None:
    uow = FakeRegistryUnitOfWork()
    await handlers.record_agreement(terms(), uow, actor="op")
    emitted = len(uow.events)
    with pytest.raises(registry.Conflict):
        await handlers.record_agreement(terms(effective_from=date(2026, 6, 1)), uow, actor="op")
    assert len(uow.events) == emitted and len(uow.registry.agreement_rows) == 1


async def test_a_correction_is_a_new_version_and_must_change_something() -> None:
    uow = FakeRegistryUnitOfWork()
    [row] = (await handlers.record_agreement(terms(), uow, actor="op")).agreements
    corrected = await handlers.correct_agreement(row.agreement_id, terms(max_content_share=Decimal("0.30")), uow,
                                                 actor="op", reason="the signed text says 30 %")
    assert [(a.version, a.registry_version) for a in corrected.agreements] == [(2, 2)]
    assert [r.version for r in uow.registry.agreement_rows] == [1, 2]  # the earlier version stays
    with pytest.raises(handlers.NothingToCorrect):
        await handlers.correct_agreement(row.agreement_id, terms(max_content_share=Decimal("0.30")), uow,
                                         actor="op", reason="again")
    with pytest.raises(handlers.NotFound):
        await handlers.correct_agreement("agr-none", terms(), uow, actor="op", reason="no such agreement")
