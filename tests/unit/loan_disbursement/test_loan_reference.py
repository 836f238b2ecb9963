"""The seeded facilities match SAFE_RULES.md §7 exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from safe_procurement.services.loan_disbursement.domain import reference
from safe_procurement.services.loan_disbursement.main import load_reference

D = Decimal


@pytest.fixture(scope="module")
def ref() -> reference.Reference:
    return load_reference()


def test_nineteen_member_states_have_a_facility_and_germany_has_none(ref):
    codes = {f.member_state for f in ref.facilities}
    assert codes == set("PL RO FR HU IT BE LT PT LV BG EE SK CZ HR CY FI ES EL DK".split())
    assert "DE" not in codes and "DE" in ref.eu_member_states and len(ref.eu_member_states) == 27


def test_the_tentative_allocations_sum_to_exactly_150_billion(ref):
    assert sum(f.tentative_eur for f in ref.facilities) == D("150000000000")


def test_the_council_maximum_overrides_the_tentative_allocation(ref):
    by = {f.member_state: f for f in ref.facilities}
    assert by["EE"].max_eur == D("2343897000") and by["EE"].tentative_eur == D("2660932171")
    assert by["EE"].confidence == "official"
    assert by["DK"].max_eur == D("46796822") and by["EL"].max_eur == D("787669283")
    assert by["PL"].max_eur == D("43734100805") and by["PL"].confidence == "secondary"


def test_known_pre_financing_is_exactly_15_percent_none_is_zero_and_unconfirmed_is_null(ref):
    by = {f.member_state: f for f in ref.facilities}
    for f in ref.facilities:
        if f.pre_financing_eur is not None and f.pre_financing_eur != 0:
            assert f.pre_financing_eur == f.max_eur * D("0.15"), f.member_state
    assert by["EL"].pre_financing_eur == D("118150392.45")
    assert by["IT"].pre_financing_eur == by["FI"].pre_financing_eur == by["ES"].pre_financing_eur == 0
    for ms in ("PL", "FR", "HU", "LT", "LV", "SK", "CZ"):
        assert by[ms].pre_financing_eur is None and by[ms].notes, ms
    assert "pending" in by["HU"].notes


def test_a_seed_amount_that_yaml_turned_into_a_float_is_refused():
    doc = {"eu_member_states": ["DK"], "facilities": [{"member_state": "DK", "tentative_eur": 46796822.0}]}
    with pytest.raises(reference.SeedError, match="quoted decimal strings"):
        reference.parse(doc)


def test_a_facility_for_a_non_member_state_is_refused():
    doc = {"eu_member_states": ["DK"], "facilities": [{"member_state": "NO", "tentative_eur": "1"}]}
    with pytest.raises(reference.SeedError, match="not an EU Member State"):
        reference.parse(doc)
