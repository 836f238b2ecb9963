"""SLA clocks: targets per status in seconds, minutes, hours, days or working days; breach past the target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from safe_procurement.services.applications.domain import sla

T = sla.parse_targets("verifying=5m,needs_review=5wd,loan_requested=1m,origin_verified=2h")
FRIDAY = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def test_a_case_is_in_breach_only_once_past_its_target() -> None:
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    inside = sla.clock("verifying", start, start + timedelta(minutes=5), T, final=False)
    assert (inside.breached, inside.target, inside.seconds_in_status) == (False, "5m", 300.0)
    late = sla.clock("verifying", start, start + timedelta(minutes=5, seconds=1), T, final=False)
    assert late.breached and late.over_by_seconds == 1.0 and late.due_at == start + timedelta(minutes=5)


def test_working_days_skip_the_weekend() -> None:
    assert sla.add_working_days(FRIDAY, 5) == FRIDAY + timedelta(days=7)
    assert sla.add_working_days(FRIDAY, 1) == datetime(2026, 12, 7, 15, 0, tzinfo=UTC)  # Monday
    saturday = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    assert sla.add_working_days(saturday, 1) == datetime(2026, 12, 8, 0, 0, tzinfo=UTC)  # counted from Monday 00:00
    on_time = sla.clock("needs_review", FRIDAY, FRIDAY + timedelta(days=6, hours=23), T, final=False)
    assert on_time.breached is False  # six calendar days, four working days
    assert sla.clock("needs_review", FRIDAY, FRIDAY + timedelta(days=7, seconds=1), T, final=False).breached


def test_final_cases_and_statuses_without_a_target_have_no_clock_to_breach() -> None:
    old = FRIDAY - timedelta(days=365)
    assert sla.clock("origin_verified", old, FRIDAY, T, final=True).breached is False
    c = sla.clock("submitted", old, FRIDAY, T, final=False)
    assert (c.target, c.breached, c.seconds_in_status) == (None, False, 365 * 86400.0)
    naive = sla.clock("verifying", FRIDAY.replace(tzinfo=None), FRIDAY + timedelta(minutes=6), T, final=False)
    assert naive.breached  # SQLite's naive timestamps are UTC


@pytest.mark.parametrize("bad", ["verifying", "verifying=5", "verifying=5 weeks", "=5m", "verifying=-1m"])
def test_a_malformed_target_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="SLA target"):
        sla.parse_targets(bad)
