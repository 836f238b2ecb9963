"""The scenarios of tests/scenarios without financing, through the domain engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safe_procurement.shared.contracts import Proposal
from tests.unit.origin_verification.support import findings, run

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
CASES = [pytest.param(s, id=s["name"]) for s in (json.loads(p.read_text()) for p in sorted(SCENARIOS.glob("*.json")))
         if not s["proposal"].get("financing")]


def test_there_are_scenarios_without_financing() -> None:
    assert len(CASES) >= 2


@pytest.mark.parametrize("scenario", CASES)
def test_the_scenario_gets_its_expected_outcome_from_its_rule(scenario: dict[str, Any]) -> None:
    v = run(Proposal.model_validate(scenario["proposal"]))
    assert v.outcome in scenario["expected_outcome"]
    for rule in scenario["failed_rules_include_one_of"]:
        assert [f for f in findings(v, rule) if f.passed is not True], rule
