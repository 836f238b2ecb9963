"""End to end: the scenarios of the money and participation rules (tests/scenarios) through the four processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from safe_procurement.services.testing import scenarios

pytestmark = pytest.mark.e2e

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.json"))
assert SCENARIOS, "the money rule scenarios are missing from tests/scenarios"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_the_money_rule_scenarios_reach_their_expected_outcome(safe_stack, path):
    async with safe_stack.client() as client:
        result = await scenarios.run(client, scenarios.load(path), unique=True, timeout=60)
    assert result.passed, result.line()
