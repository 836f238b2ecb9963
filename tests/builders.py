"""Builders of test data, one set for every test layer: the demo proposal and the events around a case.

Each builder returns a fresh object with unique ids (a reference, a case id), so tests sharing one Redis or
one database never see each other's data; keyword arguments replace top-level fields."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from safe_procurement.shared import contracts

DEMO_PATH = Path(__file__).resolve().parents[1] / "services" / "demo" / "proposal.json"
NOW = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)


@cache
def _demo_text() -> str:
    return DEMO_PATH.read_text()


def demo_text() -> str:
    """The demo proposal as shipped, as JSON text (its reference is the fixed "DEMO")."""
    return _demo_text()


def demo() -> dict[str, Any]:
    """The demo proposal as shipped (a fresh copy): eligible (26 % US content), financed by Poland."""
    return json.loads(_demo_text())  # type: ignore[no-any-return]


def reference(tag: str = "T") -> str:
    """A unique case reference, `tag-<10 hex>`."""
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def proposal(ref: str | None = None, *, tag: str = "T", **changes: Any) -> dict[str, Any]:
    """The demo proposal with a unique reference (or `ref`) and `changes` to its top-level fields."""
    body = demo()
    body["reference"] = ref or reference(tag)
    body.update(changes)
    return body


def proposal_led_by(participants: list[str], lends: str | None = None, **changes: Any) -> dict[str, Any]:
    """The demo proposal among `participants`, led by (and contracted in) the first of them, which `lends`
    that many EUR (no financing when None)."""
    financing = [] if lends is None else [{"member_state": participants[0], "amount_eur": lends}]
    body = proposal(participants=participants, lead_member_state=participants[0], financing=financing, **changes)
    body["contractor"]["established_in"] = participants[0]
    return body


def proposal_model(**changes: Any) -> contracts.Proposal:
    """`proposal(**changes)` parsed as the contract's `Proposal`."""
    return contracts.Proposal.model_validate(proposal(**changes))


def submitted(proposal: contracts.Proposal | None = None) -> contracts.ProcurementSubmitted:
    """A new case's `ProcurementSubmitted` for `proposal` (the demo by default)."""
    case_id = str(uuid.uuid4())
    return contracts.ProcurementSubmitted(correlation_id=case_id, case_id=case_id,
                                          proposal=proposal or proposal_model())


def reverification(sub: contracts.ProcurementSubmitted, reason: str = "registry corrected") \
        -> contracts.ReverificationRequested:
    """An operator's request to verify `sub`'s case again."""
    return contracts.ReverificationRequested(correlation_id=sub.case_id, case_id=sub.case_id, proposal=sub.proposal,
                                             requested_by="operator", reason=reason)


def verification_result(outcome: str = "eligible", *, checked_at: datetime = NOW, **changes: Any) \
        -> contracts.VerificationResult:
    """A verdict with no products or findings (`changes` add them)."""
    fields: dict[str, Any] = dict(outcome=outcome, checked_at=checked_at, rules_version="test", end_products=[],
                                  findings=[])
    return contracts.VerificationResult(**(fields | changes))


def verification_completed(case_id: str, causation_id: uuid.UUID | str | None, outcome: str = "eligible",
                           **changes: Any) -> contracts.OriginVerificationCompleted:
    """Origin verification's answer for `case_id` to the request `causation_id` (None: to no known request);
    `changes` go to its `verification_result`."""
    return contracts.OriginVerificationCompleted(
        correlation_id=case_id, case_id=case_id, causation_id=uuid.UUID(str(causation_id)) if causation_id else None,
        result=verification_result(outcome, **changes))


def loan_requested(*lines: tuple[str, str], case_id: str | None = None, participants: list[str] | None = None,
                   signed_on: date = date(2026, 3, 1), outcome: str = "eligible",
                   categories: tuple[str, ...] = ("ammunition_and_missiles",), tag: str = "R") \
        -> contracts.LoanRequested:
    """A loan request financed by `lines` of (Member State, amount), led by the first line's Member State;
    the participants are the financing Member States and PL unless given."""
    case_id = case_id or str(uuid.uuid4())
    return contracts.LoanRequested(
        correlation_id=case_id, case_id=case_id, reference=f"{tag}-{case_id[:8]}", lead_member_state=lines[0][0],
        participants=participants or sorted({ms for ms, _ in lines} | {"PL"}), categories=list(categories),
        contract_signed_on=signed_on, verification_outcome=outcome,
        financing=[contracts.FinancingLine(member_state=ms, amount_eur=Decimal(a)) for ms, a in lines],
    )
