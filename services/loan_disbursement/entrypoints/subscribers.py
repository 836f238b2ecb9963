"""Stream entrypoints of the loan disbursement service: stream → handler, nothing else."""

from __future__ import annotations

from safe_procurement.services.loan_disbursement.adapters.repository import LoanUnitOfWork
from safe_procurement.services.loan_disbursement.bootstrap import Dependencies
from safe_procurement.services.loan_disbursement.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.app import Runtime
from safe_procurement.shared.kit.messaging import Messaging


def register(m: Messaging, runtime: Runtime[Dependencies]) -> None:
    deps = runtime.deps

    @m.subscribe(streams.LOAN_REQUESTED, contracts.LoanRequested, prefetch=handlers.note_batch)
    async def on_loan_requested(event: contracts.LoanRequested, uow: LoanUnitOfWork) -> None:
        """Decide every financing line of the case (L-1, L-2, L-5..L-8, PLAN) in one transaction: all approved
        and reserved in the ledger (LoanApproved), or nothing reserved (LoanRejected with every reason)."""
        await handlers.on_loan_requested(event, uow, deps.seeded_reference(), loans_from=deps.loans_from,
                                         check_financing_cap=deps.check_financing_cap)

    @m.subscribe(streams.PROCUREMENT_WITHDRAWN, contracts.ProcurementWithdrawn)
    async def on_procurement_withdrawn(event: contracts.ProcurementWithdrawn, uow: LoanUnitOfWork) -> None:
        """Release the case's reservations once; a later loan request for the case is rejected."""
        await handlers.on_procurement_withdrawn(
            event, uow)
