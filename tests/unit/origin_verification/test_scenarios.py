"""The shared example scenarios without registry setup or financing, through the domain engine with
reference data equivalent to the registry seed (docs/safe-rules.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from safe_procurement.services import scenarios as examples
from safe_procurement.shared.contracts import Proposal
from tests.unit.origin_verification.support import failed, run


def _cases() -> list[Any]:
    out = []
    for path in examples.files():
        s = json.loads(path.read_text())
        if s.get("registry_setup") or s["proposal"].get("financing") or "rejected_at_intake" in s["expected_outcome"]:
            continue
        out.append(pytest.param(s, id=s["name"]))
    return out


CASES = _cases()


def test_there_are_scenarios_for_the_engine_alone() -> None:
    assert len(CASES) >= 3, "the example scenarios are missing from services/scenarios"


@pytest.mark.parametrize("scenario", CASES)
def test_the_scenario_gets_its_expected_outcome(scenario: dict[str, Any]) -> None:
    v = run(Proposal.model_validate(scenario["proposal"]))
    assert v.outcome in scenario["expected_outcome"], [f for f in v.findings if f.passed is not True]
    expected_rules = scenario.get("failed_rules_include_one_of") or []
    if v.outcome == "ineligible" and expected_rules:
        assert failed(v) & set(expected_rules), failed(v)
