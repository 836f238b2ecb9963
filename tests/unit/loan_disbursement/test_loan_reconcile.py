"""Reconciliation compares the ledger with the loans and names every difference."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.loan_disbursement.domain.reconcile import (
    Balance,
    FacilityBooks,
    LoanBooks,
    PlanLineBooks,
    compare,
)

D = Decimal
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_balanced_books_report_no_difference():
    f = FacilityBooks("DK", D("46796822"), D("7019523.30"), reserved=D("10"), released=D("5"),
                      pre_financing=D("7019523.30"), instalments=D("5"), active_loans=D("5"))
    loans = [LoanBooks("a", "DK", D("5"), "active", 1, D("5"), 0, D("0"), D("5")),
             LoanBooks("b", "DK", D("5"), "released", 1, D("5"), 1, D("5"))]
    report = compare(checked_at=NOW, facilities=[f], loans=loans)
    assert report.ok and report.as_dict()["facilities"][0]["approved_eur"] == "5"


def test_every_difference_is_listed():
    f = FacilityBooks("DK", D("100"), None, reserved=D("120"), released=D("0"), pre_financing=D("16"),
                      instalments=D("130"), active_loans=D("110"))
    loans = [LoanBooks("a", "DK", D("110"), "active", 2, D("120"), 0, D("0"), D("111"))]
    checks = {d.check for d in compare(checked_at=NOW, facilities=[f], loans=loans).differences}
    assert checks == {"approved_matches_loans", "approved_within_max", "disbursed_within_approved",
                      "pre_financing_within_cap", "disbursed_within_max", "loan_reserved_once",
                      "loan_instalments_within_amount"}


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
