"""Loan disbursement handlers against a fake unit of work: a loan approved and reserved within the facility,
a request that would over-commit it refused with nothing reserved, a second request for a case ignored."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from safe_procurement.services.loan_disbursement.domain import rules
from safe_procurement.services.loan_disbursement.main import load_reference
from safe_procurement.services.loan_disbursement.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from tests.service_layer.fakes import FakeLoanUnitOfWork

MAX = Decimal("1000000.00")
CATEGORY = "ammunition_and_missiles"


def requested(amount: str, *, case_id: str | None = None) -> contracts.LoanRequested:
    case_id = case_id or str(uuid.uuid4())
    return contracts.LoanRequested(
        correlation_id=case_id, case_id=case_id, reference=f"R-{case_id[:8]}", lead_member_state="PL",
        participants=["PL", "LT"], categories=[CATEGORY], contract_signed_on=date(2026, 9, 1),
        verification_outcome="eligible", financing=[contracts.FinancingLine(member_state="PL", amount_eur=Decimal(amount))],
        contract_value_eur=Decimal("5000000.00"),
    )


def fake() -> FakeLoanUnitOfWork:
    return FakeLoanUnitOfWork({"PL": MAX}, plan={CATEGORY: MAX})


async def test_a_loan_within_the_facility_is_approved_and_reserved() -> None:
    uow = fake()
    event = requested("600000.00")
    await handlers.on_loan_requested(event, uow, load_reference())
    [approved] = uow.emitted_on(streams.LOAN_APPROVED)
    assert [(loan.member_state, loan.amount_eur) for loan in approved.loans] == [("PL", Decimal("600000.00"))]
    assert uow.ledger.approved("PL") == Decimal("600000.00")
    assert [r["status"] for r in uow.ledger.rows["loan_requests"]] == ["approved"]
    assert uow.ledger.state.facilities["PL"].approved == Decimal("600000.00")
    assert uow.ledger.state.plans["PL"][CATEGORY] == Decimal("400000.00")


async def test_a_request_that_would_over_commit_the_facility_is_refused_and_reserves_nothing() -> None:
    uow = fake()
    reference = load_reference()
    await handlers.on_loan_requested(requested("600000.00"), uow, reference)
    await handlers.on_loan_requested(requested("400000.01"), uow, reference)
    [rejected] = uow.emitted_on(streams.LOAN_REJECTED)
    assert [(r.member_state, r.rule) for r in rejected.reasons] == [("PL", rules.L2)]
    assert uow.ledger.approved("PL") == Decimal("600000.00")  # only the first loan is reserved
    assert [r["status"] for r in uow.ledger.rows["loan_requests"]] == ["approved", "rejected"]


async def test_a_second_request_for_a_decided_case_is_ignored_and_audited() -> None:
    uow = fake()
    reference = load_reference()
    first = requested("100000.00")
    await handlers.on_loan_requested(first, uow, reference)
    await handlers.on_loan_requested(requested("100000.00", case_id=first.case_id), uow, reference)
    assert len(uow.emitted_on(streams.LOAN_APPROVED)) == 1 and uow.emitted_on(streams.LOAN_REJECTED) == []
    assert uow.ledger.approved("PL") == Decimal("100000.00")
    assert [a["action"] for a in uow.audits] == ["loan_request.duplicate"]
