"""Stream entrypoints of the origin verification service: stream → handler, nothing else."""

from __future__ import annotations

from safe_procurement.services.origin_verification.adapters.repository import VerificationUnitOfWork
from safe_procurement.services.origin_verification.bootstrap import Dependencies
from safe_procurement.services.origin_verification.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.app import Runtime
from safe_procurement.shared.kit.messaging import Messaging


def register(m: Messaging, runtime: Runtime) -> None:
    deps: Dependencies = runtime.deps

    @m.subscribe(streams.PROCUREMENT_SUBMITTED, contracts.ProcurementSubmitted, prefetch=handlers.prefetch_reports)
    async def on_procurement_submitted(event: contracts.ProcurementSubmitted, uow: VerificationUnitOfWork) -> None:
        """Verify a newly submitted proposal (deferred until the registry replica is complete)."""
        await handlers.on_verification_requested(event, uow, deps)

    @m.subscribe(streams.REVERIFICATION_REQUESTED, contracts.ReverificationRequested,
                 prefetch=handlers.prefetch_reports)
    async def on_reverification_requested(event: contracts.ReverificationRequested, uow: VerificationUnitOfWork) -> None:
        """Verify a case again (e.g. after a registry correction); a new report, the old one stays."""
        await handlers.on_verification_requested(event, uow, deps)

    @m.subscribe(streams.COUNTRY_STATUS_CHANGED, contracts.CountryStatusChanged)
    async def on_country_status_changed(event: contracts.CountryStatusChanged, uow: VerificationUnitOfWork) -> None:
        """Replica: upsert the country's dated record (highest version wins)."""
        await handlers.on_country_status_changed(event, uow, deps)

    @m.subscribe(streams.PARTNER_AGREEMENT_RECORDED, contracts.PartnerAgreementRecorded)
    async def on_partner_agreement_recorded(event: contracts.PartnerAgreementRecorded, uow: VerificationUnitOfWork) -> None:
        """Replica: upsert the agreement (highest version wins; every version kept)."""
        await handlers.on_partner_agreement_recorded(event, uow, deps)

    @m.subscribe(streams.REFERENCE_DATA_PUBLISHED, contracts.ReferenceDataPublished)
    async def on_reference_data_published(event: contracts.ReferenceDataPublished, uow: VerificationUnitOfWork) -> None:
        """Replica: the registry finished a publication; the replica is ready once it holds all of it."""
        await handlers.on_reference_data_published(event, uow, deps)
