"""Origin verification handlers: load → decide (domain) → save → record events, in the caller's transaction."""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.origin_verification.adapters import mapping, replica
from services.origin_verification.adapters.tables import ReportRow
from services.origin_verification.bootstrap import Dependencies
from services.origin_verification.domain import engine
from shared import contracts
from shared.contracts import streams
from shared.kit.db import add_row, connection_of, fetch_all
from shared.kit.messaging import Defer, HandlerContext

SERVICE = "origin_verification"
READY_CHECK = "registry_replica"

log = logging.getLogger("safe.origin_verification")

VerificationRequest = contracts.ProcurementSubmitted | contracts.ReverificationRequested


class ReplicaNotReady(Exception):
    def __init__(self, status: replica.Readiness) -> None:
        super().__init__(f"registry replica not ready: {status.reason}")
        self.status = status


def note_readiness(state: dict[str, Any], status: replica.Readiness) -> None:
    """Expose the replica's readiness on /health/ready (runtime.state["ready_checks"])."""
    state.setdefault("ready_checks", {})[READY_CHECK] = status.ready
    state["registry_replica"] = status


_ANSWERED = "origin_verification.answered_requests"  # per-batch cache in session.info (prefetch_reports)
_READINESS = "origin_verification.readiness"
_ANSWERED_AMONG = sa.select(ReportRow.__table__.c.request_event_id).where(  # type: ignore[attr-defined]
    ReportRow.__table__.c.request_event_id.in_(sa.bindparam("ids", expanding=True)))  # type: ignore[attr-defined]


async def prefetch_reports(session: AsyncSession, events: list[Any]) -> None:
    """Which requests of a batch were answered already, with one query (instead of one per message)."""
    ids = sorted({str(e.event_id) for e in events})
    answered = await fetch_all(await connection_of(session), _ANSWERED_AMONG, {"ids": ids})
    session.info[_ANSWERED] = (set(ids), {r[0] for r in answered})


async def already_answered(session: AsyncSession, request_event_id: str) -> bool:
    cached = session.info.get(_ANSWERED)
    if cached is not None and request_event_id in cached[0]:
        return request_event_id in cached[1]
    return await report_for_request(session, request_event_id) is not None


async def report_for_request(session: AsyncSession, request_event_id: str) -> ReportRow | None:
    return (await session.exec(select(ReportRow).where(ReportRow.request_event_id == request_event_id))).first()


async def reports_of(session: AsyncSession, case_id: str) -> list[ReportRow]:
    q = select(ReportRow).where(ReportRow.case_id == case_id).order_by(col(ReportRow.id))
    return list((await session.exec(q)).all())


async def evaluate(
    session: AsyncSession, proposal: contracts.Proposal, deps: Dependencies, state: dict[str, Any]
) -> tuple[contracts.VerificationResult, replica.Readiness]:
    """Verify against the replica as it stands; refuses (ReplicaNotReady) while reference data is incomplete."""
    # once per transaction: a batch of requests is verified against one state of the replica
    status = session.info.get(_READINESS)
    if status is None:
        status = session.info[_READINESS] = await replica.readiness(session)
    note_readiness(state, status)
    if not status.ready:
        raise ReplicaNotReady(status)
    cached = state.get("reference_cache")
    if cached is not None and cached[0] == status.fingerprint:
        reference = cached[1]
    else:  # the replica changed (or first use): load it once, reuse it until it changes again
        reference = await replica.load_reference(session, status.registry_version)
        state["reference_cache"] = (status.fingerprint, reference)
    rules = deps.rules.for_date(proposal.contract_signed_on)
    verdict = engine.verify(proposal, reference, rules, checked_at=deps.clock())
    return mapping.to_result(verdict), status


async def on_verification_requested(
    ctx: HandlerContext, event: VerificationRequest, deps: Dependencies, state: dict[str, Any]
) -> None:
    """Verify the proposal, keep the report (history per case), answer with OriginVerificationCompleted."""
    session = ctx.session
    if await already_answered(session, str(event.event_id)):
        return  # answered already (the inbox normally catches this first)
    try:
        result, status = await evaluate(session, event.proposal, deps, state)
    except ReplicaNotReady as e:
        raise Defer(f"registry replica not ready ({e.status.reason})", delay_s=deps.replica_retry_s) from None
    out = contracts.OriginVerificationCompleted(
        correlation_id=event.case_id, case_id=event.case_id, causation_id=event.event_id, result=result
    )
    result_json = result.model_dump_json()  # stored in the report and sent in the event: serialized once
    add_row(  # a bulk INSERT per batch (an ORM object outside one)
        session, ReportRow,
        case_id=event.case_id, request_event_id=str(event.event_id), request_type=event.event_type,
        event_id=str(out.event_id), outcome=result.outcome, rules_version=result.rules_version,
        registry_version=status.registry_version, contract_signed_on=event.proposal.contract_signed_on,
        participants=json.dumps(list(event.proposal.participants)), result=result_json,
        proposal=event.proposal.model_dump_json(),
    )
    if (answered := session.info.get(_ANSWERED)) is not None:
        answered[1].add(str(event.event_id))
    ctx.emit(streams.ORIGIN_VERIFICATION_COMPLETED, out, last=("result", result_json))
    log.debug("verified", extra={"event_id": str(out.event_id), "correlation_id": event.case_id, "service": SERVICE,
                                "outcome": result.outcome, "causation_id": str(event.event_id)})


async def on_country_status_changed(
    ctx: HandlerContext, event: contracts.CountryStatusChanged, state: dict[str, Any]
) -> None:
    await replica.upsert_country(ctx.session, event)
    note_readiness(state, await replica.readiness(ctx.session))


async def on_partner_agreement_recorded(
    ctx: HandlerContext, event: contracts.PartnerAgreementRecorded, state: dict[str, Any]
) -> None:
    await replica.upsert_agreement(ctx.session, event)
    note_readiness(state, await replica.readiness(ctx.session))


async def on_reference_data_published(
    ctx: HandlerContext, event: contracts.ReferenceDataPublished, state: dict[str, Any]
) -> None:
    await replica.record_publication(ctx.session, event)
    note_readiness(state, await replica.readiness(ctx.session))
