"""What the engine reads (structural types: the wire Proposal fits them without copying) and what it
decides (plain dataclasses; adapters map them to the wire VerificationResult)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

Outcome = Literal["eligible", "ineligible", "needs_review"]


class ComponentLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def origin_country(self) -> str: ...
    @property
    def cost_eur(self) -> Decimal: ...
    @property
    def evidence_ref(self) -> str | None: ...


class EndProductLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def components(self) -> Sequence[ComponentLike]: ...


class DesignAuthorityLike(Protocol):
    @property
    def held(self) -> bool: ...
    @property
    def third_country_restrictions(self) -> bool: ...


class ContractorLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def established_in(self) -> str: ...
    @property
    def executive_management_in(self) -> str: ...
    @property
    def controlled_from(self) -> str: ...
    @property
    def facilities_in(self) -> Sequence[str]: ...
    @property
    def screening_and_guarantees(self) -> bool: ...
    @property
    def design_authority(self) -> DesignAuthorityLike | None: ...


class SubcontractorLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def established_in(self) -> str: ...
    @property
    def share_of_contract_value(self) -> Decimal: ...
    @property
    def contract_before(self) -> date | None: ...
    @property
    def replacement_study_committed(self) -> bool: ...


class ProposalLike(Protocol):
    @property
    def lead_member_state(self) -> str: ...
    @property
    def participants(self) -> Sequence[str]: ...
    @property
    def contract_signed_on(self) -> date: ...
    @property
    def contract_value_eur(self) -> Decimal | None: ...
    @property
    def end_products(self) -> Sequence[EndProductLike]: ...
    @property
    def contractor(self) -> ContractorLike: ...
    @property
    def subcontractors(self) -> Sequence[SubcontractorLike]: ...


@dataclass(frozen=True, slots=True)
class RuleFinding:
    rule: str
    passed: bool | None  # None: the rules cannot decide (needs review)
    message: str
    assumption: str | None = None
    subject: str | None = None
    missing: tuple[str, ...] = ()  # what a reviewer must supply when passed is None


@dataclass(frozen=True, slots=True)
class ProductResult:
    name: str
    component_cost_eur: Decimal
    non_eligible_cost_eur: Decimal  # the worst case when undecided
    non_eligible_share: Decimal  # display only
    cap: Decimal
    passes: bool
    decided: bool = True


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    checked_at: datetime
    rules_version: str
    end_products: tuple[ProductResult, ...]
    findings: tuple[RuleFinding, ...]
    missing: tuple[str, ...] = ()
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_rules(self) -> list[str]:
        return sorted({f.rule for f in self.findings if f.passed is False})
