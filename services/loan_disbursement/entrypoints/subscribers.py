"""Stream entrypoints of the loan disbursement service: stream → handler, nothing else."""

from __future__ import annotations

from services.loan_disbursement.adapters.repository import LoanUnitOfWork
from services.loan_disbursement.service_layer import handlers
from shared import contracts
from shared.contracts import streams
from shared.kit.app import Runtime
from shared.kit.messaging import Messaging


def register(m: Messaging, runtime: Runtime) -> None:
    @m.subscribe(streams.LOAN_REQUESTED, contracts.LoanRequested, prefetch=handlers.note_batch)
    async def on_loan_requested(event: contracts.LoanRequested, uow: LoanUnitOfWork) -> None:
        """Decide every financing line of the case (L-1, L-2, L-5..L-8, PLAN) in one transaction: all approved
        and reserved in the ledger (LoanApproved), or nothing reserved (LoanRejected with every reason)."""
        settings = runtime.settings
        await handlers.on_loan_requested(
            event, uow, runtime.state["reference"], loans_from=getattr(settings, "loans_from", "decided"),
            check_financing_cap=getattr(settings, "financing_within_contract_value", True))

    @m.subscribe(streams.PROCUREMENT_WITHDRAWN, contracts.ProcurementWithdrawn)
    async def on_procurement_withdrawn(event: contracts.ProcurementWithdrawn, uow: LoanUnitOfWork) -> None:
        """Release the case's reservations once; a later loan request for the case is rejected."""
        await handlers.on_procurement_withdrawn(
            event, uow)
