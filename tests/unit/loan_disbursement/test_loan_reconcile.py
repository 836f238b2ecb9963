"""Reconciliation compares the ledger with the loans and names every difference."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from safe_procurement.services.loan_disbursement.domain.reconcile import (
    Balance,
    FacilityBooks,
    LoanBooks,
    PlanLineBooks,
    compare,
)

D = Decimal
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_balanced_books_report_no_difference():
    # L-9: 1 500 000 advanced + 5 000 000 instalments ≤ 10 000 000 approved; the advance cleared against loan a
    f = FacilityBooks("DK", D("46796822"), D("7019523.30"), reserved=D("15000000"), released=D("5000000"),
                      pre_financing=D("1500000"), instalments=D("5000000"), active_loans=D("10000000"),
                      cleared=D("1500000"))
    loans = [LoanBooks("a", "DK", D("10000000"), "active", 1, D("10000000"), 0, D("0"), D("5000000"), D("1500000")),
             LoanBooks("b", "DK", D("5000000"), "released", 1, D("5000000"), 1, D("5000000"))]
    report = compare(checked_at=NOW, facilities=[f], loans=loans)
    assert report.ok and report.as_dict()["facilities"][0]["approved_eur"] == "10000000"


def test_pre_financing_paid_on_top_of_the_loans_fails_the_check():
    # the EL books of issue 20: the whole facility approved, 15 % advanced, then the whole loan paid again
    f = FacilityBooks("EL", D("787669283.00"), D("118150392.45"), reserved=D("787669283.00"),
                      pre_financing=D("118150392.45"), instalments=D("787669283.00"), active_loans=D("787669283.00"))
    loans = [LoanBooks("a", "EL", D("787669283.00"), "active", 1, D("787669283.00"), 0, D("0"), D("787669283.00"),
                       D("0.01"))]
    diffs = compare(checked_at=NOW, facilities=[f], loans=loans).differences
    by_check = {d.check: d for d in diffs}
    assert {"advances_within_approved", "disbursed_within_max", "loan_advances_within_amount"} <= set(by_check)
    assert by_check["advances_within_approved"].actual == "905819675.45"
    assert "L-9" in by_check["advances_within_approved"].message


def test_exactly_the_approved_amount_paid_out_passes_and_one_cent_more_fails():
    def books(instalments: str) -> FacilityBooks:
        return FacilityBooks("EL", D("787669283.00"), None, reserved=D("1000.00"), pre_financing=D("150.00"),
                             instalments=D(instalments), active_loans=D("1000.00"), cleared=D("150.00"))
    assert compare(checked_at=NOW, facilities=[books("850.00")], loans=[]).ok
    assert [d.check for d in compare(checked_at=NOW, facilities=[books("850.01")], loans=[]).differences] == [
        "advances_within_approved"]


def test_more_cleared_than_advanced_is_reported():
    f = FacilityBooks("EL", D("1000"), None, reserved=D("100"), pre_financing=D("10"), instalments=D("0"),
                      active_loans=D("100"), cleared=D("10.01"))
    assert [d.check for d in compare(checked_at=NOW, facilities=[f], loans=[]).differences] == [
        "cleared_within_pre_financing"]


def test_every_difference_is_listed():
    f = FacilityBooks("DK", D("100"), None, reserved=D("120"), released=D("0"), pre_financing=D("16"),
                      instalments=D("130"), active_loans=D("110"))
    loans = [LoanBooks("a", "DK", D("110"), "active", 2, D("120"), 0, D("0"), D("111"))]
    checks = {d.check for d in compare(checked_at=NOW, facilities=[f], loans=loans).differences}
    assert checks == {"approved_matches_loans", "approved_within_max", "disbursed_within_approved",
                      "pre_financing_within_cap", "disbursed_within_max", "loan_reserved_once",
                      "loan_instalments_within_amount", "advances_within_approved", "loan_advances_within_amount"}


def test_running_totals_that_equal_the_ledger_sums_report_no_difference():
    f = FacilityBooks("DK", D("100"), None, reserved=D("10"), released=D("5"), pre_financing=D("1"),
                      instalments=D("2"), active_loans=D("5"),
                      totals=Balance(reserved=D("10"), released=D("5"), pre_financing=D("1"), instalments=D("2")))
    lines = [PlanLineBooks("DK", "cyber", drawn=D("5"), total=D("5")), PlanLineBooks("DK", "artillery")]
    assert compare(checked_at=NOW, facilities=[f], loans=[], plan_lines=lines).ok


def test_every_running_total_that_differs_from_the_ledger_is_reported():
    f = FacilityBooks("DK", D("100"), None, reserved=D("10"), released=D("5"), pre_financing=D("1"),
                      instalments=D("2"), active_loans=D("5"),
                      totals=Balance(reserved=D("10.01"), released=D("5"), pre_financing=D("0"), instalments=D("2")))
    lines = [PlanLineBooks("DK", "cyber", drawn=D("5"), total=D("4.99")), PlanLineBooks("EE", "artillery", total=D("1"))]
    diffs = compare(checked_at=NOW, facilities=[f], loans=[], plan_lines=lines).differences
    assert [(d.member_state, d.check, d.expected, d.actual) for d in diffs] == [
        ("DK", "running_total_matches_ledger", "10", "10.01"),
        ("DK", "running_total_matches_ledger", "1", "0"),
        ("DK", "plan_drawn_total_matches_draws", "5", "4.99"),
        ("EE", "plan_drawn_total_matches_draws", "0.00", "1"),
    ]
    assert "reserved" in diffs[0].message and "pre_financing" in diffs[1].message and "cyber" in diffs[2].message


def test_books_without_running_totals_are_not_checked_against_them():
    f = FacilityBooks("DK", D("100"), None, reserved=D("10"), active_loans=D("10"))
    assert compare(checked_at=NOW, facilities=[f], loans=[]).ok
