"""Origin verification handlers: load → decide (domain) → save → record events, in the caller's transaction."""

from __future__ import annotations

import json
import logging
from typing import Any

from safe_procurement.services.origin_verification.adapters import mapping, replica
from safe_procurement.services.origin_verification.adapters.repository import VerificationUnitOfWork
from safe_procurement.services.origin_verification.bootstrap import Dependencies
from safe_procurement.services.origin_verification.domain import engine
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.messaging import Defer

SERVICE = "origin_verification"
READY_CHECK = "registry_replica"

log = logging.getLogger("safe.origin_verification")

VerificationRequest = contracts.ProcurementSubmitted | contracts.ReverificationRequested


class ReplicaNotReady(Exception):
    def __init__(self, status: replica.Readiness) -> None:
        super().__init__(f"registry replica not ready: {status.reason}")
        self.status = status


def note_readiness(deps: Dependencies, status: replica.Readiness) -> None:
    deps.replica.status = status


async def prefetch_reports(uow: VerificationUnitOfWork, events: list[Any]) -> None:
    """Which requests of a batch were answered already, with one query (instead of one per message)."""
    await uow.reports.prefetch(sorted({str(e.event_id) for e in events}))


async def evaluate(
    uow: VerificationUnitOfWork, proposal: contracts.Proposal, deps: Dependencies
) -> tuple[contracts.VerificationResult, replica.Readiness]:
    """Verify against the replica as it stands; refuses (ReplicaNotReady) while reference data is incomplete."""
    status = await uow.replica.readiness()
    note_readiness(deps, status)
    if not status.ready:
        raise ReplicaNotReady(status)
    reference = deps.replica.reference_for(status)
    if reference is None:  # the replica changed (or first use): load it once, reuse it until it changes again
        reference = await uow.replica.reference(status.registry_version)
        deps.replica.loaded = (status.fingerprint, reference)
    rules = deps.rules.for_date(proposal.contract_signed_on)
    verdict = engine.verify(proposal, reference, rules, checked_at=deps.clock())
    return mapping.to_result(verdict), status


async def on_verification_requested(
    event: VerificationRequest, uow: VerificationUnitOfWork, deps: Dependencies
) -> None:
    """Verify the proposal, keep the report (history per case), answer with OriginVerificationCompleted."""
    if await uow.reports.answered(str(event.event_id)):
        return  # answered already (the inbox normally catches this first)
    try:
        result, status = await evaluate(uow, event.proposal, deps)
    except ReplicaNotReady as e:
        raise Defer(f"registry replica not ready ({e.status.reason})", delay_s=deps.replica_retry_s) from None
    out = contracts.OriginVerificationCompleted(
        correlation_id=event.case_id, case_id=event.case_id, causation_id=event.event_id, result=result
    )
    result_json = result.model_dump_json()  # stored in the report and sent in the event: serialized once
    uow.reports.add(
        case_id=event.case_id, request_event_id=str(event.event_id), request_type=event.event_type,
        event_id=str(out.event_id), outcome=result.outcome, rules_version=result.rules_version,
        registry_version=status.registry_version, contract_signed_on=event.proposal.contract_signed_on,
        participants=json.dumps(list(event.proposal.participants)), result=result_json,
        proposal=event.proposal.model_dump_json(),
    )
    uow.emit(streams.ORIGIN_VERIFICATION_COMPLETED, out, last=("result", result_json))
    log.debug("verified", extra={"event_id": str(out.event_id), "correlation_id": event.case_id, "service": SERVICE,
                                "outcome": result.outcome, "causation_id": str(event.event_id)})


async def on_country_status_changed(
    event: contracts.CountryStatusChanged, uow: VerificationUnitOfWork, deps: Dependencies
) -> None:
    await uow.replica.upsert_country(event)
    note_readiness(deps, await uow.replica.readiness())


async def on_partner_agreement_recorded(
    event: contracts.PartnerAgreementRecorded, uow: VerificationUnitOfWork, deps: Dependencies
) -> None:
    await uow.replica.upsert_agreement(event)
    note_readiness(deps, await uow.replica.readiness())


async def on_reference_data_published(
    event: contracts.ReferenceDataPublished, uow: VerificationUnitOfWork, deps: Dependencies
) -> None:
    await uow.replica.record_publication(event)
    note_readiness(deps, await uow.replica.readiness())
