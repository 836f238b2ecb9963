"""Load the rules configuration data file (YAML or JSON) into the domain's RuleBook."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from safe_procurement.services.origin_verification.domain.rulebook import (
    RuleBook,
    RulebookError,
    parse_rulebook,
)

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "safe_rules.yaml"


def load_rulebook(path: str | Path | None = None) -> RuleBook:
    p = Path(path) if path else DEFAULT_PATH
    text = p.read_text(encoding="utf-8")
    data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise RulebookError(f"{p}: expected a mapping with rule_sets")
    return parse_rulebook(data)
