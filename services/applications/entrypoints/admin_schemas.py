"""HTTP schemas of the applications service (never the tables, never the wire events)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from safe_procurement.shared import contracts
from safe_procurement.shared.kit import strict
from safe_procurement.shared.kit.web import UtcDateTime


class CaseCreated(BaseModel):
    id: str
    reference: str
    status: str


class CasePublic(BaseModel):
    id: str
    reference: str
    status: str = Field(description="submitted, verifying, needs_review, origin_rejected, origin_verified, "
                                    "loan_requested, loan_approved, loan_rejected, withdrawn")
    proposal: dict[str, Any]
    verification: dict[str, Any] | None = Field(description="The verification report; null until done")
    loan: dict[str, Any] | None = Field(description="The loan request and decision; null until requested")
    created_at: UtcDateTime
    updated_at: UtcDateTime


class SlaPublic(BaseModel):
    """The case's SLA clock in its current status (docs/governance.md)."""

    since: UtcDateTime = Field(description="When the case entered its status")
    seconds_in_status: float = Field(description="Time in the status so far, seconds")
    target: str | None = Field(description="The status's target (e.g. 5m, 5wd = five working days); null: none")
    due_at: UtcDateTime | None = Field(description="When the target is reached")
    breached: bool = Field(description="True when the case has been in its status longer than the target")
    over_by_seconds: float | None = Field(description="How far past the target, seconds")


class CaseSummary(BaseModel):
    id: str
    reference: str
    status: str
    lead_member_state: str
    created_at: UtcDateTime
    updated_at: UtcDateTime
    sla: SlaPublic | None = Field(default=None, description="Time in status and any breach of its target")


class CasePage(BaseModel):
    items: list[CaseSummary]
    next_cursor: str | None


class TimelineItem(BaseModel):
    type: str
    at: UtcDateTime
    recorded_at: UtcDateTime
    event_id: str | None
    causation_id: str | None
    service: str
    summary: str


class Timeline(BaseModel):
    case_id: str
    items: list[TimelineItem]


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, AfterValidator(strict.not_blank)] = Field(
        default="", max_length=2000, description="Why (recorded in the audit trail; not blank when given)")


class Explanation(BaseModel):
    case_id: str
    status: str
    final: bool
    since: UtcDateTime
    waiting_for: str | None = Field(description="What the case waits for, in words")
    service: str | None = Field(description="The service expected to act next")
    stream: str | None = Field(description="The stream carrying the message it waits on")
    message_event_id: str | None = Field(description="The event it waits on")
    stream_state: dict[str, Any] | None = Field(description="Pending/lag of the next service's group on that stream")
    operator_actions: list[str]
    sla: SlaPublic | None = Field(default=None, description="Time in status and any breach of its target")
    redis_recovery: dict[str, Any] | None = Field(
        default=None,
        description="While the case waits: whether Redis lost writes since this service's last event for it "
                    "(`note`, in words), and what its guard re-published")


class ReviewRequest(BaseModel):
    """A reviewer's decision on a needs_review case (it becomes the verdict, marked as a human decision)."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["eligible", "ineligible"] = Field(description="The reviewer's verdict")
    justification: str = Field(min_length=1, max_length=4000, description="Why: recorded on the verdict and audited")
    evidence_refs: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list, max_length=100, description="References of the evidence the reviewer relied on")


class AmendmentRequest(BaseModel):
    """A new revision of the case's proposal (same reference), verified again."""

    model_config = ConfigDict(extra="forbid")
    proposal: contracts.Proposal
    reason: str = Field(min_length=1, max_length=2000, description="What the amendment corrects (audited)")


class RevisionPublic(BaseModel):
    revision: int
    proposal: dict[str, Any]
    changed: list[str] = Field(description="Top-level proposal fields that differ from the revision before")
    amended_by: str
    reason: str
    at: UtcDateTime


class Revisions(BaseModel):
    case_id: str
    items: list[RevisionPublic]
