"""R-ORIG-1..5: the component-cost rule, compared exactly, with participation agreements from their
effective date and declared origin with evidence."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from safe_procurement.services.origin_verification.domain.engine import EXACT
from safe_procurement.services.origin_verification.domain.rules import (
    count_origin,
    r_orig_1,
    tally_components,
)
from tests.unit.origin_verification.seed import seed_reference
from tests.unit.origin_verification.support import area, failed, findings, product, proposal, run


def _one(*rows: tuple[str, str], signed: str = "2026-09-01", ref: Any = None, **changes: Any):  # type: ignore[no-untyped-def]
    return run(proposal(contract_signed_on=signed, end_products=[product(*rows)], **changes), ref)


def _canada(cap: str | None = "0.50", effective_from: date | None = date(2026, 2, 15), **more: Any) -> Any:
    return seed_reference(agreements=[{"agreement_id": "CA-SAFE", "country": "CA", "effective_from": effective_from,
                                       "max_content_share": cap, "entities_eligible": False, **more}])


def test_exactly_35_percent_non_eligible_passes() -> None:
    v = _one(("FR", "650000.00"), ("US", "350000.00"))
    [ep] = v.end_products
    assert v.outcome == "eligible" and ep.passes and ep.non_eligible_share == Decimal("0.3500000000")
    assert [f.passed for f in findings(v, "R-ORIG-3")] == [True]


def test_one_cent_over_35_percent_fails() -> None:
    v = _one(("FR", "649999.99"), ("US", "350000.01"))
    assert v.outcome == "ineligible" and "R-ORIG-1" in failed(v)
    assert not v.end_products[0].passes


def test_35_point_00001_percent_fails_although_it_prints_as_35_percent() -> None:
    v = _one(("FR", "6499999.00"), ("US", "3500001.00"))
    [ep] = v.end_products
    assert f"{ep.non_eligible_share * 100:.2f}" == "35.00"
    assert v.outcome == "ineligible" and {"R-ORIG-1", "R-ORIG-3"} <= failed(v)


def test_the_reported_share_is_a_ten_place_display_of_the_exact_ratio() -> None:
    v = _one(("DE", "500000.00"), ("PL", "200000.00"), ("US", "250000.00"))
    [ep] = v.end_products
    assert str(ep.non_eligible_share) == "0.2631578947" and str(ep.cap) == "0.35"
    assert ep.component_cost_eur == Decimal("950000.00") and ep.non_eligible_cost_eur == Decimal("250000.00")


def test_the_cap_comparison_uses_cross_multiplication_not_a_rounded_share() -> None:
    with __import__("decimal").localcontext(EXACT):
        f, result = r_orig_1("x", Decimal("3.00"), Decimal("1.05"), Decimal("1.05"), Decimal("0.35"), 10)
        assert f.passed is True and result.passes
        f, _ = r_orig_1("x", Decimal("3.00"), Decimal("1.06"), Decimal("1.06"), Decimal("0.35"), 10)
        assert f.passed is False


def test_component_cost_not_contract_value_is_the_base() -> None:
    v = _one(("FR", "650000.00"), ("US", "350000.00"), contract_value_eur="100.00")
    assert v.outcome == "eligible"
    [f] = findings(v, "R-ORIG-2")
    assert f.passed is True and "contract value EUR 100.00 is not used" in f.message


def test_costs_are_summed_per_origin_country() -> None:
    tally = tally_components(proposal(end_products=[product(("DE", "1.10"), ("US", "2.20"), ("DE", "3.30"))])
                             .end_products[0].components)
    assert tally.total == Decimal("6.60") and tally.by_country == {"DE": Decimal("4.40"), "US": Decimal("2.20")}


def test_ukraine_and_eea_efta_content_count_as_eligible_and_switzerland_does_not() -> None:
    assert _one(("UA", "450000.00"), ("NO", "200000.00"), ("US", "350000.00")).outcome == "eligible"
    v = _one(("CH", "400000.00"), ("FR", "600000.00"))
    assert v.outcome == "ineligible" and "R-ORIG-1" in failed(v)


def test_uk_content_is_non_eligible_because_no_agreement_is_in_force() -> None:
    v = _one(("GB", "400000.00"), ("FR", "600000.00"), signed="2026-03-01")
    assert v.outcome == "ineligible"
    [note] = findings(v, "R-ORIG-4")
    assert note.passed is True and "none" in note.message


def test_agreement_content_is_non_eligible_the_day_before_its_effective_date() -> None:
    v = _one(("CA", "400000.00"), ("FR", "600000.00"), signed="2026-02-14", ref=_canada())
    assert v.outcome == "ineligible" and "R-ORIG-1" in failed(v)
    assert "takes effect 2026-02-15" in findings(v, "R-ORIG-4")[0].message


def test_agreement_content_counts_as_eligible_from_its_effective_date() -> None:
    v = _one(("CA", "400000.00"), ("FR", "600000.00"), signed="2026-02-15", ref=_canada())
    assert v.outcome == "eligible" and v.end_products[0].non_eligible_cost_eur == 0


def test_agreement_content_is_non_eligible_from_its_end_date() -> None:
    ref = _canada(effective_to=date(2027, 1, 1))
    assert _one(("CA", "400000.00"), ("FR", "600000.00"), signed="2026-12-31", ref=ref).outcome == "eligible"
    assert _one(("CA", "400000.00"), ("FR", "600000.00"), signed="2027-01-01", ref=ref).outcome == "ineligible"


def test_an_agreement_not_counting_content_leaves_it_non_eligible() -> None:
    ref = _canada(content_counts_as_eligible=False)
    assert _one(("CA", "400000.00"), ("FR", "600000.00"), ref=ref).outcome == "ineligible"


def test_agreement_content_above_its_cap_counts_the_excess_as_non_eligible() -> None:
    v = _one(("CA", "600000.00"), ("FR", "400000.00"), ref=_canada())
    [ep] = v.end_products
    assert v.outcome == "eligible" and ep.non_eligible_cost_eur == Decimal("100000.00")
    [note] = findings(v, "R-ORIG-4")
    assert note.passed is True and "exceeds its agreement cap" in note.message


def test_an_excess_over_the_agreement_cap_that_breaks_the_35_percent_rule_fails_both_rules() -> None:
    v = _one(("CA", "600000.00"), ("US", "300000.00"), ("FR", "100000.00"), ref=_canada())
    assert v.end_products[0].non_eligible_cost_eur == Decimal("400000.00")
    assert v.outcome == "ineligible" and {"R-ORIG-1", "R-ORIG-4"} <= failed(v)


def test_an_unconfigured_cap_that_would_change_the_verdict_needs_review() -> None:
    v = _one(("CA", "400000.00"), ("FR", "600000.00"), ref=_canada(cap=None))
    assert v.outcome == "needs_review"
    assert any("max_content_share" in m and "CA" in m for m in v.missing)
    assert [f.passed for f in findings(v, "R-ORIG-4")] == [None]


def test_an_unconfigured_cap_that_cannot_change_the_verdict_is_decided() -> None:
    assert _one(("CA", "100000.00"), ("FR", "900000.00"), ref=_canada(cap=None)).outcome == "eligible"
    v = _one(("CA", "100000.00"), ("US", "400000.00"), ("FR", "500000.00"), ref=_canada(cap=None))
    assert v.outcome == "ineligible" and [f.passed for f in findings(v, "R-ORIG-4")] == [True]


def test_an_unconfirmed_effective_date_that_would_change_the_verdict_needs_review() -> None:
    v = _one(("CA", "400000.00"), ("FR", "600000.00"), ref=_canada(cap="0.50", effective_from=None))
    assert v.outcome == "needs_review"
    assert any("effective date" in m and "CA" in m for m in v.missing)
    assert not any("max_content_share" in m for m in v.missing)


def test_the_seeded_canadian_agreement_without_a_cap_needs_review_only_from_its_effective_date() -> None:
    assert _one(("CA", "400000.00"), ("FR", "600000.00"), signed="2026-02-14").outcome == "ineligible"
    v = _one(("CA", "400000.00"), ("FR", "600000.00"), signed="2026-02-15")
    assert v.outcome == "needs_review" and any("max_content_share" in m for m in v.missing)


def test_an_agreement_country_is_counted_between_its_best_and_worst_case() -> None:
    c = count_origin("CA", Decimal("600.00"), Decimal("1000.00"), area(ref=_canada(cap="0.25")))
    assert (c.non_eligible_min, c.non_eligible_max) == (Decimal("350.00"), Decimal("350.00"))
    c = count_origin("CA", Decimal("600.00"), Decimal("1000.00"), area(ref=_canada(cap=None)))
    assert (c.non_eligible_min, c.non_eligible_max) == (Decimal("0"), Decimal("600.00"))


def test_eligible_content_without_evidence_needs_review_naming_the_components() -> None:
    p = proposal(end_products=[{"name": "shell", "category": "artillery", "components": [
        {"name": "casing", "origin_country": "DE", "cost_eur": "700000.00"},
        {"name": "fuze", "origin_country": "US", "cost_eur": "300000.00"},
    ]}])
    v = run(p)
    assert v.outcome == "needs_review"
    [f] = findings(v, "R-ORIG-5")
    assert f.passed is None and "casing" in f.message and "fuze" not in f.message
    assert any("casing" in m for m in v.missing)


def test_non_eligible_content_without_evidence_does_not_need_review() -> None:
    p = proposal(end_products=[{"name": "shell", "category": "artillery", "components": [
        {"name": "casing", "origin_country": "DE", "cost_eur": "700000.00", "evidence_ref": "d"},
        {"name": "fuze", "origin_country": "US", "cost_eur": "300000.00"},
    ]}])
    assert run(p).outcome == "eligible"


def test_each_end_product_is_judged_on_its_own_components() -> None:
    v = run(proposal(end_products=[
        product(("FR", "900.00"), ("US", "100.00"), name="good"),
        product(("FR", "600.00"), ("US", "400.00"), name="bad"),
    ]))
    assert [(p.name, p.passes) for p in v.end_products] == [("good", True), ("bad", False)]
    assert [f.subject for f in findings(v, "R-ORIG-1") if f.passed is False] == ["bad"]
