"""R-CON-1..5: establishment, control and its derogation, facilities, and the subcontractor band."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from safe_procurement.services.origin_verification.domain.rules import (
    r_con_1,
    r_con_2_3,
    r_con_4,
    r_con_5,
    subcontractor_share_allowed,
)
from tests.unit.origin_verification.seed import seed_reference
from tests.unit.origin_verification.support import area, failed, proposal, rules, run


def test_a_contractor_established_and_managed_in_the_eligible_area_passes() -> None:
    for country in ("PL", "NO", "UA", "EL"):
        p = proposal(contractor={"established_in": country, "executive_management_in": country})
        assert r_con_1(p, area()).passed is True


def test_a_contractor_managed_from_outside_the_eligible_area_fails() -> None:
    f = r_con_1(proposal(contractor={"executive_management_in": "CH"}), area())
    assert f.passed is False and "CH" in f.message


def test_a_contractor_established_in_a_country_with_an_in_force_agreement_for_entities_passes() -> None:
    ref = seed_reference(agreements=[{"agreement_id": "CA-1", "country": "CA", "effective_from": date(2026, 2, 15),
                                      "max_content_share": "0.5", "entities_eligible": True}])
    p = proposal(contractor={"established_in": "CA", "executive_management_in": "CA", "controlled_from": "CA",
                             "facilities_in": ["CA"]})
    assert r_con_1(p, area("2026-02-15", ref)).passed is True
    assert r_con_1(p, area("2026-02-14", ref)).passed is False
    assert r_con_2_3(p, area("2026-02-15", ref))[0].passed is True
    assert r_con_4(p, area("2026-02-15", ref)).passed is True


def test_an_agreement_for_entities_without_a_confirmed_date_leaves_the_contractor_undecided() -> None:
    ref = seed_reference(agreements=[{"agreement_id": "CA-1", "country": "CA", "effective_from": None,
                                      "entities_eligible": True}])
    p = proposal(contractor={"established_in": "CA", "executive_management_in": "PL"})
    f = r_con_1(p, area(ref=ref))
    assert f.passed is None and any("effective date" in m for m in f.missing)


def test_a_contractor_controlled_from_a_third_country_fails_without_the_derogation() -> None:
    [f] = r_con_2_3(proposal(contractor={"controlled_from": "CN"}), area())
    assert f.rule == "R-CON-2" and f.passed is False and "CN" in f.message


def test_screening_and_guarantees_admit_a_third_country_controlled_contractor_established_in_the_area() -> None:
    fs = r_con_2_3(proposal(contractor={"controlled_from": "CN", "screening_and_guarantees": True}), area())
    assert {(f.rule, f.passed) for f in fs} == {("R-CON-2", True), ("R-CON-3", True)}
    assert all(f.assumption for f in fs)


def test_the_derogation_needs_establishment_in_the_eligible_area() -> None:
    p = proposal(contractor={"established_in": "US", "controlled_from": "US", "screening_and_guarantees": True})
    fs = r_con_2_3(p, area())
    assert {(f.rule, f.passed) for f in fs} == {("R-CON-2", False), ("R-CON-3", False)}


def test_every_facility_must_be_in_the_eligible_area() -> None:
    assert r_con_4(proposal(contractor={"facilities_in": ["PL", "UA", "NO"]}), area()).passed is True
    f = r_con_4(proposal(contractor={"facilities_in": ["PL", "CH", "US"]}), area())
    assert f.passed is False and "CH" in f.message and "US" in f.message


@pytest.mark.parametrize(("share", "expected"), [
    ("0.15", True), ("0.15000001", False), ("0.35", False), ("0.35000001", False), ("0.10", True),
])
def test_a_subcontractor_outside_the_area_without_an_escape_route(share: str, expected: bool) -> None:
    ok, why, _ = subcontractor_share_allowed(Decimal(share), None, False, rules())
    assert ok is expected, why


@pytest.mark.parametrize(("share", "expected"), [
    ("0.15000001", True), ("0.35", True), ("0.35000001", False),
])
def test_a_subcontractor_in_the_band_with_a_contract_before_the_cutoff(share: str, expected: bool) -> None:
    ok, _, _ = subcontractor_share_allowed(Decimal(share), date(2025, 5, 28), False, rules())
    assert ok is expected


def test_a_contract_on_the_cutoff_day_is_not_before_it() -> None:
    assert subcontractor_share_allowed(Decimal("0.20"), date(2025, 5, 29), False, rules())[0] is False


def test_a_replacement_study_admits_a_subcontractor_in_the_band_but_not_above_it() -> None:
    assert subcontractor_share_allowed(Decimal("0.35"), None, True, rules())[0] is True
    assert subcontractor_share_allowed(Decimal("0.35000001"), date(2024, 1, 1), True, rules())[0] is False


def test_a_share_at_or_below_the_allowed_threshold_names_its_assumption() -> None:
    _, _, assumption = subcontractor_share_allowed(Decimal("0.15"), None, False, rules())
    assert assumption and "subcontractor_allowed_share=0.15" in assumption


def test_subcontractors_inside_the_area_are_not_limited() -> None:
    p = proposal(subcontractors=[{"name": "S", "established_in": "UA", "share_of_contract_value": "0.90"}])
    [f] = r_con_5(p, area())
    assert f.passed is True


def test_every_failing_subcontractor_is_listed() -> None:
    p = proposal(subcontractors=[
        {"name": "A", "established_in": "US", "share_of_contract_value": "0.20"},
        {"name": "B", "established_in": "CH", "share_of_contract_value": "0.40", "replacement_study_committed": True},
        {"name": "C", "established_in": "US", "share_of_contract_value": "0.05"},
    ])
    fs = r_con_5(p, area())
    assert [(f.subject, f.passed) for f in fs] == [("A", False), ("B", False), ("C", True)]
    v = run(p)
    assert v.outcome == "ineligible" and "R-CON-5" in failed(v)
