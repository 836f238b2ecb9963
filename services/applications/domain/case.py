"""The procurement case and its state machine. Pure Python: no storage, no messaging."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    submitted = "submitted"
    verifying = "verifying"
    needs_review = "needs_review"
    origin_rejected = "origin_rejected"
    origin_verified = "origin_verified"
    loan_requested = "loan_requested"
    loan_approved = "loan_approved"
    loan_rejected = "loan_rejected"
    withdrawn = "withdrawn"


# The order a case moves in; a transition to a lower rank is refused, so status never goes backwards.
RANK = {
    Status.submitted: 0,
    Status.verifying: 1,
    Status.needs_review: 2,
    Status.origin_rejected: 3,
    Status.origin_verified: 3,
    Status.loan_requested: 4,
    Status.loan_approved: 5,
    Status.loan_rejected: 5,
    Status.withdrawn: 6,
}

FINAL = {Status.origin_rejected, Status.loan_approved, Status.loan_rejected, Status.withdrawn}


def is_final(status: Status, *, financing_requested: bool) -> bool:
    return status in FINAL or (status == Status.origin_verified and not financing_requested)


class TransitionRefused(Exception):
    pass


@dataclass
class CaseState:
    status: Status
    financing_requested: bool
    verification_request_id: str | None = None

    def on_handed_to_verification(self) -> bool:
        if self.status == Status.submitted:
            self.status = Status.verifying
            return True
        return False

    def on_verification(self, outcome: str, request_id: str | None) -> Status | None:
        """Apply a verification outcome; returns the new status, or None when the result is stale."""
        if self.status in (Status.withdrawn, Status.loan_requested, Status.loan_approved, Status.loan_rejected):
            return None
        if request_id is not None and self.verification_request_id not in (None, request_id):
            return None  # answers an older request; a newer verification is under way
        if outcome == "eligible":
            self.status = Status.loan_requested if self.financing_requested else Status.origin_verified
        elif outcome == "ineligible":
            self.status = Status.origin_rejected
        else:
            self.status = Status.needs_review
        return self.status

    def on_loan_decision(self, approved: bool) -> Status | None:
        if self.status != Status.loan_requested:
            return None
        self.status = Status.loan_approved if approved else Status.loan_rejected
        return self.status

    def can_withdraw(self) -> bool:
        return not is_final(self.status, financing_requested=self.financing_requested)

    def withdraw(self) -> None:
        if not self.can_withdraw():
            raise TransitionRefused(f"a case in status {self.status} cannot be withdrawn")
        self.status = Status.withdrawn

    def can_reverify(self) -> bool:
        return self.status in (
            Status.verifying, Status.needs_review, Status.origin_rejected, Status.origin_verified,
        )

    def request_reverification(self, request_id: str) -> None:
        if not self.can_reverify():
            raise TransitionRefused(f"a case in status {self.status} cannot be verified again")
        self.verification_request_id = request_id

    def record_review(self, eligible: bool, review_id: str) -> Status:
        """A reviewer's decision on a `needs_review` case becomes its verdict: eligible moves it on (to the loan
        request when it asks for financing), ineligible rejects it. A verification result still in flight for an
        older request is then stale (`review_id` replaces the request id)."""
        if self.status != Status.needs_review:
            raise TransitionRefused(f"a review decision needs a case in needs_review, not {self.status}")
        self.verification_request_id = review_id
        if not eligible:
            self.status = Status.origin_rejected
        else:
            self.status = Status.loan_requested if self.financing_requested else Status.origin_verified
        return self.status

    def can_amend(self) -> bool:
        return self.status in AMENDABLE

    def amend(self, financing_requested: bool, request_id: str) -> None:
        """A new revision of the proposal, verified again; the status stays until the new verdict arrives."""
        if not self.can_amend():
            raise TransitionRefused(f"a proposal can be amended in needs_review or origin_rejected, not {self.status}")
        self.financing_requested = financing_requested
        self.verification_request_id = request_id


AMENDABLE = {Status.needs_review, Status.origin_rejected}
