"""HTTP schemas of the applications service (never the tables, never the wire events)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.kit.web import UtcDateTime


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


class CaseSummary(BaseModel):
    id: str
    reference: str
    status: str
    lead_member_state: str
    created_at: UtcDateTime
    updated_at: UtcDateTime


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
    reason: str = Field(default="", max_length=2000, description="Why (recorded in the audit trail)")


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
    redis_recovery: dict[str, Any] | None = Field(
        default=None,
        description="While the case waits: whether Redis lost writes since this service's last event for it "
                    "(`note`, in words), and what its guard re-published (docs/scaling.md)")
