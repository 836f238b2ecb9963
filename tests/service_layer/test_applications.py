"""Applications handlers against a fake unit of work: submit → verdict → loan, without Redis or a database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from safe_procurement.services.applications.domain.case import Status, TransitionRefused
from safe_procurement.services.applications.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.messaging import Poison
from safe_procurement.shared.kit.uow import Delivery
from tests.service_layer.fakes import FakeApplicationsUnitOfWork

DEMO = Path(__file__).resolve().parents[2] / "services" / "demo" / "proposal.json"


def proposal(**changes: object) -> contracts.Proposal:
    data = json.loads(DEMO.read_text(), parse_float=Decimal)
    data.update(changes)
    return contracts.Proposal.model_validate(data)


def verdict(case_id: str, request_id: str, outcome: str) -> contracts.OriginVerificationCompleted:
    return contracts.OriginVerificationCompleted(
        correlation_id=case_id, case_id=case_id, causation_id=request_id,
        result=contracts.VerificationResult(outcome=outcome, rules_version="test", findings=[], end_products=[],
                                            checked_at=datetime(2026, 10, 1, 9, tzinfo=UTC)),
    )


async def test_submit_stores_the_case_and_emits_procurement_submitted() -> None:
    uow = FakeApplicationsUnitOfWork()
    case, created = await handlers.submit(proposal(), uow, via="HTTP")
    assert created and case.status == Status.submitted
    stored = uow.cases.stored[case.id]
    assert stored.reference == "DEMO" and stored.financing_requested
    assert uow.cases.participants[case.id] == ["LT", "PL"]
    [event] = uow.emitted_on(streams.PROCUREMENT_SUBMITTED)
    assert event.case_id == case.id and str(event.event_id) == stored.verification_request_id
    assert uow.timeline.types(case.id) == ["ProcurementSubmitted"]


async def test_submit_is_idempotent_on_the_reference_and_refuses_another_proposal() -> None:
    uow = FakeApplicationsUnitOfWork()
    first, _ = await handlers.submit(proposal(), uow, via="HTTP")
    again, created = await handlers.submit(proposal(), uow, via="HTTP")
    assert not created and again.id == first.id
    with pytest.raises(handlers.ReferenceConflict):
        await handlers.submit(proposal(title="another title"), uow, via="HTTP")
    assert len(uow.emitted_on(streams.PROCUREMENT_SUBMITTED)) == 1


async def test_a_conflicting_submit_command_is_dead_lettered_with_a_reason() -> None:
    uow = FakeApplicationsUnitOfWork()
    uow.delivery = Delivery(streams.SUBMIT_PROCUREMENT, "1-0")
    await handlers.on_submit_command(proposal(), uow)
    with pytest.raises(Poison, match="already exists with a different proposal"):
        await handlers.on_submit_command(proposal(title="another title"), uow)


async def test_eligible_verdict_with_financing_requests_the_loan_and_approval_ends_the_case() -> None:
    uow = FakeApplicationsUnitOfWork()
    case, _ = await handlers.submit(proposal(), uow, via="HTTP")
    await handlers.on_verification_completed(verdict(case.id, case.verification_request_id or "", "eligible"), uow)
    assert uow.cases.stored[case.id].status == Status.loan_requested
    [request] = uow.emitted_on(streams.LOAN_REQUESTED)
    assert request.case_id == case.id and request.verification_outcome == "eligible"
    assert [(f.member_state, f.amount_eur) for f in request.financing] == [("PL", Decimal("950000.00"))]
    assert request.component_cost_eur == Decimal("950000.00")
    loan = contracts.ApprovedLoan(loan_id="l-1", member_state="PL", amount_eur=Decimal("950000.00"))
    await handlers.on_loan_approved(contracts.LoanApproved(correlation_id=case.id, case_id=case.id, loans=[loan]), uow)
    stored = uow.cases.stored[case.id]
    assert stored.status == Status.loan_approved
    assert json.loads(stored.loan or "{}")["status"] == "approved"


async def test_a_verdict_for_an_older_request_is_not_applied() -> None:
    uow = FakeApplicationsUnitOfWork()
    case, _ = await handlers.submit(proposal(), uow, via="HTTP")
    await handlers.on_verification_completed(verdict(case.id, str(uuid.uuid4()), "ineligible"), uow)
    assert uow.cases.stored[case.id].status == Status.submitted
    assert "not applied" in uow.timeline.entries[-1]["summary"]


async def test_a_rejected_loan_rejects_the_case_and_withdrawal_is_then_refused() -> None:
    uow = FakeApplicationsUnitOfWork()
    case, _ = await handlers.submit(proposal(), uow, via="HTTP")
    await handlers.on_verification_completed(verdict(case.id, case.verification_request_id or "", "eligible"), uow)
    reason = contracts.LoanDecisionReason(member_state="PL", rule="L-2", message="over the facility")
    await handlers.on_loan_rejected(contracts.LoanRejected(correlation_id=case.id, case_id=case.id,
                                                           reasons=[reason]), uow)
    assert uow.cases.stored[case.id].status == Status.loan_rejected
    with pytest.raises(TransitionRefused):
        await handlers.withdraw(case.id, uow, reason="late", actor="op")


async def test_withdrawal_is_audited_and_announced() -> None:
    uow = FakeApplicationsUnitOfWork()
    case, _ = await handlers.submit(proposal(), uow, via="HTTP")
    await handlers.withdraw(case.id, uow, reason="no longer needed", actor="op")
    assert uow.cases.stored[case.id].status == Status.withdrawn
    assert [e.case_id for e in uow.emitted_on(streams.PROCUREMENT_WITHDRAWN)] == [case.id]
    assert [(a["action"], a["actor"]) for a in uow.audits] == [("case.withdraw", "op")]


async def test_a_published_verification_request_puts_the_case_in_verifying_once() -> None:
    uow = FakeApplicationsUnitOfWork()
    case, _ = await handlers.submit(proposal(), uow, via="HTTP")
    [submitted] = uow.emitted_on(streams.PROCUREMENT_SUBMITTED)
    sent = handlers.VerificationRequestSent.model_validate_json(submitted.model_dump_json())
    await handlers.on_verification_request_sent(sent, uow)
    assert uow.cases.stored[case.id].status == Status.verifying
    await handlers.on_verification_completed(verdict(case.id, str(sent.event_id), "ineligible"), uow)
    await handlers.on_verification_request_sent(sent, uow)  # late or again: the case has moved on
    assert uow.cases.stored[case.id].status == Status.origin_rejected
