"""The chaos run in small: 40 proposals while every service is killed once with SIGKILL (tests/chaos/run.py
is the big one, `make chaos`)."""

from __future__ import annotations

import pytest

from tests.chaos import run as chaos

pytestmark = pytest.mark.e2e


async def test_every_case_completes_once_while_each_service_is_killed_in_turn(safe_stack_factory):
    stack = safe_stack_factory()
    report = await chaos.run(stack, cases=40, rate=10, kill_interval=1.0, kills_per_service=1, timeout=150,
                             say=lambda _s: None)
    print(report.text())
    assert report.kills_per_service == {s: 1 for s in chaos.KILL_ORDER}
    assert report.cases == 40
    assert report.ok, report.text()
