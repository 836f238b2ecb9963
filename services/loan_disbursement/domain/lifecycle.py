"""L-8 facility lifecycle, L-9 pre-financing as an advance, L-10 the EUR 150 bn envelope (docs/safe-rules.md,
"Loans").

Pure functions over exact Decimals; each returns the reasons it refuses (empty: passes). Nothing touches storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from safe_procurement.services.loan_disbursement.domain.money import ZERO, exact, fmt
from safe_procurement.services.loan_disbursement.domain.reasons import Reason

L8, L9, L10 = "L-8", "L-9", "L-10"

PENDING, DECIDED, SIGNED, SUSPENDED, CLOSED = "pending", "decided", "agreement_signed", "suspended", "closed"
STATUSES = (PENDING, DECIDED, SIGNED, SUSPENDED, CLOSED)
ENVELOPE_EUR = Decimal("150000000000")

# status → the statuses an operator may move it to (reinstating a suspended facility returns it to where it was)
_NEXT: Mapping[str, tuple[str, ...]] = {
    PENDING: (DECIDED, CLOSED),
    DECIDED: (SIGNED, SUSPENDED, CLOSED),
    SIGNED: (SUSPENDED, CLOSED),
    SUSPENDED: (DECIDED, SIGNED, CLOSED),
    CLOSED: (),
}


@dataclass(frozen=True)
class StatusChange:
    """A requested lifecycle change of one facility."""

    member_state: str
    current: str
    target: str
    before_suspension: str | None = None  # the status a suspended facility was in
    agreement_signed_on: date | None = None
    agreement_reference: str | None = None
    effective_on: date | None = None
    today: date | None = None


def check_status_change(c: StatusChange) -> list[Reason]:
    """L-8: only the lifecycle's steps; signing needs its date and reference; no date in the future."""
    ms = c.member_state
    if c.target not in STATUSES:
        return [Reason(ms, L8, f"unknown facility status {c.target!r}; one of {', '.join(STATUSES)}")]
    reasons: list[Reason] = []
    if c.target == c.current:
        reasons.append(Reason(ms, L8, f"the {ms} facility is already {c.current}"))
    elif c.target not in _NEXT.get(c.current, ()):
        allowed = ", ".join(_NEXT.get(c.current, ())) or "nothing (closed is final)"
        reasons.append(Reason(ms, L8, f"the {ms} facility cannot go from {c.current} to {c.target}; "
                                      f"from {c.current} it may go to {allowed}"))
    elif c.current == SUSPENDED and c.target != CLOSED and c.target != (c.before_suspension or DECIDED):
        reasons.append(Reason(ms, L8, f"the {ms} facility was {c.before_suspension or DECIDED} when suspended: "
                                      f"reinstating returns it there, not to {c.target}"))
    if c.target == SIGNED and c.current != SUSPENDED:
        if c.agreement_signed_on is None or not (c.agreement_reference or "").strip():
            reasons.append(Reason(ms, L8, "signing the loan agreement (SAFE Art. 10) needs agreement_signed_on "
                                          "and agreement_reference"))
    for what, day in (("agreement_signed_on", c.agreement_signed_on), ("effective_on", c.effective_on)):
        if day is not None and c.today is not None and day > c.today:
            reasons.append(Reason(ms, L8, f"{what} {day.isoformat()} is in the future (today {c.today.isoformat()})"))
    return reasons


def lends(status: str, loans_from: str) -> bool:
    """Whether a facility in `status` may approve loans; `loans_from` is the setting (decided | agreement_signed)."""
    return status == SIGNED or (status == DECIDED and loans_from == DECIDED)


def loan_status_reason(member_state: str, status: str, loans_from: str) -> Reason | None:
    """L-8 for a loan decision (a suspended facility is L-5's, not this rule's)."""
    if status == SUSPENDED or lends(status, loans_from):
        return None
    need = "a Council implementing decision (decided)" if loans_from == DECIDED else "a signed loan agreement"
    what = {PENDING: "has no Council implementing decision yet (pending)",
            DECIDED: "has a Council decision but no signed loan agreement yet",
            CLOSED: "is closed"}.get(status, f"is {status}")
    return Reason(member_state, L8, f"the {member_state} facility {what}: loans are approved only with {need}")


def payment_status_reason(member_state: str, status: str) -> Reason | None:
    """L-8 for a payment: pre-financing and instalments are paid only under a signed loan agreement."""
    if status in (SIGNED, SUSPENDED):  # suspended: L-5 says it
        return None
    what = {PENDING: "has no Council implementing decision yet", DECIDED: "has no signed loan agreement yet",
            CLOSED: "is closed"}.get(status, f"is {status}")
    return Reason(member_state, L8, f"the {member_state} facility {what}: pre-financing and instalments are paid "
                                    "only under a signed loan agreement (SAFE Art. 10)")


def amount_assumption(member_state: str, confidence: str, max_eur: Decimal, source: str) -> str | None:
    """L-8: the words every decision carries when the facility's maximum is not an official (Council) figure."""
    if confidence == "official":
        return None
    return (f"L-8: the {member_state} facility maximum EUR {fmt(max_eur)} is {confidence}, not a confirmed Council "
            f"figure (source: {source or 'not given'})")


# --- L-9: pre-financing is an advance on the loans -----------------------------------------------------------


@dataclass(frozen=True)
class Advances:
    """One Member State's money paid out against its approved loans, read under the facility lock."""

    member_state: str
    approved: Decimal  # reservations − releases
    pre_financing: Decimal  # paid
    instalments: Decimal  # paid
    cleared: Decimal = ZERO  # pre-financing already cleared against instalments

    @property
    def uncleared(self) -> Decimal:
        return self.pre_financing - self.cleared

    @property
    def paid(self) -> Decimal:
        return self.pre_financing + self.instalments


def check_advance(a: Advances, *, pre_financing: Decimal = ZERO, instalment: Decimal = ZERO) -> list[Reason]:
    """L-9: pre-financing + instalments paid never exceed the loans approved (with this payment added)."""
    exact(pre_financing)
    exact(instalment)
    total = a.paid + pre_financing + instalment
    if total <= exact(a.approved, "approved"):
        return []
    this = "pre-financing" if pre_financing else "instalment"
    return [Reason(a.member_state, L9, f"pre-financing EUR {fmt(a.pre_financing)} + instalments EUR "
                                       f"{fmt(a.instalments)} + this {this} EUR {fmt(pre_financing + instalment)} = "
                                       f"EUR {fmt(total)} exceeds the loans approved for {a.member_state} "
                                       f"EUR {fmt(a.approved)} (pre-financing is an advance on the loans, not extra "
                                       f"money: at most EUR {fmt(max(a.approved - a.paid, ZERO))} more can be paid)")]


@dataclass(frozen=True)
class Clearing:
    """How an instalment on one loan is covered: first the uncleared pre-financing, then cash."""

    cleared: Decimal  # pre-financing cleared against the loan with this instalment
    reasons: tuple[Reason, ...]


def clear_instalment(a: Advances, *, loan_amount: Decimal, loan_instalments: Decimal, loan_cleared: Decimal,
                     amount: Decimal) -> Clearing:
    """L-9 per loan: the pre-financing not yet cleared is cleared against the loan first (up to what the loan has
    left); the instalment paid in cash must fit in what remains. The Member State total is `check_advance`'s."""
    exact(amount)
    left = exact(loan_amount, "loan_amount") - loan_instalments - loan_cleared
    cleared = min(max(a.uncleared, ZERO), max(left, ZERO))
    reasons = check_advance(a, instalment=amount)
    if not reasons and amount > left - cleared:
        reasons = [Reason(a.member_state, L9, f"loan EUR {fmt(loan_amount)} has EUR {fmt(left)} left; EUR "
                                              f"{fmt(cleared)} of it is covered by pre-financing paid in advance "
                                              f"(cleared now), so at most EUR {fmt(left - cleared)} can be paid as an "
                                              f"instalment, not EUR {fmt(amount)}")]
    return Clearing(cleared if not reasons else ZERO, tuple(reasons))


def check_release(a: Advances, released: Decimal) -> Reason | None:
    """L-9 on a withdrawal: releasing `released` must leave the loans approved ≥ what was paid out."""
    if a.approved - exact(released) >= a.paid:
        return None
    return Reason(a.member_state, L9, f"releasing EUR {fmt(released)} would leave loans approved EUR "
                                      f"{fmt(a.approved - released)} below what was paid out (pre-financing EUR "
                                      f"{fmt(a.pre_financing)} + instalments EUR {fmt(a.instalments)}): the loans "
                                      "stay reserved until the money is recovered")


# --- L-10 ----------------------------------------------------------------------------------------------------


def check_envelope(member_state: str, new_max: Decimal, maxima: Mapping[str, Decimal],
                   envelope: Decimal = ENVELOPE_EUR) -> list[Reason]:
    """L-10: the maxima of all facilities (this one at `new_max`) stay within the SAFE envelope."""
    others = sum((exact(v, f"{ms} max_eur") for ms, v in maxima.items() if ms != member_state), ZERO)
    total = others + exact(new_max, "max_eur")
    if total <= envelope:
        return []
    return [Reason(member_state, L10, f"the maxima of all facilities would total EUR {fmt(total)} (the other "
                                      f"facilities EUR {fmt(others)} + {member_state} EUR {fmt(new_max)}), above the "
                                      f"SAFE envelope EUR {fmt(envelope)} (Art. 5): at most EUR "
                                      f"{fmt(envelope - others)} for {member_state}")]
