"""The rules configuration: versioned, effective-dated data with a source and confidence per value."""

from __future__ import annotations

import copy
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import yaml

from safe_procurement.services.origin_verification.adapters.rules_file import DEFAULT_PATH, load_rulebook
from safe_procurement.services.origin_verification.domain.rulebook import (
    SCHEMA,
    RulebookError,
    parse_rulebook,
)


def _raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_PATH.read_text())  # type: ignore[no-any-return]


def test_the_packaged_rules_define_every_setting_with_a_source_and_confidence() -> None:
    rs = load_rulebook().current
    assert set(rs.settings) == set(SCHEMA)
    assert all(s.source and s.confidence in ("official", "secondary", "assumed") for s in rs.settings.values())
    assert rs.origin_cap == Decimal("0.35")
    assert rs.value("transitional_deadline") == date(2026, 5, 30)
    assert rs["transitional_deadline_inclusive"].confidence == "assumed"


def test_a_float_where_a_decimal_is_expected_is_refused() -> None:
    raw = _raw()
    raw["rule_sets"][0]["settings"]["origin_cap"]["value"] = 0.35
    with pytest.raises(RulebookError, match="never floats"):
        parse_rulebook(raw)


def test_a_missing_setting_or_source_is_refused() -> None:
    raw = _raw()
    del raw["rule_sets"][0]["settings"]["category_2"]
    with pytest.raises(RulebookError, match="category_2"):
        parse_rulebook(raw)
    raw = _raw()
    raw["rule_sets"][0]["settings"]["origin_cap"]["source"] = ""
    with pytest.raises(RulebookError, match="source"):
        parse_rulebook(raw)


def test_the_rule_set_is_chosen_by_the_contract_date() -> None:
    raw = _raw()
    corrected = copy.deepcopy(raw["rule_sets"][0])
    corrected["version"] = "safe-rules-2027.1"
    corrected["effective_from"] = "2027-01-01"
    corrected["settings"]["transitional_deadline_inclusive"]["value"] = False
    raw["rule_sets"].append(corrected)
    book = parse_rulebook(raw)
    assert book.for_date(date(2026, 12, 31)).version == "safe-rules-2025.1"
    assert book.for_date(date(2027, 1, 1)).version == "safe-rules-2027.1"
    assert book.current.version == "safe-rules-2027.1"


def test_the_public_view_shows_values_with_sources() -> None:
    public = load_rulebook().current.public()
    assert public["settings"]["origin_cap"] == {
        "value": "0.35", "source": public["settings"]["origin_cap"]["source"], "confidence": "official",
        "note": public["settings"]["origin_cap"]["note"]}
    assert public["settings"]["eligible_groups"]["value"] == ["eea_efta", "eu_member_state", "ukraine"]
