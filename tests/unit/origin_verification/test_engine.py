"""The engine as a whole: outcome, every failed rule listed, replayable verdicts, speed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

from safe_procurement.services.origin_verification.adapters.mapping import to_result
from safe_procurement.services.origin_verification.domain.engine import decide, verify
from safe_procurement.services.origin_verification.domain.model import RuleFinding
from tests.unit.origin_verification.seed import seed_reference
from tests.unit.origin_verification.support import failed, product, proposal, rules, run


def test_any_failed_rule_makes_the_proposal_ineligible_even_with_undecided_ones() -> None:
    outcome, missing = decide([RuleFinding("R-ORIG-1", False, "x"), RuleFinding("R-DES-1", None, "y", missing=("z",))])
    assert outcome == "ineligible" and missing == ()


def test_undecided_rules_make_the_proposal_need_review_naming_what_is_missing() -> None:
    outcome, missing = decide([RuleFinding("R-ORIG-1", True, "x"), RuleFinding("R-DES-1", None, "y", missing=("z",)),
                               RuleFinding("R-ORIG-5", None, "w")])
    assert outcome == "needs_review" and missing == ("z", "R-ORIG-5: w")


def test_every_failed_rule_is_listed_not_just_the_first() -> None:
    v = run(proposal(
        participants=["PL", "TR"], contract_signed_on="2026-09-01",
        end_products=[product(("US", "600.00"), ("FR", "400.00"), category="maritime")],
        contractor={"controlled_from": "CN", "facilities_in": ["PL", "CH"],
                    "design_authority": {"held": False, "third_country_restrictions": True}},
        subcontractors=[{"name": "S", "established_in": "US", "share_of_contract_value": "0.50"}],
    ))
    assert v.outcome == "ineligible"
    assert failed(v) == {"R-PART-1", "R-PART-3", "R-CON-2", "R-CON-4", "R-CON-5", "R-ORIG-1", "R-DES-1"}


def test_the_verdict_does_not_depend_on_when_it_is_checked() -> None:
    p, ref = proposal(participants=["PL"], contract_signed_on="2026-05-30"), seed_reference()
    early = verify(p, ref, rules(p.contract_signed_on), checked_at=datetime(2026, 5, 30, tzinfo=UTC))
    late = verify(p, ref, rules(p.contract_signed_on), checked_at=datetime(2035, 1, 1, tzinfo=UTC))
    assert early.outcome == late.outcome == "eligible"
    assert early.findings == late.findings and early.end_products == late.end_products
    assert late.checked_at == datetime(2035, 1, 1, tzinfo=UTC)


def test_the_report_carries_the_rules_version_and_partnership_levels_as_context_only() -> None:
    v = run(proposal(participants=["PL", "UA", "JP"]))
    assert v.rules_version == "safe-rules-2025.1"
    assert v.context["partnership_levels"] == {"PL": None, "UA": 1, "JP": 3}
    assert "ukraine" in v.context["participant_groups"]["UA"]  # type: ignore[index]
    assert v.outcome == "eligible"


def test_the_wire_result_shows_shares_as_decimal_strings() -> None:
    result = to_result(run(proposal()))
    data = result.model_dump(mode="json")
    assert data["end_products"][0]["non_eligible_share"] == "0.3500000000"
    assert data["end_products"][0]["cap"] == "0.35"
    assert all(set(f) >= {"rule", "passed", "message", "assumption"} for f in data["findings"])


def test_a_bill_of_materials_of_10000_components_verifies_well_under_100_ms() -> None:
    origins = ["DE", "FR", "PL", "US", "UA", "CN", "NO", "IT"]
    comps = [{"name": f"c{i}", "origin_country": origins[i % len(origins)],
              "cost_eur": f"{100 + i % 997}.{i % 100:02d}", "evidence_ref": f"d{i}"} for i in range(10_000)]
    p = proposal(end_products=[{"name": "frigate", "category": "maritime", "components": comps}])
    ref, rs = seed_reference(), rules()
    timings = []
    for _ in range(5):
        t0 = time.perf_counter()
        v = verify(p, ref, rs, checked_at=datetime(2026, 1, 1, tzinfo=UTC))
        timings.append(time.perf_counter() - t0)
    assert min(timings) < 0.1, timings
    total = sum((Decimal(c["cost_eur"]) for c in comps), Decimal(0))
    assert v.end_products[0].component_cost_eur == total
