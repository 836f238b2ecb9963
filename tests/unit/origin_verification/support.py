"""Builders for origin verification unit tests."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from safe_procurement.services.origin_verification.adapters.rules_file import load_rulebook
from safe_procurement.services.origin_verification.domain.area import Area
from safe_procurement.services.origin_verification.domain.engine import verify
from safe_procurement.services.origin_verification.domain.model import Verdict
from safe_procurement.services.origin_verification.domain.reference import ReferenceData
from safe_procurement.services.origin_verification.domain.rulebook import RuleBook, RuleSet
from safe_procurement.shared.contracts import Proposal
from tests.unit.origin_verification.seed import seed_reference

NOW = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)

BASE: dict[str, Any] = {
    "reference": "UT-1",
    "title": "unit test procurement",
    "lead_member_state": "PL",
    "participants": ["PL", "LT"],
    "contract_signed_on": "2026-09-01",
    "end_products": [{"name": "shell", "category": "ammunition_and_missiles", "components": [
        {"name": "casing", "origin_country": "DE", "cost_eur": "650000.00", "evidence_ref": "d0"},
        {"name": "propellant", "origin_country": "US", "cost_eur": "350000.00", "evidence_ref": "d1"},
    ]}],
    "contractor": {"name": "Prime", "established_in": "PL", "executive_management_in": "PL",
                   "controlled_from": "PL", "facilities_in": ["PL"], "screening_and_guarantees": False,
                   "design_authority": {"held": True, "third_country_restrictions": False}},
}


@cache
def rulebook() -> RuleBook:
    return load_rulebook()


def rules(on: date | str = "2026-09-01") -> RuleSet:
    return rulebook().for_date(date.fromisoformat(on) if isinstance(on, str) else on)


def proposal(**changes: Any) -> Proposal:
    body = copy.deepcopy(BASE)
    contractor = changes.pop("contractor", None)
    if contractor is not None:
        body["contractor"].update(contractor)
    body.update(changes)
    return Proposal.model_validate(body)


def components(*rows: tuple[str, str], evidence: bool = True) -> list[dict[str, Any]]:
    """Components from (origin, cost) pairs."""
    return [{"name": f"c{i}-{origin}", "origin_country": origin, "cost_eur": cost,
             **({"evidence_ref": f"d{i}"} if evidence else {})} for i, (origin, cost) in enumerate(rows)]


def product(*rows: tuple[str, str], category: str = "ammunition_and_missiles", name: str = "item") -> dict[str, Any]:
    return {"name": name, "category": category, "components": components(*rows)}


def area(on: date | str = "2026-09-01", ref: ReferenceData | None = None) -> Area:
    day = date.fromisoformat(on) if isinstance(on, str) else on
    return Area(ref or seed_reference(), rules(day), day)


def run(p: Proposal, ref: ReferenceData | None = None) -> Verdict:
    return verify(p, ref or seed_reference(), rules(p.contract_signed_on), checked_at=NOW)


def failed(v: Verdict) -> set[str]:
    return {f.rule for f in v.findings if f.passed is False}


def findings(v: Verdict, rule: str) -> list[Any]:
    return [f for f in v.findings if f.rule == rule]
