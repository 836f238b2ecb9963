"""R-PART-4 (the regulation's entry into force), R-PART-5 (a participant in no SAFE group), the agreement-cap
reading, and every assumption named next to its finding and listed once in the result (SAFE_RULES.md §8a)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from safe_procurement.services.origin_verification.adapters.mapping import to_result
from safe_procurement.services.origin_verification.domain.engine import verify
from safe_procurement.services.origin_verification.domain.rulebook import RuleSet, Setting
from tests.unit.origin_verification.seed import seed_reference
from tests.unit.origin_verification.support import NOW, findings, product, proposal, rules, run


def with_setting(rs: RuleSet, key: str, value: object) -> RuleSet:
    return replace(rs, settings={**rs.settings, key: replace(rs[key], value=value)})


def _canada(cap: str = "0.25", confidence: str = "assumed") -> object:
    return seed_reference(agreements=[{
        "agreement_id": "CA-SAFE", "country": "CA", "effective_from": date(2026, 2, 15), "max_content_share": cap,
        "entities_eligible": False, "confidence": confidence, "source": "Council press release, date assumed"}])


# --- R-PART-4 ---------------------------------------------------------------------------------------------


def test_a_contract_signed_the_day_before_entry_into_force_is_not_a_safe_procurement() -> None:
    v = run(proposal(contract_signed_on="2025-05-28"))
    [f] = findings(v, "R-PART-4")
    assert v.outcome == "ineligible" and f.passed is False and "2025-05-29" in f.message
    assert f.assumption and f.assumption.startswith("regulation_in_force_on=2025-05-29 [official]")


def test_a_contract_signed_on_the_day_of_entry_into_force_passes_r_part_4_and_names_the_date() -> None:
    [f] = findings(run(proposal(contract_signed_on="2025-05-29")), "R-PART-4")
    assert f.passed is True and "regulation_in_force_on=2025-05-29" in (f.assumption or "")


def test_a_2019_contract_is_refused_by_r_part_4() -> None:
    assert [f.passed for f in findings(run(proposal(contract_signed_on="2019-03-01")), "R-PART-4")] == [False]


def test_the_entry_into_force_date_is_a_setting() -> None:
    p = proposal(contract_signed_on="2025-06-01")
    rs = with_setting(rules("2025-06-01"), "regulation_in_force_on", date(2025, 6, 2))
    [f] = findings(verify(p, seed_reference(), rs, checked_at=NOW), "R-PART-4")
    assert f.passed is False and "regulation_in_force_on=2025-06-02" in (f.assumption or "")


# --- R-PART-5 ---------------------------------------------------------------------------------------------


def test_a_participant_in_no_safe_group_sends_the_case_to_review_by_default() -> None:
    v = run(proposal(participants=["PL", "LT", "CN"]))
    [f] = findings(v, "R-PART-5")
    assert v.outcome == "needs_review" and f.passed is None and f.subject == "CN"
    assert "unlisted_participants=review" in (f.assumption or "")
    assert any("CN" in m for m in v.missing)


def test_r_part_5_can_be_set_to_fail_or_allow() -> None:
    p = proposal(participants=["PL", "LT", "CN"])
    for mode, passed, outcome in (("fail", False, "ineligible"), ("allow", True, "eligible")):
        v = verify(p, seed_reference(), with_setting(rules(), "unlisted_participants", mode), checked_at=NOW)
        [f] = findings(v, "R-PART-5")
        assert (f.passed, v.outcome) == (passed, outcome) and f"unlisted_participants={mode}" in (f.assumption or "")


def test_a_candidate_is_not_an_unlisted_participant() -> None:
    v = run(proposal(participants=["PL", "LT", "TR"]))
    assert findings(v, "R-PART-5") == [] and [f.passed for f in findings(v, "R-PART-2")] == [True]


# --- the agreement cap reading and the agreement's own assumptions ------------------------------------------


def _ca_product(rs: RuleSet | None = None):  # type: ignore[no-untyped-def]
    p = proposal(end_products=[product(("CA", "300000.00"), ("FR", "700000.00"))])
    return verify(p, _canada(), rs or rules(), checked_at=NOW)


def test_only_the_excess_over_the_cap_counts_non_eligible_by_default_and_the_finding_names_the_reading() -> None:
    v = _ca_product()
    [ep] = v.end_products
    assert ep.non_eligible_cost_eur == Decimal("50000.00") and ep.passes  # 300 000 − 25 % of 1 000 000
    [f] = findings(v, "R-ORIG-4")
    assert "agreement_content_excess=excess_non_eligible" in (f.assumption or "")


def test_the_all_content_reading_counts_all_of_it_and_says_so() -> None:
    v = _ca_product(with_setting(rules(), "agreement_content_excess", "all_non_eligible"))
    [ep] = v.end_products
    assert ep.non_eligible_cost_eur == Decimal("300000.00")
    [f] = findings(v, "R-ORIG-4")
    assert "agreement_content_excess=all_non_eligible" in (f.assumption or "") and "all of its content" in f.message


def test_an_assumed_agreement_start_date_is_named_in_the_finding_that_used_it() -> None:
    [f] = findings(_ca_product(), "R-ORIG-4")
    assert "agreement CA-SAFE (CA): effective_from=2026-02-15" in (f.assumption or "")
    assert "[assumed]" in (f.assumption or "") and "Council press release" in (f.assumption or "")


def test_an_official_agreement_names_only_the_cap_reading() -> None:
    p = proposal(end_products=[product(("CA", "300000.00"), ("FR", "700000.00"))])
    [f] = findings(verify(p, _canada(confidence="official"), rules(), checked_at=NOW), "R-ORIG-4")
    assert "effective_from" not in (f.assumption or "") and "agreement_content_excess" in (f.assumption or "")


def test_the_result_lists_every_assumption_once_with_the_rules_that_used_it() -> None:
    v = _ca_product()
    result = to_result(v)
    listed = {a.assumption: a.rules for a in result.assumptions}
    used = {f.assumption for f in v.findings if f.assumption}
    assert set(listed) == used and len(result.assumptions) == len(used)
    assert any("R-PART-4" in r for r in listed.values()) and any("R-ORIG-4" in r for r in listed.values())


def test_a_setting_the_findings_report_is_a_setting_object() -> None:
    assert isinstance(rules()["regulation_in_force_on"], Setting)
