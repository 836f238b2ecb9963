"""Wire events. One envelope for all; past-tense classes grouped by producing service."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from safe_procurement.shared.contracts.decimals import MoneyOut, ShareOut
from safe_procurement.shared.contracts.ids import uuid7
from safe_procurement.shared.contracts.proposal import Proposal

SCHEMA_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """The envelope every event carries."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid7, description="Unique id (a time-ordered UUID, version 7); consumers deduplicate on it")
    event_type: str = Field(description="The event class name")
    occurred_at: datetime = Field(default_factory=_now, description="When it happened (UTC)")
    correlation_id: str = Field(description="The procurement case id (or the registry entity) the event concerns")
    causation_id: uuid.UUID | None = Field(default=None, description="The event that caused this one")
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Payload schema version")
    producer: str = Field(description="The producing service")
    trace_context: dict[str, str] | None = Field(
        default=None,
        description="Optional W3C trace context (`traceparent`, `tracestate`) of the span that produced the event, "
        "so that one OpenTelemetry trace follows a case across services; consumers may ignore it",
    )


# --- applications ---------------------------------------------------------------------------------


class ProcurementSubmitted(Event):
    """A proposal was accepted at intake and awaits origin verification."""

    event_type: Literal["ProcurementSubmitted"] = "ProcurementSubmitted"
    producer: Literal["applications"] = "applications"
    case_id: str = Field(description="Case id")
    proposal: Proposal = Field(description="The proposal as accepted")


class ReverificationRequested(Event):
    """An operator asked for the case to be verified again (e.g. after a registry correction)."""

    event_type: Literal["ReverificationRequested"] = "ReverificationRequested"
    producer: Literal["applications"] = "applications"
    case_id: str = Field(description="Case id")
    proposal: Proposal = Field(description="The proposal to verify")
    requested_by: str = Field(description="Operator role/name that asked")
    reason: str = Field(description="Why")


class LoanRequested(Event):
    """A verified procurement asks for SAFE loans."""

    event_type: Literal["LoanRequested"] = "LoanRequested"
    producer: Literal["applications"] = "applications"
    case_id: str = Field(description="Case id")
    reference: str = Field(description="The case reference")
    lead_member_state: str = Field(description="Lead Member State")
    participants: list[str] = Field(description="Participating countries")
    categories: list[str] = Field(description="Product categories of the end products")
    contract_signed_on: date = Field(description="Contract signing date")
    verification_outcome: str = Field(description="Outcome of origin verification (must be eligible)")
    financing: list[FinancingLine] = Field(description="Requested loans")
    contract_value_eur: MoneyOut | None = Field(
        default=None, description="The procurement's contract value, if given (L-7: the financing may not exceed it)")
    component_cost_eur: MoneyOut | None = Field(
        default=None, description="Σ component cost of the end products (L-7's basis when no contract value is given)")


class FinancingLine(BaseModel):
    """One requested loan."""

    member_state: str = Field(description="Borrowing Member State")
    amount_eur: MoneyOut = Field(description="Requested amount, decimal string")


class ProcurementWithdrawn(Event):
    """The case was withdrawn; any reservation must be released."""

    event_type: Literal["ProcurementWithdrawn"] = "ProcurementWithdrawn"
    producer: Literal["applications"] = "applications"
    case_id: str = Field(description="Case id")
    reason: str = Field(description="Why")


# --- origin verification --------------------------------------------------------------------------


class Finding(BaseModel):
    rule: str = Field(description="Rule id (docs/safe-rules.md): R-PART-1..5, R-CON-1..5, R-ORIG-1..5, R-DES-1")
    passed: bool | None = Field(description="True passed, False failed, None undecided (needs review)")
    message: str = Field(description="What was checked and found")
    assumption: str | None = Field(default=None, description=(
        "Every assumption the finding relied on (settings, non-official reference facts: value and source)"))
    subject: str | None = Field(default=None, description="What the finding is about (end product, subcontractor…)")


class AssumptionUsed(BaseModel):
    """One assumption a verification relied on, and the rules whose findings used it."""

    assumption: str = Field(description="The setting or reference fact, its value, confidence and source")
    rules: list[str] = Field(description="Rule ids whose findings used it")


class EndProductResult(BaseModel):
    """R-ORIG-1 for one end product."""

    name: str = Field(description="End product name")
    component_cost_eur: MoneyOut = Field(description="Sum of its components' estimated cost (the R-ORIG-2 base)")
    non_eligible_cost_eur: MoneyOut = Field(description="Cost counted as non-eligible origin (after agreements)")
    non_eligible_share: ShareOut = Field(description="non-eligible / component cost, 10 decimal places, display only")
    cap: ShareOut = Field(description="The cap in force on the contract date (0.35)")
    passes: bool = Field(description="non-eligible cost <= cap x component cost, compared exactly")


class VerificationResult(BaseModel):
    """The verification report (docs/interface.md "The verification result")."""

    outcome: Literal["eligible", "ineligible", "needs_review"] = Field(
        description="ineligible lists every failed rule; needs_review names what is missing"
    )
    checked_at: datetime = Field(description="When the verification ran (UTC); never used by the rules")
    rules_version: str = Field(description="Version of the rules configuration applied")
    end_products: list[EndProductResult] = Field(description="R-ORIG-1 per end product")
    findings: list[Finding] = Field(description="One finding per rule checked, with the assumption it relied on")
    missing: list[str] = Field(default_factory=list, description="What a reviewer must supply (needs_review)")
    assumptions: list[AssumptionUsed] = Field(default_factory=list, description=(
        "Every assumption the findings used, in one place (a setting or a reference fact whose confidence is not "
        "official: which, its value, its source), with the rules that used it"))
    context: dict[str, object] = Field(default_factory=dict, description="Non-normative context (partnership levels…)")


class OriginVerificationCompleted(Event):
    """Origin verification decided a case."""

    event_type: Literal["OriginVerificationCompleted"] = "OriginVerificationCompleted"
    producer: Literal["origin_verification"] = "origin_verification"
    case_id: str = Field(description="Case id")
    result: VerificationResult = Field(description="The verification report")


# --- partner registry -----------------------------------------------------------------------------


class GroupMembership(BaseModel):
    group: str = Field(description="eu_member_state, eea_efta, ukraine, candidate, potential_candidate, sdp, efta")
    effective_from: date | None = Field(default=None, description="First day in force (None: always)")
    effective_to: date | None = Field(default=None, description="First day no longer in force (None: open)")
    source: str = Field(default="", description="Where the fact comes from")
    confidence: str = Field(default="secondary", description="official | secondary | assumed")


class CountryStatusChanged(Event):
    """The full, dated record of one country as the registry now holds it (replicas upsert it)."""

    event_type: Literal["CountryStatusChanged"] = "CountryStatusChanged"
    producer: Literal["partner_registry"] = "partner_registry"
    country: str = Field(description="Canonical country code")
    name: str = Field(description="Country name")
    memberships: list[GroupMembership] = Field(description="Every group membership, dated")
    partnership_level: int | None = Field(default=None, description="EU partnership strategy level 1-3 (context)")
    version: int = Field(description="Registry version of this country record; replicas keep the highest")


class PartnerAgreementRecorded(Event):
    """An Art. 17 participation agreement (or a correction of one) was recorded."""

    event_type: Literal["PartnerAgreementRecorded"] = "PartnerAgreementRecorded"
    producer: Literal["partner_registry"] = "partner_registry"
    agreement_id: str = Field(description="Agreement id (stable across corrections)")
    version: int = Field(description="Version of this agreement record; replicas keep the highest")
    country: str
    kind: str = Field(description="safe_participation")
    effective_from: date | None = Field(description="First day in force; None when unconfirmed")
    effective_to: date | None = None
    content_counts_as_eligible: bool
    max_content_share: ShareOut | None = Field(description="Cap on the country's share of component cost; None = not configured")
    entities_eligible: bool
    status: str = Field(default="in_force", description="in_force | none | negotiating | revoked | superseded")
    source: str
    confidence: str = "secondary"
    unconfirmed: bool = Field(default=False, description="A placeholder whose date/terms are assumed (say so in reports)")
    note: str | None = Field(default=None, description="What is assumed or why the record changed")


class ReferenceDataPublished(Event):
    """The registry finished publishing its reference data (seed load or bulk correction).

    A replica is complete for `registry_version` once it holds at least `countries` country records and
    `agreements` agreement records of at least that version; until then it must not decide anything."""

    event_type: Literal["ReferenceDataPublished"] = "ReferenceDataPublished"
    producer: Literal["partner_registry"] = "partner_registry"
    registry_version: int = Field(description="Monotonic registry version after this publication")
    seed_version: str = Field(description="Version label of the seed file loaded")
    countries: int = Field(description="Number of country records published so far in total")
    agreements: int = Field(description="Number of agreement records published so far in total")


# Group names used by the registry and its replicas.
GROUPS = ("eu_member_state", "eea_efta", "ukraine", "candidate", "potential_candidate", "sdp", "efta")


# --- loan disbursement ----------------------------------------------------------------------------


class ApprovedLoan(BaseModel):
    loan_id: str = Field(description="Loan id (GET /loans/{id} on loan disbursement)")
    member_state: str = Field(description="Borrowing Member State")
    amount_eur: MoneyOut = Field(description="Approved and reserved amount, decimal string")


class LoanDecisionReason(BaseModel):
    member_state: str = Field(description="The financing line's Member State")
    rule: str = Field(description="L-1..L-5 or PLAN")
    message: str = Field(description="Why, in words")


class LoanApproved(Event):
    """Every requested loan of the case was approved and reserved against its facility."""

    event_type: Literal["LoanApproved"] = "LoanApproved"
    producer: Literal["loan_disbursement"] = "loan_disbursement"
    case_id: str = Field(description="Case id")
    loans: list[ApprovedLoan] = Field(description="One loan per financing line")
    assumptions: list[str] = Field(default_factory=list, description=(
        "Every assumption the decision used, in words with its rule id (e.g. a tentative facility amount, L-8)"))


class LoanRejected(Event):
    """The loan request was rejected; nothing is reserved."""

    event_type: Literal["LoanRejected"] = "LoanRejected"
    producer: Literal["loan_disbursement"] = "loan_disbursement"
    case_id: str = Field(description="Case id")
    reasons: list[LoanDecisionReason] = Field(description="Every reason, per financing line")
    assumptions: list[str] = Field(default_factory=list, description=(
        "Every assumption the decision used, in words with its rule id (e.g. a tentative facility amount, L-8)"))


# --- any service ------------------------------------------------------------------------------------


class OperatorActionRecorded(Event):
    """An audited operator action that concerns a case (shown in the case timeline)."""

    event_type: Literal["OperatorActionRecorded"] = "OperatorActionRecorded"
    producer: str = Field(description="The service where the action happened")
    case_id: str = Field(description="Case id")
    action: str = Field(description="e.g. dead_letter.replay, dead_letter.discard")
    actor: str = Field(description="Role of the operator")
    reason: str | None = Field(default=None, description="Why the operator acted")
    target: str = Field(description="What was acted on")


LoanRequested.model_rebuild()
