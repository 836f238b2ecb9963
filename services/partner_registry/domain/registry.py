"""Effective-dated reference data: country group memberships and participation agreements.

Pure Python: no storage, no messaging. Periods are half-open, `[effective_from, effective_to)`;
`None` as a start means "since always", `None` as an end means "open"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

CONFIDENCE = ("official", "secondary", "assumed")
IN_FORCE = "in_force"
SUPERSEDED = "superseded"
AGREEMENT_STATUSES = ("in_force", "none", "negotiating", "revoked", SUPERSEDED)
KINDS = ("safe_participation",)
SEED = "seed"
OPERATOR = "operator"


class InvalidTerms(ValueError):
    """The terms can never be recorded as they are (bad period, share out of range…)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


class Conflict(Exception):
    """The terms overlap a confirmed agreement in force for the same country and kind."""

    def __init__(self, agreements: list[Agreement]) -> None:
        ids = ", ".join(f"{a.id} (v{a.version})" for a in agreements)
        super().__init__(f"overlaps the agreement(s) in force {ids}")
        self.agreements = agreements


def in_period(day: date, start: date | None, end: date | None) -> bool:
    return (start is None or start <= day) and (end is None or day < end)


def periods_overlap(a_start: date | None, a_end: date | None, b_start: date | None, b_end: date | None) -> bool:
    a_before_b_ends = b_end is None or a_start is None or a_start < b_end
    b_before_a_ends = a_end is None or b_start is None or b_start < a_end
    return a_before_b_ends and b_before_a_ends


def check_period(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidTerms("effective_to", "effective_to must be after effective_from (the period is [from, to))")


def check_share(share: Decimal | None) -> None:
    if share is None:
        return
    if not share.is_finite() or share < 0 or share > 1:
        raise InvalidTerms("max_content_share", "must be a decimal between 0 and 1")


# --- countries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Membership:
    group: str
    effective_from: date | None = None
    effective_to: date | None = None
    source: str = ""
    confidence: str = "secondary"

    def in_force(self, day: date) -> bool:
        return in_period(day, self.effective_from, self.effective_to)


@dataclass(frozen=True)
class Partnership:
    """The country's place in the EU partnership strategy: context for reports, never a rule."""

    level: int
    note: str | None = None
    source: str = ""
    confidence: str = "secondary"


def _membership_order(m: Membership) -> tuple[str, date, date]:
    return (m.group, m.effective_from or date.min, m.effective_to or date.max)


@dataclass(frozen=True)
class CountryRecord:
    code: str
    name: str
    memberships: tuple[Membership, ...] = ()
    partnership: Partnership | None = None
    source: str = ""
    confidence: str = "secondary"

    def normalized(self) -> CountryRecord:
        """The same record with memberships in a canonical order, so that comparisons ignore file order."""
        return replace(self, memberships=tuple(sorted(self.memberships, key=_membership_order)))

    def memberships_on(self, day: date) -> list[Membership]:
        return [m for m in self.memberships if m.in_force(day)]

    def groups_on(self, day: date) -> list[str]:
        return sorted({m.group for m in self.memberships_on(day)})

    def sdp_on(self, day: date) -> Membership | None:
        """The Security and Defence Partnership in force on that day (its start is the signing date)."""
        return next((m for m in self.memberships_on(day) if m.group == "sdp"), None)


# --- agreements -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementTerms:
    country: str
    kind: str
    status: str
    effective_from: date | None
    effective_to: date | None
    content_counts_as_eligible: bool
    max_content_share: Decimal | None
    entities_eligible: bool
    source: str
    confidence: str = "secondary"
    unconfirmed: bool = False
    note: str | None = None

    def validate(self) -> AgreementTerms:
        if self.kind not in KINDS:
            raise InvalidTerms("kind", f"kind must be one of {', '.join(KINDS)}")
        if self.status not in AGREEMENT_STATUSES:
            raise InvalidTerms("status", f"status must be one of {', '.join(AGREEMENT_STATUSES)}")
        if self.status == IN_FORCE and self.effective_from is None:
            raise InvalidTerms("effective_from", "an agreement in force needs effective_from")
        if self.confidence not in CONFIDENCE:
            raise InvalidTerms("confidence", f"confidence must be one of {', '.join(CONFIDENCE)}")
        check_period(self.effective_from, self.effective_to)
        check_share(self.max_content_share)
        return self

    def in_force_on(self, day: date) -> bool:
        # an in-force record without a start date cannot be applied to any contract date
        return self.status == IN_FORCE and self.effective_from is not None and in_period(
            day, self.effective_from, self.effective_to
        )


@dataclass(frozen=True)
class Agreement:
    id: str
    version: int
    terms: AgreementTerms
    origin: str = SEED


def supersessions(new: AgreementTerms, existing: Iterable[Agreement], *, itself: str | None = None) -> list[Agreement]:
    """Decide whether `new` may be recorded next to the current agreements.

    Only agreements in force for the same country and kind whose periods overlap matter. A confirmed one
    is a conflict; an unconfirmed placeholder (seeded with an assumed date or cap) gives way: the
    returned placeholders must be superseded. `itself` is the agreement being corrected."""
    if new.status != IN_FORCE:
        return []
    conflicts: list[Agreement] = []
    superseded: list[Agreement] = []
    for a in existing:
        t = a.terms
        if a.id == itself or t.country != new.country or t.kind != new.kind or t.status != IN_FORCE:
            continue
        if not periods_overlap(new.effective_from, new.effective_to, t.effective_from, t.effective_to):
            continue
        (superseded if t.unconfirmed else conflicts).append(a)
    if conflicts:
        raise Conflict(conflicts)
    return superseded


def superseded(terms: AgreementTerms, by: str) -> AgreementTerms:
    note = f"superseded by {by}" + (f"; was: {terms.note}" if terms.note else "")
    return replace(terms, status=SUPERSEDED, note=note)


def in_force_on(agreements: Iterable[Agreement], day: date) -> list[Agreement]:
    return [a for a in agreements if a.terms.in_force_on(day)]


# --- seed diff ------------------------------------------------------------------------------------


@dataclass
class SeedPlan:
    """What a seed load must publish: only new or changed records."""

    countries: list[CountryRecord] = field(default_factory=list)
    agreements: list[tuple[str, AgreementTerms]] = field(default_factory=list)
    # seeded agreements an operator has since corrected: the seed no longer owns them
    kept_operator_versions: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.countries and not self.agreements


def plan_seed(
    seed_countries: Mapping[str, CountryRecord],
    seed_agreements: Mapping[str, AgreementTerms],
    stored_countries: Mapping[str, CountryRecord],
    stored_agreements: Mapping[str, Agreement],
    last_seeded: Mapping[str, AgreementTerms],
) -> SeedPlan:
    """Compare the seed with what is stored.

    `stored_*` are the current versions; `last_seeded` the terms each agreement had when the seed last
    wrote it. A seeded agreement later corrected by an operator is left alone unless the seed row itself
    changes — and even then the operator's version stands (reported in `kept_operator_versions`)."""
    plan = SeedPlan()
    for code in sorted(seed_countries):
        record = seed_countries[code].normalized()
        stored = stored_countries.get(code)
        if stored is None or stored.normalized() != record:
            plan.countries.append(record)
    for agreement_id in sorted(seed_agreements):
        terms = seed_agreements[agreement_id]
        current = stored_agreements.get(agreement_id)
        if current is None:
            plan.agreements.append((agreement_id, terms))
        elif current.origin == SEED:
            if current.terms != terms:
                plan.agreements.append((agreement_id, terms))
        elif last_seeded.get(agreement_id) != terms:
            plan.kept_operator_versions.append(agreement_id)
    return plan
