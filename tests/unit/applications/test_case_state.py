import pytest

from safe_procurement.services.applications.domain.case import CaseState, Status, TransitionRefused, is_final


@pytest.mark.parametrize(("outcome", "financing", "status", "final"), [
    pytest.param("eligible", False, Status.origin_verified, True, id="eligible without financing: origin verified"),
    pytest.param("eligible", True, Status.loan_requested, False, id="eligible with financing: on to the loan"),
    pytest.param("ineligible", True, Status.origin_rejected, True, id="ineligible: rejected and final"),
    pytest.param("needs_review", False, Status.needs_review, False, id="needs review: not final"),
])
def test_a_verdict_moves_a_verifying_case_to_its_next_status(outcome, financing, status, final):
    s = CaseState(Status.verifying, financing_requested=financing, verification_request_id="r1")
    assert s.on_verification(outcome, "r1") == status
    assert is_final(s.status, financing_requested=financing) is final


def test_a_result_for_an_older_request_is_not_applied():
    s = CaseState(Status.verifying, financing_requested=False, verification_request_id="r2")
    assert s.on_verification("ineligible", "r1") is None
    assert s.status == Status.verifying


def test_a_verification_arriving_after_the_loan_was_requested_never_moves_status_back():
    s = CaseState(Status.loan_requested, financing_requested=True, verification_request_id="r1")
    assert s.on_verification("eligible", "r1") is None
    assert s.status == Status.loan_requested


def test_loan_decisions_apply_only_while_the_loan_is_requested():
    s = CaseState(Status.loan_requested, financing_requested=True)
    assert s.on_loan_decision(True) == Status.loan_approved
    assert s.on_loan_decision(False) is None
    assert s.status == Status.loan_approved


def test_a_withdrawn_case_ignores_later_results():
    s = CaseState(Status.verifying, financing_requested=True, verification_request_id="r1")
    s.withdraw()
    assert s.on_verification("eligible", "r1") is None
    assert s.on_loan_decision(True) is None
    assert s.status == Status.withdrawn


@pytest.mark.parametrize("status", [Status.loan_approved, Status.loan_rejected, Status.origin_rejected, Status.withdrawn])
def test_a_final_case_cannot_be_withdrawn(status):
    with pytest.raises(TransitionRefused):
        CaseState(status, financing_requested=True).withdraw()


def test_an_approved_loan_blocks_withdrawal_but_a_requested_one_does_not():
    CaseState(Status.loan_requested, financing_requested=True).withdraw()
    with pytest.raises(TransitionRefused):
        CaseState(Status.loan_approved, financing_requested=True).withdraw()


def test_reverification_is_refused_once_a_loan_is_requested():
    with pytest.raises(TransitionRefused):
        CaseState(Status.loan_requested, financing_requested=True).request_reverification("r9")
