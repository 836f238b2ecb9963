"""The case state machine for a reviewer's decision and an amendment."""

from __future__ import annotations

import pytest

from safe_procurement.services.applications.domain.case import CaseState, Status, TransitionRefused


def test_an_eligible_review_moves_a_financed_case_to_the_loan_request_and_an_unfinanced_one_to_verified():
    assert CaseState(Status.needs_review, True).record_review(True, "r1") == Status.loan_requested
    assert CaseState(Status.needs_review, False).record_review(True, "r1") == Status.origin_verified


def test_an_ineligible_review_rejects_the_case():
    assert CaseState(Status.needs_review, True).record_review(False, "r1") == Status.origin_rejected


@pytest.mark.parametrize("status", [s for s in Status if s != Status.needs_review])
def test_a_review_is_refused_outside_needs_review(status):
    with pytest.raises(TransitionRefused):
        CaseState(status, True).record_review(True, "r1")


def test_a_verification_answering_the_request_before_the_review_is_stale():
    state = CaseState(Status.needs_review, True, verification_request_id="v1")
    state.record_review(False, "r1")
    assert state.on_verification("eligible", "v1") is None and state.status == Status.origin_rejected


@pytest.mark.parametrize("status", [Status.needs_review, Status.origin_rejected])
def test_an_amendment_keeps_the_status_until_the_new_verdict(status):
    state = CaseState(status, False)
    state.amend(True, "v2")
    assert state.status == status and state.financing_requested
    assert state.on_verification("eligible", "v2") == Status.loan_requested


@pytest.mark.parametrize("status", [s for s in Status if s not in (Status.needs_review, Status.origin_rejected)])
def test_an_amendment_is_refused_in_any_other_status(status):
    with pytest.raises(TransitionRefused):
        CaseState(status, True).amend(True, "v2")
