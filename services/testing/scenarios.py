"""Scenario files (JSON or YAML): a proposal, registry set-up, the expected outcome and failed rules.

Format (see services/scenarios/README.md): `expected_outcome` lists the allowed `verification.outcome`
values for a proposal without financing, else the allowed final case statuses; `rejected_at_intake`
means HTTP 422. `failed_rules_include_one_of`: when ineligible, one of these rule ids failed.
`registry_setup`: bodies to POST /agreements first."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safe_procurement.services.client import PlatformClient


@dataclass
class ScenarioResult:
    name: str
    passed: bool
    expected: list[str]
    actual: str | None
    failed_rules: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    case_id: str | None = None
    seconds: float = 0.0

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        rules = f" failed rules: {', '.join(self.failed_rules)}" if self.failed_rules else ""
        text = f"{mark} {self.name}: got {self.actual!r}, expected one of {self.expected}{rules} ({self.seconds:.2f}s)"
        for p in self.problems:
            text += f"\n     - {p}"
        return text


class ScenarioFileError(ValueError):
    """A scenario file that cannot be run; the message names the file and what is wrong with it."""


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate one scenario file (JSON, or YAML for .yaml/.yml). Raises ScenarioFileError naming
    the file: missing, unreadable, malformed, or without the fields a scenario needs."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScenarioFileError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ScenarioFileError(f"{path}: cannot be read ({e.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioFileError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except yaml.YAMLError as e:
        raise ScenarioFileError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ScenarioFileError(f"{path}: a scenario is an object, not {type(data).__name__}")
    problems = []
    expected = data.get("expected_outcome")
    if not isinstance(expected, list) or not expected or not all(isinstance(x, str) for x in expected):
        problems.append("`expected_outcome` must be a non-empty list of strings")
    if "proposal" not in data:
        problems.append("`proposal` is missing")
    if not isinstance(data.get("registry_setup", []), list):
        problems.append("`registry_setup` must be a list of agreement bodies")
    if not isinstance(data.get("failed_rules_include_one_of", []) or [], list):
        problems.append("`failed_rules_include_one_of` must be a list of rule ids")
    if problems:
        raise ScenarioFileError(f"{path}: " + "; ".join(problems))
    data.setdefault("name", path.stem)
    return data


async def run(client: PlatformClient, scenario: dict[str, Any], *, unique: bool = False,
              timeout: float = 30.0) -> ScenarioResult:
    started = time.monotonic()
    name = scenario.get("name", "scenario")
    expected = list(scenario.get("expected_outcome", []))
    proposal = dict(scenario["proposal"]) if isinstance(scenario.get("proposal"), dict) else scenario.get("proposal")
    if unique and isinstance(proposal, dict) and "reference" in proposal:
        proposal["reference"] = f"{proposal['reference']}-{uuid.uuid4().hex[:8]}"
    problems: list[str] = []
    for body in scenario.get("registry_setup", []):
        r = await client.post_agreement(body)
        if r.status_code not in (200, 201, 409):
            problems.append(f"registry set-up answered {r.status_code}: {r.text[:300]}")
    r = await client.submit(proposal)  # type: ignore[arg-type]
    if r.status_code == 422:
        actual = "rejected_at_intake"
        return ScenarioResult(name, actual in expected and not problems, expected, actual, problems=problems,
                              seconds=time.monotonic() - started)
    if r.status_code not in (200, 201):
        problems.append(f"POST /procurements answered {r.status_code}: {r.text[:300]}")
        return ScenarioResult(name, False, expected, None, problems=problems, seconds=time.monotonic() - started)
    case_id = r.json()["id"]
    financing = bool(isinstance(proposal, dict) and proposal.get("financing"))
    try:
        if financing:
            case = await client.wait_for_status(case_id, timeout=timeout)
            actual = case["status"]
        else:
            case = await client.wait_for_status(
                case_id, {"origin_verified", "origin_rejected", "needs_review", "withdrawn"}, timeout=timeout
            )
            actual = (case.get("verification") or {}).get("outcome")
    except TimeoutError as e:
        return ScenarioResult(name, False, expected, None, problems=[*problems, str(e)], case_id=case_id,
                              seconds=time.monotonic() - started)
    verification = case.get("verification") or {}
    failed = sorted({f["rule"] for f in verification.get("findings", []) if f.get("passed") is False})
    wanted_rules = scenario.get("failed_rules_include_one_of") or []
    if actual not in expected:
        problems.append(f"outcome {actual!r} not in {expected}")
    if wanted_rules and verification.get("outcome") == "ineligible" and not set(wanted_rules) & set(failed):
        problems.append(f"none of {wanted_rules} among failed rules {failed}")
    return ScenarioResult(name, not problems, expected, actual, failed, problems, case_id,
                          time.monotonic() - started)
