"""Reference data the rules read: country groups and participation agreements, effective-dated.

A replica of the partner registry, as the domain sees it. Every question is asked "on" a date (the
contract's signing date), never "today"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cached_property

IN_FORCE = "in_force"
SAFE_PARTICIPATION = "safe_participation"


@dataclass(frozen=True, slots=True)
class Membership:
    group: str
    effective_from: date | None = None  # None: since always
    effective_to: date | None = None  # exclusive; None: open

    def in_force(self, on: date) -> bool:
        return (self.effective_from is None or self.effective_from <= on) and (
            self.effective_to is None or on < self.effective_to
        )


@dataclass(frozen=True, slots=True)
class CountryRecord:
    code: str
    name: str = ""
    memberships: tuple[Membership, ...] = ()
    partnership_level: int | None = None
    version: int = 0

    def groups_on(self, on: date) -> frozenset[str]:
        return frozenset(m.group for m in self.memberships if m.in_force(on))


@dataclass(frozen=True, slots=True)
class Agreement:
    """An Art. 17 participation agreement (one version of it, the highest the replica holds)."""

    agreement_id: str
    country: str
    status: str
    effective_from: date | None
    effective_to: date | None
    content_counts_as_eligible: bool
    max_content_share: Decimal | None
    entities_eligible: bool
    kind: str = SAFE_PARTICIPATION
    version: int = 0
    source: str = ""
    confidence: str = ""

    def in_force_on(self, on: date) -> bool | None:
        """True in force on `on`, False not, None unknown (in force, but its effective date is not configured)."""
        if self.status != IN_FORCE:
            return False
        if self.effective_to is not None and on >= self.effective_to:
            return False
        if self.effective_from is None:
            return None
        return self.effective_from <= on

    def describe(self) -> str:
        frm = self.effective_from.isoformat() if self.effective_from else "unconfirmed date"
        cap = str(self.max_content_share) if self.max_content_share is not None else "cap not configured"
        return f"{self.country} agreement {self.agreement_id} v{self.version} ({self.status}, from {frm}, {cap})"


@dataclass(frozen=True)
class ReferenceData:
    countries: Mapping[str, CountryRecord] = field(default_factory=dict)
    agreements: tuple[Agreement, ...] = ()
    registry_version: int | None = None

    def groups(self, code: str, on: date) -> frozenset[str]:
        record = self.countries.get(code)
        return record.groups_on(on) if record is not None else frozenset()

    def partnership_level(self, code: str) -> int | None:
        record = self.countries.get(code)
        return record.partnership_level if record is not None else None

    @cached_property
    def _participation_by_country(self) -> dict[str, list[Agreement]]:
        # built once per reference data (which is cached per replica state), not scanned per component
        out: dict[str, list[Agreement]] = {}
        for a in self.agreements:
            if a.kind == SAFE_PARTICIPATION:
                out.setdefault(a.country, []).append(a)
        return out

    def agreements_of(self, code: str) -> list[Agreement]:
        return list(self._participation_by_country.get(code, ()))

    def agreement_on(self, code: str, on: date) -> Agreement | None:
        """The agreement that governs `code` on `on`: one in force, else one possibly in force (date
        unconfirmed), else the latest on record (not in force) so reports can say why it did not apply."""
        candidates = self.agreements_of(code)
        if not candidates:
            return None

        def rank(a: Agreement) -> tuple[int, date, int]:
            state = a.in_force_on(on)
            order = 2 if state is True else 1 if state is None else 0
            return (order, a.effective_from or date.min, a.version)

        return max(candidates, key=rank)
