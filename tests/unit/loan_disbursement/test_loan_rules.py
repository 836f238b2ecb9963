"""The loan rules at their boundaries (SAFE_RULES.md §8): pure domain, no storage."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from safe_procurement.services.loan_disbursement.domain import rules
from safe_procurement.services.loan_disbursement.domain.rules import FacilityState, RequestedLine
from safe_procurement.shared.contracts import Category

D = Decimal
EU = frozenset("AT BE BG HR CY CZ DK EE FI FR DE EL HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split())
DK_MAX = D("46796822.00")
ALL_PLAN = {c.value: DK_MAX for c in Category}
END = date(2030, 12, 31)


def dk(approved: str = "0", *, suspended: bool = False, plan: dict[str, Decimal] | None = None) -> FacilityState:
    return FacilityState("DK", DK_MAX, D(approved), suspended, "progress report unsatisfactory" if suspended else None,
                         ALL_PLAN if plan is None else plan)


def decide(amount: str, *, ms: str = "DK", facility: FacilityState | None = None, outcome: str = "eligible",
           categories: tuple[str, ...] = ("ammunition_and_missiles",), withdrawn: str | None = None) -> rules.LoanDecision:
    facilities = {"DK": facility or dk()}
    return rules.decide_loan_request(lines=[RequestedLine(ms, D(amount))], verification_outcome=outcome,
                                     categories=categories, facilities=facilities, eu_member_states=EU,
                                     withdrawn_reason=withdrawn)


def rules_of(decision: rules.LoanDecision) -> list[str]:
    return [r.rule for r in decision.reasons]


def test_a_loan_of_exactly_the_facility_maximum_is_approved():
    d = decide("46796822.00")
    assert d.approved and d.reasons == ()


def test_a_loan_one_cent_over_the_facility_maximum_is_rejected_with_l2():
    d = decide("46796822.01")
    assert not d.approved and rules_of(d) == ["L-2"]
    assert "exceeds the DK facility maximum EUR 46 796 822.00" in d.reasons[0].message


def test_what_is_already_approved_counts_toward_the_maximum():
    assert decide("1796822.00", facility=dk("45000000")).approved
    d = decide("1796822.01", facility=dk("45000000"))
    assert rules_of(d) == ["L-2"] and "available EUR 1 796 822.00" in d.reasons[0].message


def test_germany_has_no_facility_and_is_rejected_with_l1():
    d = decide("1000.00", ms="DE")
    assert rules_of(d) == ["L-1"] and "DE has no SAFE loan facility" in d.reasons[0].message


def test_a_non_member_state_cannot_borrow():
    d = decide("1000.00", ms="NO")
    assert rules_of(d) == ["L-1"] and "not an EU Member State" in d.reasons[0].message


@pytest.mark.parametrize("outcome", ["ineligible", "needs_review"])
def test_a_procurement_not_verified_eligible_is_rejected_with_l1(outcome):
    d = decide("1000.00", outcome=outcome)
    assert rules_of(d) == ["L-1"] and outcome in d.reasons[0].message


def test_a_suspended_facility_approves_nothing_l5():
    d = decide("1000.00", facility=dk(suspended=True))
    assert rules_of(d) == ["L-5"] and "suspended (progress report unsatisfactory)" in d.reasons[0].message


def test_a_plan_that_does_not_cover_a_category_rejects_with_plan():
    narrowed = {"artillery": DK_MAX}
    d = decide("1000.00", facility=dk(plan=narrowed), categories=("ammunition_and_missiles", "artillery"))
    assert rules_of(d) == ["PLAN"]
    assert "does not cover ammunition_and_missiles" in d.reasons[0].message


def test_a_request_above_what_the_plan_lines_have_left_rejects_with_plan_and_exactly_at_it_passes():
    plan = {"artillery": D("600.00"), "cyber": D("400.00")}
    ok = decide("1000.00", facility=dk(plan=plan), categories=("artillery", "cyber"))
    assert ok.approved and ok.plan_draws == {"DK": {"artillery": D("600.00"), "cyber": D("400.00")}}
    d = decide("1000.01", facility=dk(plan=plan), categories=("artillery", "cyber"))
    assert rules_of(d) == ["PLAN"] and "has left for artillery, cyber: EUR 1 000.00" in d.reasons[0].message


def test_every_failing_rule_of_every_line_is_reported_and_nothing_is_approved():
    facilities = {"DK": dk("46796822", suspended=True)}
    d = rules.decide_loan_request(
        lines=[RequestedLine("DK", D("1.00")), RequestedLine("DE", D("1.00")), RequestedLine("EE", D("1.00"))],
        verification_outcome="ineligible", categories=["cyber"], facilities=facilities, eu_member_states=EU)
    assert not d.approved and d.plan_draws == {}
    assert [(r.member_state, r.rule) for r in d.reasons] == [
        ("DK", "L-1"), ("DK", "L-5"), ("DK", "L-2"), ("DE", "L-1"), ("EE", "L-1")]


def test_a_withdrawn_case_is_rejected_with_the_reason_case_withdrawn():
    d = decide("1000.00", withdrawn="no longer needed")
    assert not d.approved and "case withdrawn" in d.reasons[0].message


def test_amounts_in_fractions_of_a_cent_or_not_positive_are_rejected():
    assert rules_of(decide("0.001")) == ["L-2"]
    assert rules_of(decide("0")) == ["L-2"]


# --- pre-financing ----------------------------------------------------------------------------------------


def pre(amount: str, *, paid: str = "0", configured: str | None = "7019523.30", suspended: bool = False,
        on: date = date(2026, 6, 1)) -> list[rules.Reason]:
    return rules.check_pre_financing(member_state="DK", max_eur=DK_MAX,
                                     configured=None if configured is None else D(configured), paid_eur=D(paid),
                                     amount=D(amount), requested_on=on, last_request_on=END, suspended=suspended)


def test_pre_financing_of_exactly_15_percent_passes_and_one_cent_more_fails():
    assert pre("7019523.30") == []
    assert [r.rule for r in pre("7019523.31")] == ["L-3"]


def test_pre_financing_is_cumulative():
    assert pre("19523.30", paid="7000000.00") == []
    assert [r.rule for r in pre("19523.31", paid="7000000.00")] == ["L-3"]


def test_unconfirmed_pre_financing_is_capped_at_15_percent_of_the_maximum():
    assert pre("7019523.30", configured=None) == []
    assert [r.rule for r in pre("7019523.31", configured=None)] == ["L-3"]


def test_a_council_decision_without_pre_financing_pays_none():
    reasons = pre("0.01", configured="0")
    assert [r.rule for r in reasons] == ["L-3"] and "no pre-financing" in reasons[0].message


def test_pre_financing_is_refused_while_suspended_and_after_the_last_request_date():
    assert [r.rule for r in pre("1.00", suspended=True)] == ["L-5"]
    assert [r.rule for r in pre("1.00", on=date(2031, 1, 1))] == ["L-4"]


# --- instalments ------------------------------------------------------------------------------------------


def inst(amount: str, *, paid: str = "0", on: date = date(2027, 1, 1), suspended: bool = False,
         active: bool = True) -> list[str]:
    return [r.rule for r in rules.check_instalment(
        member_state="DK", loan_amount=D("5000000.00"), paid_eur=D(paid), amount=D(amount), requested_on=on,
        last_request_on=END, suspended=suspended, loan_active=active)]


def test_instalments_up_to_the_approved_loan_pass_and_one_cent_more_fails():
    assert inst("5000000.00") == []
    assert inst("5000000.01") == ["L-3"]
    assert inst("1000000.01", paid="4000000.00") == ["L-3"]


def test_an_instalment_requested_on_2030_12_31_passes_and_on_2031_01_01_fails():
    assert inst("1.00", on=date(2030, 12, 31)) == []
    assert inst("1.00", on=date(2031, 1, 1)) == ["L-4"]


def test_no_instalment_is_paid_while_the_facility_is_suspended():
    assert inst("1.00", suspended=True) == ["L-5"]


def test_nothing_is_paid_on_a_released_loan():
    assert inst("1.00", active=False) == ["L-3"]


# --- facility changes -------------------------------------------------------------------------------------


def update(max_eur: str, pre_eur: str | None, *, approved: str = "0", paid: str = "0") -> list[str]:
    return [r.rule for r in rules.check_facility_update(
        member_state="DK", max_eur=D(max_eur), pre_financing_eur=None if pre_eur is None else D(pre_eur),
        approved_eur=D(approved), pre_financing_paid_eur=D(paid))]


def test_a_facility_pre_financing_of_exactly_15_percent_is_accepted_and_one_cent_more_refused():
    assert update("46796822.00", "7019523.30") == []
    assert update("46796822.00", "7019523.31") == ["L-3"]


def test_the_maximum_cannot_fall_below_what_is_approved():
    assert update("45000000.00", None, approved="45000000.00") == []
    assert update("44999999.99", None, approved="45000000.00") == ["L-2"]
