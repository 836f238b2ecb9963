"""The one place that picks real or fake dependencies: the rules configuration and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.origin_verification.adapters.rules_file import load_rulebook
from services.origin_verification.config import Settings
from services.origin_verification.domain.rulebook import RuleBook

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Dependencies:
    rules: RuleBook
    clock: Clock  # only stamps `checked_at`; no verdict ever depends on it
    replica_retry_s: float = 1.0


def bootstrap(settings: Settings, *, clock: Clock | None = None, rules: RuleBook | None = None) -> Dependencies:
    return Dependencies(
        rules=rules or load_rulebook(settings.rules_file or None),
        clock=clock or system_clock,
        replica_retry_s=settings.replica_retry_s,
    )
