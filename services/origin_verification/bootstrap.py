"""The one place that picks real or fake dependencies: the rules configuration, the clock, and what the
process keeps of the registry replica."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request

from safe_procurement.services.origin_verification.adapters.replica import Readiness
from safe_procurement.services.origin_verification.adapters.rules_file import load_rulebook
from safe_procurement.services.origin_verification.config import Settings
from safe_procurement.services.origin_verification.domain.reference import ReferenceData
from safe_procurement.services.origin_verification.domain.rulebook import RuleBook
from safe_procurement.shared.kit.runtime import runtime_of

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReplicaView:
    """What this process last saw of the registry replica, and the reference data loaded for that state (reused
    until the replica changes: its fingerprint grows with every version)."""

    status: Readiness | None = None
    loaded: tuple[tuple[object, ...], ReferenceData] | None = None

    def reference_for(self, status: Readiness) -> ReferenceData | None:
        return self.loaded[1] if self.loaded is not None and self.loaded[0] == status.fingerprint else None


@dataclass(frozen=True)
class Dependencies:
    rules: RuleBook
    clock: Clock  # only stamps `checked_at`; no verdict ever depends on it
    replica_retry_s: float = 1.0
    replica: ReplicaView = field(default_factory=ReplicaView)


def bootstrap(settings: Settings, *, clock: Clock | None = None, rules: RuleBook | None = None) -> Dependencies:
    return Dependencies(
        rules=rules or load_rulebook(settings.rules_file or None),
        clock=clock or system_clock,
        replica_retry_s=settings.replica_retry_s,
    )


def deps_of(request: Request) -> Dependencies:
    return runtime_of(request).deps  # type: ignore[no-any-return]
