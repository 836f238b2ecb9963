"""Stream entrypoints of the applications service: stream → handler, nothing else."""

from __future__ import annotations

from typing import Any

from safe_procurement.services.applications.adapters.repository import ApplicationsUnitOfWork
from safe_procurement.services.applications.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.messaging import Messaging


def _submit_key(_proposal: Any, entry_id: str) -> str:
    # commands carry no event id: the stream entry is the unit of delivery; `reference` makes it idempotent
    return f"{streams.SUBMIT_PROCUREMENT}/{entry_id}"


def register(m: Messaging, _runtime: Any = None) -> None:
    @m.subscribe(streams.SUBMIT_PROCUREMENT, contracts.Proposal, key=_submit_key, prefetch=handlers.prefetch_references,
                 description="External systems submit proposals (docs/interface.md) without HTTP")
    async def on_submit_procurement(proposal: contracts.Proposal, uow: ApplicationsUnitOfWork) -> None:
        await handlers.on_submit_command(proposal, uow)

    for stream in (streams.PROCUREMENT_SUBMITTED, streams.REVERIFICATION_REQUESTED):

        async def on_verification_request_sent(
            event: handlers.VerificationRequestSent, uow: ApplicationsUnitOfWork
        ) -> None:
            """The case's verification request is out, with origin verification: `submitted` → `verifying`."""
            await handlers.on_verification_request_sent(event, uow)

        m.subscribe(stream, handlers.VerificationRequestSent, prefetch=handlers.prefetch_cases)(
            on_verification_request_sent)

    @m.subscribe(streams.ORIGIN_VERIFICATION_COMPLETED, contracts.OriginVerificationCompleted, prefetch=handlers.prefetch_cases)
    async def on_origin_verification_completed(event: contracts.OriginVerificationCompleted, uow: ApplicationsUnitOfWork) -> None:
        """Record the verification report; request the loan when eligible and financing is asked."""
        await handlers.on_verification_completed(event, uow)

    @m.subscribe(streams.LOAN_APPROVED, contracts.LoanApproved, prefetch=handlers.prefetch_cases)
    async def on_loan_approved(event: contracts.LoanApproved, uow: ApplicationsUnitOfWork) -> None:
        """The loan office approved the case's loans."""
        await handlers.on_loan_approved(event, uow)

    @m.subscribe(streams.LOAN_REJECTED, contracts.LoanRejected, prefetch=handlers.prefetch_cases)
    async def on_loan_rejected(event: contracts.LoanRejected, uow: ApplicationsUnitOfWork) -> None:
        """The loan office rejected the case's loan request."""
        await handlers.on_loan_rejected(event, uow)

    for producer, stream in streams.OPERATOR_ACTION_RECORDED.items():

        async def on_operator_action_recorded(event: contracts.OperatorActionRecorded, uow: ApplicationsUnitOfWork) -> None:
            """Operator actions elsewhere that concern a case appear in its timeline."""
            await handlers.on_operator_action(event, uow)

        on_operator_action_recorded.__name__ = f"on_operator_action_recorded_{producer}"
        m.subscribe(stream, contracts.OperatorActionRecorded, prefetch=handlers.prefetch_cases)(on_operator_action_recorded)
