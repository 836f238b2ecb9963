"""The loan rules of docs/safe-rules.md §8 (L-1..L-5) and the investment-plan rule (PLAN), as pure functions.

Every function takes exact Decimals (a float raises TypeError before anything is compared) and returns
the reasons it refuses, in words; an empty list means the request passes. Nothing here touches storage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from safe_procurement.services.loan_disbursement.domain import lifecycle
from safe_procurement.services.loan_disbursement.domain.money import (
    ZERO,
    cents_floor,
    exact,
    fmt,
    in_cents,
    pct,
    share_of,
)
from safe_procurement.services.loan_disbursement.domain.reasons import Reason

L1, L2, L3, L4, L5, L6, L7, L8, PLAN = "L-1", "L-2", "L-3", "L-4", "L-5", "L-6", "L-7", "L-8", "PLAN"
ELIGIBLE = "eligible"


@dataclass(frozen=True)
class FacilityState:
    """What a loan decision needs to know about one facility, as of now (under its lock)."""

    member_state: str
    max_eur: Decimal
    approved_eur: Decimal
    suspended: bool = False
    suspended_reason: str | None = None
    # investment plan: remaining amount per category (line amount − what approved loans drew from it)
    plan: Mapping[str, Decimal] = field(default_factory=dict)
    # L-8: lifecycle status; the confidence of the maximum (not official: the decision says so) and its source
    status: str = "decided"
    confidence: str = "official"
    source: str = ""


@dataclass(frozen=True)
class RequestedLine:
    member_state: str
    amount_eur: Decimal


@dataclass(frozen=True)
class LoanDecision:
    approved: bool
    reasons: tuple[Reason, ...]
    # when approved: per Member State, what each plan line gives to the loan (category → amount)
    plan_draws: Mapping[str, Mapping[str, Decimal]]
    # every assumption the decision used (a tentative facility amount, the L-7 basis), in words
    assumptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class FinancingCap:
    """L-7: what the financing of a procurement may total, and what that figure is."""

    amount: Decimal
    basis: str  # "contract value" | "end products' component cost"
    assumption: str | None = None  # the words naming the assumption, when the basis is one


def _suspended(f: FacilityState, what: str) -> Reason:
    why = f" ({f.suspended_reason})" if f.suspended_reason else ""
    return Reason(f.member_state, L5, f"the {f.member_state} facility is suspended{why}: it {what} nothing until reinstated")


def plan_draws(plan: Mapping[str, Decimal], categories: Sequence[str], amount: Decimal) -> dict[str, Decimal] | None:
    """Allocate `amount` over the plan lines of `categories` (sorted, each up to what it has left);
    None when the lines together have less than `amount` left."""
    left = exact(amount)
    draws: dict[str, Decimal] = {}
    for cat in sorted(set(categories)):
        if left <= 0:
            break
        take = min(exact(plan.get(cat, ZERO), "plan line"), left)
        if take > 0:
            draws[cat] = take
            left -= take
    return draws if left <= 0 else None


@dataclass(frozen=True)
class _Request:
    """What every line of one loan request is checked against."""

    verification_outcome: str
    categories: tuple[str, ...]  # sorted, without repeats
    eu_member_states: Collection[str]
    participants: frozenset[str] | None
    loans_from: str


@dataclass
class _LineCheck:
    """One line's refusals, the assumption its facility's maximum rests on, and its plan draws when it passes."""

    reasons: list[Reason] = field(default_factory=list)
    assumption: str | None = None
    draws: dict[str, Decimal] | None = None


def decide_loan_request(
    *,
    lines: Sequence[RequestedLine],
    verification_outcome: str,
    categories: Sequence[str],
    facilities: Mapping[str, FacilityState],
    eu_member_states: Collection[str],
    withdrawn_reason: str | None = None,
    participants: Collection[str] | None = None,
    financing_cap: FinancingCap | None = None,
    loans_from: str = "decided",
) -> LoanDecision:
    """All or nothing: every line must pass L-1, L-2, L-5..L-8 and PLAN; any failure rejects the whole case.

    `participants` None: L-6 not checked (older events); `financing_cap` None: L-7 not checked."""

    for line in lines:
        exact(line.amount_eur, f"{line.member_state} amount_eur")
    reasons: list[Reason] = [] if lines else [Reason("", L1, "the request names no financing line")]
    if withdrawn_reason is not None:
        return LoanDecision(False, _withdrawn(lines, withdrawn_reason) or tuple(reasons), {})
    assumptions: list[str] = []
    if financing_cap is not None:
        if financing_cap.assumption:
            assumptions.append(financing_cap.assumption)
        reasons += _over_financing_cap(lines, financing_cap)
    request = _Request(verification_outcome, tuple(sorted(set(categories))), eu_member_states,
                       None if participants is None else frozenset(participants), loans_from)
    repeats = Counter(line.member_state for line in lines)
    draws: dict[str, dict[str, Decimal]] = {}
    for line in lines:
        check = _check_line(line, repeats[line.member_state], facilities.get(line.member_state), request)
        reasons += check.reasons
        assumptions += [check.assumption] if check.assumption else []
        if check.draws is not None:
            draws[line.member_state] = check.draws
    approved = not reasons
    return LoanDecision(approved, tuple(reasons), draws if approved else {}, tuple(assumptions))


def _withdrawn(lines: Sequence[RequestedLine], why: str) -> tuple[Reason, ...]:
    """L-1: a withdrawn case gets no loan, whatever its lines."""
    return tuple(Reason(line.member_state, L1, f"case withdrawn before the loan decision ({why})") for line in lines)


def _over_financing_cap(lines: Sequence[RequestedLine], cap: FinancingCap) -> list[Reason]:
    """L-7: the lines together may not finance more than the procurement costs."""
    asked = sum((line.amount_eur for line in lines), ZERO)
    if asked <= exact(cap.amount, "financing cap"):
        return []
    return [Reason("", L7, f"the financing asked, EUR {fmt(asked)} over {len(lines)} line(s), is more than the "
                           f"procurement's {cap.basis} EUR {fmt(cap.amount)}: a loan cannot finance more than the "
                           "procurement costs")]


def _check_line(line: RequestedLine, repeats: int, f: FacilityState | None, request: _Request) -> _LineCheck:
    """One financing line through the rules, in order; a line that fails L-1 or L-2 on its own is not checked further."""
    ms, amount = line.member_state, line.amount_eur
    unfit = _repeated(ms, repeats) or _not_in_cents(ms, amount) or _not_eu(ms, request.eu_member_states)
    if unfit:
        return _LineCheck([unfit])
    check = _LineCheck([r for r in (_not_participant(ms, request.participants),) if r])
    if f is None:
        check.reasons.append(Reason(ms, L1, f"{ms} has no SAFE loan facility, so it cannot borrow"))
        return check
    check.assumption = lifecycle.amount_assumption(ms, f.confidence, f.max_eur, f.source)
    over_max = _over_maximum(f, amount)
    check.reasons += [r for r in (lifecycle.loan_status_reason(ms, f.status, request.loans_from),
                                  _not_eligible(ms, request.verification_outcome),
                                  _suspended(f, "approves and pays") if f.suspended else None,
                                  over_max) if r]
    plan_refusal, check.draws = _plan_cover(f, request.categories, amount, over_max is not None)
    if plan_refusal:
        check.reasons.append(plan_refusal)
    return check


def _repeated(ms: str, repeats: int) -> Reason | None:
    """L-2: one financing line per Member State."""
    if repeats > 1:
        return Reason(ms, L2, f"{ms} is requested {repeats} times; one financing line per Member State")
    return None


def _not_in_cents(ms: str, amount: Decimal) -> Reason | None:
    """L-2: a positive amount in whole cents."""
    if amount <= 0 or not in_cents(amount):
        return Reason(ms, L2, f"requested amount {amount} is not a positive amount in whole cents")
    return None


def _not_eu(ms: str, eu_member_states: Collection[str]) -> Reason | None:
    """L-1: only EU Member States borrow."""
    if ms not in eu_member_states:
        return Reason(ms, L1, f"{ms} is not an EU Member State: only EU Member States borrow under SAFE")
    return None


def _not_participant(ms: str, participants: frozenset[str] | None) -> Reason | None:
    """L-6: the borrower takes part in the procurement it finances (None: not checked)."""
    if participants is not None and ms not in participants:
        return Reason(ms, L6, f"{ms} finances this procurement but does not take part in it "
                              f"(participants: {', '.join(sorted(participants)) or 'none'}): a SAFE loan "
                              "finances only a common procurement its borrower is part of")
    return None


def _not_eligible(ms: str, verification_outcome: str) -> Reason | None:
    """L-1: only an origin-verified eligible procurement is financed."""
    if verification_outcome != ELIGIBLE:
        return Reason(ms, L1, "the procurement is not origin-verified as eligible "
                              f"(verification outcome: {verification_outcome})")
    return None


def _over_maximum(f: FacilityState, amount: Decimal) -> Reason | None:
    """L-2: approved loans plus this one stay within the facility maximum."""
    exact(f.max_eur, "max_eur")
    total = exact(f.approved_eur, "approved_eur") + amount
    if total <= f.max_eur:
        return None
    ms, available = f.member_state, f.max_eur - f.approved_eur
    return Reason(ms, L2, f"approved EUR {fmt(f.approved_eur)} + requested EUR {fmt(amount)} = EUR {fmt(total)} "
                          f"exceeds the {ms} facility maximum EUR {fmt(f.max_eur)} (available EUR {fmt(available)})")


def _plan_cover(f: FacilityState, cats: tuple[str, ...], amount: Decimal,
                over_max: bool) -> tuple[Reason | None, dict[str, Decimal] | None]:
    """PLAN: the investment plan covers every category and has `amount` left over them: the draws, or why not."""
    ms = f.member_state
    missing = [c for c in cats if c not in f.plan]
    if not cats:
        return Reason(ms, PLAN, "the procurement names no product category for the investment plan to cover"), None
    if missing:
        return Reason(ms, PLAN, f"the investment plan of {ms} does not cover {', '.join(missing)}; "
                                "an operator must amend the plan first"), None
    got = plan_draws(f.plan, cats, amount)
    if got is not None:
        return None, got
    if over_max:  # the facility maximum is the binding limit: L-2 says it; the plan amount would only repeat it
        return None, None
    left = sum((f.plan[c] for c in cats), ZERO)
    return Reason(ms, PLAN, f"requested EUR {fmt(amount)} exceeds what the investment plan of {ms} "
                            f"has left for {', '.join(cats)}: EUR {fmt(left)}"), None


def pre_financing_cap(max_eur: Decimal, configured: Decimal | None, share: Decimal) -> Decimal:
    """L-3: the configured pre-financing, never above `share` (15 %) of the facility; unconfirmed → the share."""
    legal = share_of(max_eur, share)
    return legal if configured is None else min(exact(configured, "pre_financing_eur"), legal)


def _deadline(ms: str, requested_on: date, last_request_on: date, what: str) -> Reason | None:
    if requested_on > last_request_on:
        return Reason(ms, L4, f"{what} requests close on {last_request_on.isoformat()}; "
                              f"this one is dated {requested_on.isoformat()}")
    return None


def check_pre_financing(
    *,
    member_state: str,
    max_eur: Decimal,
    configured: Decimal | None,
    paid_eur: Decimal,
    amount: Decimal,
    requested_on: date,
    last_request_on: date,
    suspended: bool,
    suspended_reason: str | None = None,
    share: Decimal = Decimal("0.15"),
    status: str = lifecycle.SIGNED,
) -> list[Reason]:
    """L-3 (cumulative pre-financing ≤ the cap), L-4 (date), L-5 (suspension), L-8 (a signed agreement)."""
    exact(amount)
    reasons: list[Reason] = []
    unsigned = lifecycle.payment_status_reason(member_state, status)
    if unsigned:
        reasons.append(unsigned)
    cap = pre_financing_cap(max_eur, configured, share)
    total = exact(paid_eur, "paid_eur") + amount
    if configured is not None and configured == 0:
        reasons.append(Reason(member_state, L3, f"the Council decision grants {member_state} no pre-financing"))
    elif total > cap:
        reasons.append(Reason(member_state, L3, f"pre-financing would total EUR {fmt(total)}, above the cap EUR "
                                                f"{fmt(cents_floor(cap))} ({pct(share)} of the facility EUR {fmt(max_eur)}"
                                                + (f", Council figure EUR {fmt(configured)}" if configured is not None
                                                   else "; Council figure unconfirmed") + ")"))
    late = _deadline(member_state, requested_on, last_request_on, "pre-financing")
    if late:
        reasons.append(late)
    if suspended:
        reasons.append(_suspended(FacilityState(member_state, max_eur, ZERO, True, suspended_reason), "pays"))
    return reasons


def check_instalment(
    *,
    member_state: str,
    loan_amount: Decimal,
    paid_eur: Decimal,
    amount: Decimal,
    requested_on: date,
    last_request_on: date,
    suspended: bool,
    suspended_reason: str | None = None,
    loan_active: bool = True,
    status: str = lifecycle.SIGNED,
) -> list[Reason]:
    """L-3 (cumulative instalments ≤ the approved loan), L-4 (date), L-5 (suspension), L-8 (a signed agreement)."""
    exact(amount)
    reasons: list[Reason] = []
    unsigned = lifecycle.payment_status_reason(member_state, status)
    if unsigned:
        reasons.append(unsigned)
    total = exact(paid_eur, "paid_eur") + amount
    if not loan_active:
        reasons.append(Reason(member_state, L3, "the loan's reservation was released (case withdrawn): "
                                                "nothing more can be paid on it"))
    elif total > exact(loan_amount, "loan_amount"):
        reasons.append(Reason(member_state, L3, f"instalments would total EUR {fmt(total)}, above the approved loan "
                                                f"EUR {fmt(loan_amount)} (EUR {fmt(loan_amount - paid_eur)} left)"))
    late = _deadline(member_state, requested_on, last_request_on, "instalment")
    if late:
        reasons.append(late)
    if suspended:
        reasons.append(_suspended(FacilityState(member_state, loan_amount, ZERO, True, suspended_reason), "pays"))
    return reasons


def check_facility_update(
    *,
    member_state: str,
    max_eur: Decimal,
    pre_financing_eur: Decimal | None,
    approved_eur: Decimal,
    pre_financing_paid_eur: Decimal,
    share: Decimal = Decimal("0.15"),
) -> list[Reason]:
    """A new maximum may not fall below what is approved (L-2); pre-financing stays ≤ 15 % of it and ≥ what is paid (L-3)."""
    exact(max_eur, "max_eur")
    reasons: list[Reason] = []
    if max_eur < exact(approved_eur, "approved_eur"):
        reasons.append(Reason(member_state, L2, f"the maximum EUR {fmt(max_eur)} would fall below the approved "
                                                f"loans EUR {fmt(approved_eur)}"))
    if pre_financing_eur is not None:
        legal = share_of(max_eur, share)
        if exact(pre_financing_eur, "pre_financing_eur") > legal:
            reasons.append(Reason(member_state, L3, f"pre-financing EUR {fmt(pre_financing_eur)} exceeds {pct(share)} "
                                                    f"of the maximum (EUR {fmt(cents_floor(legal))})"))
        if pre_financing_eur < pre_financing_paid_eur:
            reasons.append(Reason(member_state, L3, f"pre-financing EUR {fmt(pre_financing_eur)} is below what is "
                                                    f"already paid (EUR {fmt(pre_financing_paid_eur)})"))
    elif share_of(max_eur, share) < pre_financing_paid_eur:
        reasons.append(Reason(member_state, L3, f"{pct(share)} of the maximum is below the pre-financing already "
                                                f"paid (EUR {fmt(pre_financing_paid_eur)})"))
    return reasons
