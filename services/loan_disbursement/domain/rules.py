"""The loan rules of docs/safe-rules.md §8 (L-1..L-5) and the investment-plan rule (PLAN), as pure functions.

Every function takes exact Decimals (a float raises TypeError before anything is compared) and returns
the reasons it refuses, in words; an empty list means the request passes. Nothing here touches storage.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from services.loan_disbursement.domain import lifecycle
from services.loan_disbursement.domain.money import ZERO, cents_floor, exact, fmt, in_cents, pct, share_of
from services.loan_disbursement.domain.reasons import Reason

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
    reasons: list[Reason] = []
    if not lines:
        reasons.append(Reason("", L1, "the request names no financing line"))
    if withdrawn_reason is not None:
        return LoanDecision(False, tuple(
            Reason(line.member_state, L1, f"case withdrawn before the loan decision ({withdrawn_reason})")
            for line in lines
        ) or tuple(reasons), {})
    assumptions: list[str] = []
    if financing_cap is not None:
        if financing_cap.assumption:
            assumptions.append(financing_cap.assumption)
        asked = sum((line.amount_eur for line in lines), ZERO)
        if asked > exact(financing_cap.amount, "financing cap"):
            reasons.append(Reason("", L7, f"the financing asked, EUR {fmt(asked)} over {len(lines)} line(s), is more "
                                          f"than the procurement's {financing_cap.basis} EUR "
                                          f"{fmt(financing_cap.amount)}: a loan cannot finance more than the "
                                          "procurement costs"))
    taking_part = None if participants is None else set(participants)
    counts: dict[str, int] = {}
    for line in lines:
        counts[line.member_state] = counts.get(line.member_state, 0) + 1
    draws: dict[str, dict[str, Decimal]] = {}
    for line in lines:
        ms, amount = line.member_state, line.amount_eur
        if counts[ms] > 1:
            reasons.append(Reason(ms, L2, f"{ms} is requested {counts[ms]} times; one financing line per Member State"))
            continue
        if amount <= 0 or not in_cents(amount):
            reasons.append(Reason(ms, L2, f"requested amount {amount} is not a positive amount in whole cents"))
            continue
        if ms not in eu_member_states:
            reasons.append(Reason(ms, L1, f"{ms} is not an EU Member State: only EU Member States borrow under SAFE"))
            continue
        if taking_part is not None and ms not in taking_part:
            reasons.append(Reason(ms, L6, f"{ms} finances this procurement but does not take part in it "
                                          f"(participants: {', '.join(sorted(taking_part)) or 'none'}): a SAFE loan "
                                          "finances only a common procurement its borrower is part of"))
        f = facilities.get(ms)
        if f is None:
            reasons.append(Reason(ms, L1, f"{ms} has no SAFE loan facility, so it cannot borrow"))
            continue
        note = lifecycle.amount_assumption(ms, f.confidence, f.max_eur, f.source)
        if note:
            assumptions.append(note)
        not_lending = lifecycle.loan_status_reason(ms, f.status, loans_from)
        if not_lending:
            reasons.append(not_lending)
        if verification_outcome != ELIGIBLE:
            reasons.append(Reason(ms, L1, "the procurement is not origin-verified as eligible "
                                          f"(verification outcome: {verification_outcome})"))
        if f.suspended:
            reasons.append(_suspended(f, "approves and pays"))
        exact(f.max_eur, "max_eur")
        total = exact(f.approved_eur, "approved_eur") + amount
        over_max = total > f.max_eur
        if over_max:
            available = f.max_eur - f.approved_eur
            reasons.append(Reason(ms, L2, f"approved EUR {fmt(f.approved_eur)} + requested EUR {fmt(amount)} = "
                                          f"EUR {fmt(total)} exceeds the {ms} facility maximum EUR {fmt(f.max_eur)} "
                                          f"(available EUR {fmt(available)})"))
        cats = sorted(set(categories))
        missing = [c for c in cats if c not in f.plan]
        if not cats:
            reasons.append(Reason(ms, PLAN, "the procurement names no product category for the investment plan to cover"))
        elif missing:
            reasons.append(Reason(ms, PLAN, f"the investment plan of {ms} does not cover {', '.join(missing)}; "
                                            "an operator must amend the plan first"))
        else:
            got = plan_draws(f.plan, cats, amount)
            if got is None and over_max:
                pass  # the facility maximum is the binding limit: L-2 says it; the plan amount would only repeat it
            elif got is None:
                left = sum((f.plan[c] for c in cats), ZERO)
                reasons.append(Reason(ms, PLAN, f"requested EUR {fmt(amount)} exceeds what the investment plan of {ms} "
                                                f"has left for {', '.join(cats)}: EUR {fmt(left)}"))
            else:
                draws[ms] = got
    approved = not reasons
    return LoanDecision(approved, tuple(reasons), draws if approved else {}, tuple(assumptions))


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
