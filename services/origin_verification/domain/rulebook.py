"""The versioned, effective-dated rules configuration: every threshold, date and list the rules use,
each with its source and confidence. Parsed from plain data (the service's `safe_rules.yaml`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

CONFIDENCE = ("official", "secondary", "assumed")


class RulebookError(ValueError):
    """The rules configuration is unusable (missing key, wrong type, float where a decimal is needed)."""


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    value: Any
    source: str
    confidence: str
    note: str = ""

    @property
    def display(self) -> str:
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, (list, tuple, frozenset)):
            return ",".join(sorted(str(v) for v in self.value))
        return str(self.value)

    def assumption(self, extra: str = "") -> str:
        text = f"{self.key}={self.display} [{self.confidence}]"
        if self.note:
            text += f": {self.note}"
        return text + (f"; {extra}" if extra else "")

    def public(self) -> dict[str, Any]:
        value: Any = self.value
        if isinstance(value, Decimal | date):
            value = str(value) if isinstance(value, Decimal) else value.isoformat()
        elif isinstance(value, frozenset):
            value = sorted(value)
        return {"value": value, "source": self.source, "confidence": self.confidence, "note": self.note}


def _decimal(v: Any) -> Decimal:
    if isinstance(v, bool) or isinstance(v, float):
        raise RulebookError(f"{v!r}: write decimals as strings (e.g. \"0.35\"), never floats")
    try:
        d = Decimal(str(v))
    except InvalidOperation as e:
        raise RulebookError(f"{v!r} is not a decimal") from e
    if not d.is_finite() or d < 0 or d > 1:
        raise RulebookError(f"{v!r} must be a share between 0 and 1")
    return d


def _date(v: Any) -> date:
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v))
    except ValueError as e:
        raise RulebookError(f"{v!r} is not a date (YYYY-MM-DD)") from e


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise RulebookError(f"{v!r} must be true or false")
    return v


def _groups(v: Any) -> frozenset[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise RulebookError(f"{v!r} must be a list of names")
    return frozenset(v)


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in allowed:
            raise RulebookError(f"{v!r} must be one of {', '.join(allowed)}")
        return str(v)

    return parse


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 28:
        raise RulebookError(f"{v!r} must be a whole number between 0 and 28")
    return v


# Every key a rule set must define, and how its value is read.
SCHEMA: dict[str, Callable[[Any], Any]] = {
    "origin_cap": _decimal,
    "eligible_groups": _groups,
    "borrower_groups": _groups,
    "counting_groups": _groups,
    "may_join_groups": _groups,
    "unlisted_participants": _choice("allow", "review", "fail"),
    "transitional_deadline": _date,
    "transitional_deadline_inclusive": _bool,
    "subcontractor_allowed_share": _decimal,
    "subcontractor_max_share": _decimal,
    "subcontractor_prior_contract_before": _date,
    "screening_derogation": _bool,
    "agreement_entities_in_area": _bool,
    "agreement_content_excess": _choice("excess_non_eligible", "all_non_eligible"),
    "evidence_required_for_eligible_content": _bool,
    "category_1": _groups,
    "category_2": _groups,
    "share_display_places": _int,
}


# Settings added after rule sets were in use: a rule set that does not define one gets this default (named in
# every finding that uses it, like any other setting).
DEFAULTS: dict[str, dict[str, Any]] = {
    "regulation_in_force_on": {
        "value": "2025-05-29", "source": "Council Regulation (EU) 2025/1106, in force 29 May 2025 (SAFE_RULES.md §8a)",
        "confidence": "official",
        "note": "R-PART-4: a contract signed before this date is not a SAFE common procurement (the rule is ours)",
    },
}
SCHEMA["regulation_in_force_on"] = _date


@dataclass(frozen=True)
class RuleSet:
    version: str
    effective_from: date | None
    settings: Mapping[str, Setting]
    description: str = ""

    def __getitem__(self, key: str) -> Setting:
        return self.settings[key]

    def value(self, key: str) -> Any:
        return self.settings[key].value

    @property
    def origin_cap(self) -> Decimal:
        return self.value("origin_cap")  # type: ignore[no-any-return]

    def applies_on(self, on: date) -> bool:
        return self.effective_from is None or self.effective_from <= on

    def public(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "effective_from": self.effective_from.isoformat() if self.effective_from else None,
            "description": self.description,
            "settings": {k: s.public() for k, s in self.settings.items()},
        }


@dataclass(frozen=True)
class RuleBook:
    rule_sets: tuple[RuleSet, ...]  # ordered by effective_from, oldest first

    def for_date(self, on: date) -> RuleSet:
        """The rule set for a contract signed on `on`: the latest that took effect on or before it."""
        applicable = [rs for rs in self.rule_sets if rs.applies_on(on)]
        return applicable[-1] if applicable else self.rule_sets[0]

    @property
    def current(self) -> RuleSet:
        return self.rule_sets[-1]


def parse_rule_set(raw: Mapping[str, Any]) -> RuleSet:
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        raise RulebookError("every rule set needs a version label")
    eff = raw.get("effective_from")
    values = raw.get("settings")
    if not isinstance(values, Mapping):
        raise RulebookError(f"rule set {version}: settings must be a mapping")
    values = {**DEFAULTS, **values}
    missing = sorted(set(SCHEMA) - set(values))
    if missing:
        raise RulebookError(f"rule set {version}: missing settings {', '.join(missing)}")
    settings: dict[str, Setting] = {}
    for key, parse in SCHEMA.items():
        entry = values[key]
        if not isinstance(entry, Mapping) or "value" not in entry:
            raise RulebookError(f"rule set {version}: {key} must have value, source and confidence")
        source, confidence = entry.get("source"), entry.get("confidence")
        if not isinstance(source, str) or not source:
            raise RulebookError(f"rule set {version}: {key} needs a source")
        if confidence not in CONFIDENCE:
            raise RulebookError(f"rule set {version}: {key} confidence must be one of {', '.join(CONFIDENCE)}")
        try:
            value = parse(entry["value"])
        except RulebookError as e:
            raise RulebookError(f"rule set {version}: {key}: {e}") from None
        settings[key] = Setting(key, value, source, str(confidence), str(entry.get("note") or ""))
    if settings["subcontractor_allowed_share"].value > settings["subcontractor_max_share"].value:
        raise RulebookError(f"rule set {version}: subcontractor_allowed_share exceeds subcontractor_max_share")
    return RuleSet(
        version=version,
        effective_from=_date(eff) if eff is not None else None,
        settings=settings,
        description=str(raw.get("description") or ""),
    )


def parse_rulebook(data: Mapping[str, Any]) -> RuleBook:
    raw_sets = data.get("rule_sets")
    if not isinstance(raw_sets, list) or not raw_sets:
        raise RulebookError("rule_sets must be a non-empty list")
    sets = [parse_rule_set(r) for r in raw_sets]
    if len({s.version for s in sets}) != len(sets):
        raise RulebookError("rule set versions must be unique")
    if sum(1 for s in sets if s.effective_from is None) > 1:
        raise RulebookError("at most one rule set may have no effective_from")
    sets.sort(key=lambda s: s.effective_from or date.min)
    return RuleBook(tuple(sets))
