"""Composition of the partner registry: settings → kit runtime → FastAPI app; the seed loads on start."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from safe_procurement.services.partner_registry.adapters import repository as repo
from safe_procurement.services.partner_registry.adapters import seed as seed_file
from safe_procurement.services.partner_registry.bootstrap import Dependencies, bootstrap
from safe_procurement.services.partner_registry.config import Settings
from safe_procurement.services.partner_registry.entrypoints import admin_api, admin_schemas, subscribers
from safe_procurement.services.partner_registry.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.app import Runtime, ServiceSpec, create_app
from safe_procurement.shared.kit.uow import begin

log = logging.getLogger("safe.partner_registry")

PUBLISHES = {
    streams.COUNTRY_STATUS_CHANGED: contracts.CountryStatusChanged,
    streams.PARTNER_AGREEMENT_RECORDED: contracts.PartnerAgreementRecorded,
    streams.REFERENCE_DATA_PUBLISHED: contracts.ReferenceDataPublished,
}


async def _load_seed(rt: Runtime[Dependencies]) -> None:
    """Publish whatever the seed file adds or changes (nothing on an unchanged seed)."""
    if not rt.deps.load_seed:
        return
    seed = await asyncio.to_thread(seed_file.load, rt.deps.seed_path)
    async with begin(rt.factory, repo.RegistryUnitOfWork) as uow:
        published = await handlers.load_seed(seed, uow)
    if published is None:
        log.info("seed unchanged; nothing published", extra={"seed_version": seed.version})
        return
    log.info("seed published", extra={"seed_version": seed.version, "registry_version": published.registry_version,
                                      "countries": len(published.countries),
                                      "agreements": len(published.agreements)})
    rt.wake_relay()


async def _register_gauges(rt: Runtime) -> None:
    rt.metrics.gauge("safe_registry_version", "Registry publication counter", ())
    rt.metrics.gauge("safe_registry_records", "Country and agreement records held", ("kind",))


async def _gauges(rt: Runtime) -> dict[str, dict[tuple[str, ...], float]]:
    async with rt.factory() as s:
        meta = await repo.meta(s)
    return {
        "safe_registry_version": {(): float(meta.registry_version)},
        "safe_registry_records": {("country",): float(meta.countries), ("agreement",): float(meta.agreements)},
    }


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    spec = ServiceSpec(
        deps=bootstrap(settings),
        name="partner_registry",
        title="SAFE partner registry",
        description="The effective-dated source of truth about countries, partners and participation agreements; "
                    "every change is versioned, sourced, audited and published on the registry streams.",
        settings=settings,
        migrations=db.migrations_dir(__file__),
        routers=[admin_api.router],
        publishes=PUBLISHES,
        on_startup=[_register_gauges, _load_seed],
        gauges=_gauges,
        openapi_models=[admin_schemas.AgreementCreate, admin_schemas.AgreementCorrection],
        unit_of_work=repo.RegistryUnitOfWork,
    )
    return create_app(spec, messaging_setup=subscribers.register)
