"""R-DES-1: design authority for Category 2 products only."""

from __future__ import annotations

from safe_procurement.services.origin_verification.domain.rules import r_des_1
from tests.unit.origin_verification.support import failed, product, proposal, rules, run

CAT2 = [product(("FR", "900.00"), ("US", "100.00"), category="air_and_missile_defence", name="sam")]


def _da(held: bool | None, restrictions: bool = False) -> dict[str, object]:
    return {"design_authority": None if held is None else {"held": held, "third_country_restrictions": restrictions}}


def test_category_1_needs_no_design_authority() -> None:
    f = r_des_1(proposal(contractor=_da(None)), rules())
    assert f.passed is True and "not required" in f.message


def test_category_2_with_unrestricted_design_authority_passes() -> None:
    assert r_des_1(proposal(end_products=CAT2, contractor=_da(True)), rules()).passed is True


def test_category_2_without_design_authority_fails() -> None:
    v = run(proposal(end_products=CAT2, contractor=_da(False)))
    assert v.outcome == "ineligible" and "R-DES-1" in failed(v)


def test_category_2_with_third_country_restrictions_fails() -> None:
    f = r_des_1(proposal(end_products=CAT2, contractor=_da(True, restrictions=True)), rules())
    assert f.passed is False and "third-country restrictions" in f.message


def test_category_2_with_no_stated_design_authority_needs_review() -> None:
    v = run(proposal(end_products=CAT2, contractor=_da(None)))
    assert v.outcome == "needs_review" and any("design_authority" in m for m in v.missing)


def test_every_category_2_category_from_the_rules_data_requires_design_authority() -> None:
    assert rules().value("category_2") and rules().value("category_1")
    for category in sorted(rules().value("category_2")):
        p = proposal(end_products=[product(("FR", "1.00"), category=category)], contractor=_da(False))
        assert r_des_1(p, rules()).passed is False, category
    for category in sorted(rules().value("category_1")):
        p = proposal(end_products=[product(("FR", "1.00"), category=category)], contractor=_da(False))
        assert r_des_1(p, rules()).passed is True, category
