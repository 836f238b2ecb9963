"""A reviewer's decision on a `needs_review` case, and the amendment of a proposal (a new numbered revision, verified
again). Plain service-layer functions, one call each inside the caller's transaction, so that an approval gate (four
eyes) can wrap them: they check, write the case, the timeline, the audit entry and the outgoing events, or raise."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from safe_procurement.services.applications.adapters.repository import ApplicationsUnitOfWork
from safe_procurement.services.applications.adapters.tables import ProposalRevisionRow
from safe_procurement.services.applications.domain.case import TransitionRefused
from safe_procurement.services.applications.service_layer import handlers
from safe_procurement.services.applications.service_layer.handlers import Case, NotFound
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.contracts.ids import new_id
from safe_procurement.shared.kit.tables import utcnow

Decision = Literal["eligible", "ineligible"]


@dataclass(frozen=True)
class ReviewDecision:
    decision: Decision
    justification: str
    evidence_refs: Sequence[str]


async def record_review(case_id: str, review: ReviewDecision, uow: ApplicationsUnitOfWork, *, actor: str) -> Case:
    """The reviewer's decision becomes the case's verdict, marked as a human decision with who and why; the case
    moves on: eligible → loan request (with financing) or origin_verified; ineligible → origin_rejected."""
    row = await uow.cases.get(case_id)
    if row is None:
        raise NotFound(case_id)
    state = handlers._state(row)
    review_id = new_id()
    new = state.record_review(review.decision == "eligible", review_id)  # raises TransitionRefused
    now = utcnow()
    verification: dict[str, Any] = json.loads(row.verification) if row.verification else {}
    machine = verification.get("outcome", "needs_review")
    verification["outcome"] = review.decision
    verification["review"] = {
        "review_id": review_id, "decided_by": actor, "decided_at": now.isoformat(), "decision": review.decision,
        "justification": review.justification, "evidence_refs": list(review.evidence_refs), "human": True,
        "machine_outcome": machine,
    }
    row.verification = json.dumps(verification)
    summary = (f"review decision by {actor}: {review.decision} (the rules said {machine}): {review.justification}"
               + (f" [evidence: {', '.join(review.evidence_refs)}]" if review.evidence_refs else ""))
    handlers._timeline(uow, row.id, "ReviewDecisionRecorded", summary, at=now, event_id=review_id)
    uow.audit(actor, "case.review", f"procurements/{row.id}", correlation_id=row.id, reason=review.justification,
              details=json.dumps({"decision": review.decision, "evidence_refs": list(review.evidence_refs),
                                  "machine_outcome": machine, "status": new.value}))
    if new.value == "loan_requested":
        uow.emit(streams.LOAN_REQUESTED, handlers.request_loan(uow, row, review.decision, causation_id=None))
    handlers._apply(row, state)
    await uow.cases.save(row)
    return row


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The top-level fields of the proposal that differ (added, removed or changed)."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


async def amend(
    case_id: str, proposal: contracts.Proposal, uow: ApplicationsUnitOfWork, *, reason: str, actor: str
) -> Case:
    """Replace the case's proposal by a new numbered revision and verify it again; the earlier revisions stay
    readable. Only in needs_review or origin_rejected, and only for the same reference (the business key)."""
    row = await uow.cases.get(case_id)
    if row is None:
        raise NotFound(case_id)
    if proposal.reference != row.reference:
        raise TransitionRefused(f"an amendment keeps the case's reference {row.reference!r}, "
                                f"not {proposal.reference!r}")
    state = handlers._state(row)
    text = proposal.model_dump_json()
    before = json.loads(row.proposal, parse_float=Decimal)
    after = json.loads(text, parse_float=Decimal)
    changed = changed_fields(before, after)
    if not changed:
        raise TransitionRefused("the amendment changes nothing: re-verify the case instead")
    event = contracts.ReverificationRequested(correlation_id=row.id, case_id=row.id, proposal=proposal,
                                              requested_by=actor, reason=f"amended: {reason}")
    state.amend(bool(proposal.financing), str(event.event_id))  # raises TransitionRefused
    last = await uow.revisions.last(row.id)
    first: list[ProposalRevisionRow] = []
    if last is None:  # the first amendment: the proposal as submitted becomes revision 1
        first.append(ProposalRevisionRow(case_id=row.id, revision=1, proposal=row.proposal, changed="[]",
                                         amended_by="submitted", reason="as submitted", at=row.created_at))
        last = 1
    revision = last + 1
    await uow.revisions.add(*first, ProposalRevisionRow(
        case_id=row.id, revision=revision, proposal=text, changed=json.dumps(changed), amended_by=actor,
        reason=reason))
    row.financing_requested, row.lead_member_state = bool(proposal.financing), proposal.lead_member_state
    await uow.cases.replace_proposal(row, text, participants=sorted(set(proposal.participants)))
    uow.emit(streams.REVERIFICATION_REQUESTED, event)
    handlers._timeline(uow, row.id, "ProposalAmended",
                       f"amended by {actor} to revision {revision}: changed {', '.join(changed)}; {reason}; "
                       "sent for verification again", at=event.occurred_at, event_id=event.event_id)
    uow.audit(actor, "case.amend", f"procurements/{row.id}", correlation_id=row.id, reason=reason,
              details=json.dumps({"revision": revision, "changed": changed}))
    handlers._apply(row, state)
    await uow.cases.save(row)
    return row
