"""L-6..L-10 at their edges (SAFE_RULES.md §8): participation, financing ≤ contract value, the facility lifecycle,
pre-financing as an advance, the EUR 150 bn envelope. Pure domain, no storage; L-9 also as a property."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from safe_procurement.services.loan_disbursement.domain import lifecycle, rules
from safe_procurement.services.loan_disbursement.domain.lifecycle import Advances, StatusChange
from safe_procurement.services.loan_disbursement.domain.rules import (
    FacilityState,
    FinancingCap,
    RequestedLine,
)
from safe_procurement.shared.contracts import Category

D = Decimal
EU = frozenset("AT BE BG HR CY CZ DK EE FI FR DE EL HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split())
EL_MAX = D("787669283.00")
EL_PRE = D("118150392.45")
PLAN = {c.value: D("150000000000") for c in Category}
TODAY = date(2026, 6, 1)


def facility(ms: str = "EL", *, status: str = "decided", confidence: str = "official", max_eur: Decimal = EL_MAX,
             approved: str = "0") -> FacilityState:
    return FacilityState(ms, max_eur, D(approved), status == "suspended", None, PLAN, status=status,
                         confidence=confidence, source="Council implementing decision")


def decide(*lines: tuple[str, str], participants: tuple[str, ...] = ("EL", "PL"), cap: FinancingCap | None = None,
           facilities: dict[str, FacilityState] | None = None, loans_from: str = "decided") -> rules.LoanDecision:
    return rules.decide_loan_request(
        lines=[RequestedLine(ms, D(a)) for ms, a in lines], verification_outcome="eligible",
        categories=["artillery"], facilities=facilities or {"EL": facility()}, eu_member_states=EU,
        participants=participants, financing_cap=cap, loans_from=loans_from,
    )


def rules_of(d: rules.LoanDecision) -> list[str]:
    return [r.rule for r in d.reasons]


# --- L-6 -------------------------------------------------------------------------------------------------


def test_a_financing_member_state_that_takes_part_is_approved():
    assert decide(("EL", "1000000.00"), participants=("EL", "LT")).approved


def test_a_financing_member_state_outside_the_participants_is_rejected_with_l6():
    d = decide(("RO", "1000000.00"), participants=("PL", "LT"),
               facilities={"RO": facility("RO", max_eur=D("16680055394.00"))})
    assert not d.approved and rules_of(d) == ["L-6"]
    assert "RO finances this procurement but does not take part" in d.reasons[0].message
    assert "LT, PL" in d.reasons[0].message


# --- L-7 -------------------------------------------------------------------------------------------------


def test_financing_of_exactly_the_contract_value_passes_and_one_cent_more_is_rejected():
    cap = FinancingCap(D("1000000.00"), "contract value")
    assert decide(("EL", "1000000.00"), cap=cap).approved
    d = decide(("EL", "1000000.01"), cap=cap)
    assert rules_of(d) == ["L-7"] and "1 000 000.01" in d.reasons[0].message and "contract value" in d.reasons[0].message


def test_l7_sums_every_line_of_the_request():
    cap = FinancingCap(D("1000000.00"), "contract value")
    facilities = {"EL": facility(), "PL": facility("PL", max_eur=D("43734100805.00"))}
    d = decide(("EL", "500000.00"), ("PL", "500000.01"), cap=cap, facilities=facilities)
    assert rules_of(d) == ["L-7"]
    assert decide(("EL", "500000.00"), ("PL", "500000.00"), cap=cap, facilities=facilities).approved


def test_five_million_on_a_one_million_contract_is_rejected():
    assert rules_of(decide(("EL", "5000000.00"), cap=FinancingCap(D("1000000.00"), "contract value"))) == ["L-7"]


def test_the_component_cost_basis_is_named_as_an_assumption():
    cap = FinancingCap(D("800.00"), "end products' component cost", "L-7: no contract value was given …")
    d = decide(("EL", "800.00"), cap=cap)
    assert d.approved and d.assumptions == ("L-7: no contract value was given …",)


# --- L-8 -------------------------------------------------------------------------------------------------


def test_a_pending_facility_lends_nothing():
    d = decide(("HU", "1.00"), participants=("HU", "PL"), facilities={"HU": facility("HU", status="pending")})
    assert rules_of(d) == ["L-8"] and "no Council implementing decision" in d.reasons[0].message


def test_loans_on_decided_facilities_follow_the_setting():
    assert decide(("EL", "1.00")).approved
    assert rules_of(decide(("EL", "1.00"), loans_from="agreement_signed")) == ["L-8"]
    signed = {"EL": facility(status="agreement_signed")}
    assert decide(("EL", "1.00"), loans_from="agreement_signed", facilities=signed).approved


def test_a_closed_facility_lends_nothing_and_a_suspended_one_says_l5():
    assert rules_of(decide(("EL", "1.00"), facilities={"EL": facility(status="closed")})) == ["L-8"]
    assert rules_of(decide(("EL", "1.00"), facilities={"EL": facility(status="suspended")})) == ["L-5"]


def test_a_tentative_facility_amount_is_named_in_the_decision():
    d = decide(("EL", "1.00"), facilities={"EL": facility(confidence="secondary")})
    assert d.approved and len(d.assumptions) == 1
    assert d.assumptions[0].startswith("L-8: the EL facility maximum EUR 787 669 283.00 is secondary")
    assert decide(("EL", "1.00")).assumptions == ()  # an official figure is no assumption
    rejected = decide(("EL", "787669283.01"), facilities={"EL": facility(confidence="secondary")})
    assert not rejected.approved and rejected.assumptions  # a rejection says it too


def test_payments_need_a_signed_agreement():
    common = {"member_state": "EL", "max_eur": EL_MAX, "configured": EL_PRE, "paid_eur": D("0"), "amount": D("1"),
              "requested_on": TODAY, "last_request_on": date(2030, 12, 31), "suspended": False}
    assert [r.rule for r in rules.check_pre_financing(**common, status="decided")] == ["L-8"]
    assert rules.check_pre_financing(**common, status="agreement_signed") == []
    inst = {"member_state": "EL", "loan_amount": D("10"), "paid_eur": D("0"), "amount": D("1"), "requested_on": TODAY,
            "last_request_on": date(2030, 12, 31), "suspended": False}
    assert [r.rule for r in rules.check_instalment(**inst, status="pending")] == ["L-8"]
    assert rules.check_instalment(**inst, status="agreement_signed") == []


def change(current: str, target: str, **kw) -> list[str]:
    return [r.rule for r in lifecycle.check_status_change(StatusChange("EL", current, target, today=TODAY, **kw))]


def test_the_lifecycle_moves_only_forward_along_its_steps():
    assert change("pending", "decided") == []
    assert change("pending", "agreement_signed", agreement_signed_on=TODAY, agreement_reference="LA-1") == ["L-8"]
    assert change("decided", "agreement_signed", agreement_signed_on=TODAY, agreement_reference="LA-1") == []
    assert change("decided", "pending") == ["L-8"]
    assert change("closed", "decided") == ["L-8"]
    assert change("decided", "decided") == ["L-8"]
    assert change("agreement_signed", "suspended") == [] and change("agreement_signed", "closed") == []


def test_signing_needs_its_date_and_reference():
    assert change("decided", "agreement_signed") == ["L-8"]
    assert change("decided", "agreement_signed", agreement_signed_on=TODAY) == ["L-8"]
    assert change("decided", "agreement_signed", agreement_reference="LA-1") == ["L-8"]


def test_a_signature_dated_today_passes_and_tomorrow_is_refused():
    ok = {"agreement_reference": "LA-1"}
    assert change("decided", "agreement_signed", agreement_signed_on=TODAY, **ok) == []
    assert change("decided", "agreement_signed", agreement_signed_on=TODAY - timedelta(days=1), **ok) == []
    assert change("decided", "agreement_signed", agreement_signed_on=TODAY + timedelta(days=1), **ok) == ["L-8"]


def test_reinstating_returns_a_suspended_facility_to_where_it_was():
    assert change("suspended", "agreement_signed", before_suspension="agreement_signed") == []
    assert change("suspended", "decided", before_suspension="agreement_signed") == ["L-8"]
    assert change("suspended", "closed", before_suspension="decided") == []


# --- L-9 -------------------------------------------------------------------------------------------------


def test_the_el_sequence_of_issue_20_is_refused_at_the_instalment():
    after_pre = Advances("EL", approved=EL_MAX, pre_financing=EL_PRE, instalments=D("0"))
    assert lifecycle.check_advance(Advances("EL", EL_MAX, D("0"), D("0")), pre_financing=EL_PRE) == []
    c = lifecycle.clear_instalment(after_pre, loan_amount=EL_MAX, loan_instalments=D("0"), loan_cleared=D("0"),
                                   amount=EL_MAX)
    assert [r.rule for r in c.reasons] == ["L-9"] and c.cleared == 0
    assert "905 819 675.45" in c.reasons[0].message and "669 518 890.55" in c.reasons[0].message


def test_an_instalment_of_exactly_what_is_left_passes_and_one_cent_more_is_refused():
    a = Advances("EL", approved=EL_MAX, pre_financing=EL_PRE, instalments=D("0"))
    left = EL_MAX - EL_PRE
    ok = lifecycle.clear_instalment(a, loan_amount=EL_MAX, loan_instalments=D("0"), loan_cleared=D("0"), amount=left)
    assert ok.reasons == () and ok.cleared == EL_PRE  # the whole advance cleared against the loan
    over = lifecycle.clear_instalment(a, loan_amount=EL_MAX, loan_instalments=D("0"), loan_cleared=D("0"),
                                      amount=left + D("0.01"))
    assert [r.rule for r in over.reasons] == ["L-9"]


def test_pre_financing_needs_loans_approved_to_advance_against():
    assert lifecycle.check_advance(Advances("EL", D("100.00"), D("0"), D("0")), pre_financing=D("100.00")) == []
    assert [r.rule for r in lifecycle.check_advance(Advances("EL", D("100.00"), D("0"), D("0")),
                                                    pre_financing=D("100.01"))] == ["L-9"]
    assert [r.rule for r in lifecycle.check_advance(Advances("EL", D("0"), D("0"), D("0")),
                                                    pre_financing=D("0.01"))] == ["L-9"]


def test_the_advance_is_cleared_against_one_loan_and_the_next_loan_is_paid_in_full():
    # two loans of 100; 30 advanced; the first instalment on loan a clears the 30, loan b then takes 100 in cash
    a = Advances("EL", approved=D("200"), pre_financing=D("30"), instalments=D("0"))
    first = lifecycle.clear_instalment(a, loan_amount=D("100"), loan_instalments=D("0"), loan_cleared=D("0"),
                                       amount=D("70"))
    assert first.reasons == () and first.cleared == D("30")
    a = replace(a, instalments=D("70"), cleared=D("30"))
    second = lifecycle.clear_instalment(a, loan_amount=D("100"), loan_instalments=D("0"), loan_cleared=D("0"),
                                        amount=D("100"))
    assert second.reasons == () and second.cleared == 0


def test_a_release_that_would_leave_less_approved_than_paid_is_refused():
    a = Advances("EL", approved=D("200"), pre_financing=D("30"), instalments=D("70"), cleared=D("30"))
    assert lifecycle.check_release(a, D("100")) is None  # 100 left ≥ 100 paid
    assert lifecycle.check_release(a, D("100.01")).rule == "L-9"


# --- L-10 ------------------------------------------------------------------------------------------------


def test_the_envelope_holds_at_exactly_150_bn_and_refuses_one_cent_more():
    others = {"PL": D("100000000000.00"), "RO": D("40000000000.00"), "EL": D("1.00")}
    assert lifecycle.check_envelope("EL", D("10000000000.00"), others) == []
    refused = lifecycle.check_envelope("EL", D("10000000000.01"), others)
    assert [r.rule for r in refused] == ["L-10"] and "150 000 000 000.00" in refused[0].message


# --- L-9 as a property --------------------------------------------------------------------------------------

cents = st.integers(min_value=1, max_value=5_000_00).map(lambda c: D(c) / 100)
steps = st.lists(st.one_of(
    st.tuples(st.just("approve"), cents),
    st.tuples(st.just("pre"), cents),
    st.tuples(st.just("instalment"), st.integers(0, 5), cents),
    st.tuples(st.just("release"), st.integers(0, 5)),
    st.tuples(st.just("suspend"), st.booleans()),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_no_sequence_of_decisions_pays_out_more_than_the_loans_approved(sequence):
    """Approvals, pre-financing, instalments, releases and suspensions in any order: whatever the rules accept,
    pre-financing + instalments ≤ loans approved ≤ the facility maximum, per loan too."""
    maximum = D("10000.00")
    loans: list[dict[str, Decimal | bool]] = []
    pre, suspended = D("0"), False

    def advances() -> Advances:
        active = [x for x in loans if x["active"]]
        return Advances("EL", sum((x["amount"] for x in active), D("0")), pre,
                        sum((x["paid"] for x in loans), D("0")), sum((x["cleared"] for x in loans), D("0")))

    for step in sequence:
        a = advances()
        if step[0] == "approve":
            f = FacilityState("EL", maximum, a.approved, suspended, None, PLAN, status="agreement_signed")
            d = rules.decide_loan_request(lines=[RequestedLine("EL", step[1])], verification_outcome="eligible",
                                          categories=["artillery"], facilities={"EL": f}, eu_member_states=EU,
                                          participants=["EL", "PL"])
            if d.approved:
                loans.append({"amount": step[1], "paid": D("0"), "cleared": D("0"), "active": True})
        elif step[0] == "pre":
            refused = rules.check_pre_financing(
                member_state="EL", max_eur=maximum, configured=None, paid_eur=pre, amount=step[1],
                requested_on=TODAY, last_request_on=date(2030, 12, 31), suspended=suspended,
            ) + lifecycle.check_advance(a, pre_financing=step[1])
            if not refused:
                pre += step[1]
        elif step[0] == "instalment" and step[1] < len(loans):
            loan = loans[step[1]]
            refused = rules.check_instalment(
                member_state="EL", loan_amount=loan["amount"], paid_eur=loan["paid"], amount=step[2],
                requested_on=TODAY, last_request_on=date(2030, 12, 31), suspended=suspended,
                loan_active=bool(loan["active"]),
            )
            c = lifecycle.clear_instalment(a, loan_amount=loan["amount"], loan_instalments=loan["paid"],
                                           loan_cleared=loan["cleared"], amount=step[2])
            if not refused and not c.reasons:
                loan["paid"] += step[2]
                loan["cleared"] += c.cleared
        elif step[0] == "release" and step[1] < len(loans) and loans[step[1]]["active"]:
            if lifecycle.check_release(a, loans[step[1]]["amount"]) is None:
                loans[step[1]]["active"] = False
        elif step[0] == "suspend":
            suspended = step[1]
        a = advances()
        assert a.paid <= a.approved <= maximum
        assert D("0") <= a.cleared <= a.pre_financing
        for x in loans:
            if x["active"]:
                assert x["paid"] + x["cleared"] <= x["amount"]
