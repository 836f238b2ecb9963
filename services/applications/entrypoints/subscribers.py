"""Stream entrypoints of the applications service: stream → handler, nothing else."""

from __future__ import annotations

from typing import Any

from services.applications.service_layer import handlers
from shared import contracts
from shared.contracts import streams
from shared.kit.messaging import HandlerContext, Messaging


def _submit_key(_proposal: Any, entry_id: str) -> str:
    # commands carry no event id: the stream entry is the unit of delivery; `reference` makes it idempotent
    return f"{streams.SUBMIT_PROCUREMENT}/{entry_id}"


def register(m: Messaging, _runtime: Any = None) -> None:
    @m.subscribe(streams.SUBMIT_PROCUREMENT, contracts.Proposal, key=_submit_key, prefetch=handlers.prefetch_references,
                 description="External systems submit proposals (docs/interface.md) without HTTP")
    async def on_submit_procurement(ctx: HandlerContext, proposal: contracts.Proposal) -> None:
        await handlers.on_submit_command(ctx, proposal)

    @m.subscribe(streams.ORIGIN_VERIFICATION_COMPLETED, contracts.OriginVerificationCompleted, prefetch=handlers.prefetch_cases)
    async def on_origin_verification_completed(ctx: HandlerContext, event: contracts.OriginVerificationCompleted) -> None:
        """Record the verification report; request the loan when eligible and financing is asked."""
        await handlers.on_verification_completed(ctx, event)

    @m.subscribe(streams.LOAN_APPROVED, contracts.LoanApproved, prefetch=handlers.prefetch_cases)
    async def on_loan_approved(ctx: HandlerContext, event: contracts.LoanApproved) -> None:
        """The loan office approved the case's loans."""
        await handlers.on_loan_approved(ctx, event)

    @m.subscribe(streams.LOAN_REJECTED, contracts.LoanRejected, prefetch=handlers.prefetch_cases)
    async def on_loan_rejected(ctx: HandlerContext, event: contracts.LoanRejected) -> None:
        """The loan office rejected the case's loan request."""
        await handlers.on_loan_rejected(ctx, event)

    for producer, stream in streams.OPERATOR_ACTION_RECORDED.items():

        async def on_operator_action_recorded(ctx: HandlerContext, event: contracts.OperatorActionRecorded) -> None:
            """Operator actions elsewhere that concern a case appear in its timeline."""
            await handlers.on_operator_action(ctx, event)

        on_operator_action_recorded.__name__ = f"on_operator_action_recorded_{producer}"
        m.subscribe(stream, contracts.OperatorActionRecorded, prefetch=handlers.prefetch_cases)(on_operator_action_recorded)
