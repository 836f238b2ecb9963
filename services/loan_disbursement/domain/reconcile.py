"""Reconciliation: the balances recomputed from the ledger, compared with the loans and with the running
totals the database keeps (facility balances, plan lines drawn). Pure comparison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from safe_procurement.services.loan_disbursement.domain.money import ZERO
from safe_procurement.services.loan_disbursement.domain.rules import pre_financing_cap

KINDS = ("reservation", "release", "pre_financing", "instalment")


@dataclass(frozen=True, kw_only=True)
class Balance:
    """A facility's money by kind of ledger entry: summed from the ledger, or as its running totals store it."""

    reserved: Decimal = ZERO
    released: Decimal = ZERO
    pre_financing: Decimal = ZERO
    instalments: Decimal = ZERO

    @property
    def approved(self) -> Decimal:
        return self.reserved - self.released

    @property
    def disbursed(self) -> Decimal:
        return self.pre_financing + self.instalments

    @classmethod
    def of(cls, facility: Any) -> Balance:
        """The running totals on a facility row (read them under its lock, from a fresh SELECT)."""
        return cls(reserved=facility.reserved_eur, released=facility.released_eur,
                   pre_financing=facility.pre_financing_paid_eur, instalments=facility.instalments_paid_eur)


@dataclass(frozen=True)
class FacilityBooks(Balance):
    """A facility's limits and its balance summed from the ledger, beside its loans and stored running totals."""

    member_state: str
    max_eur: Decimal
    pre_financing_eur: Decimal | None
    active_loans: Decimal = ZERO  # Σ amount of the loans with status "active"
    totals: Balance | None = None  # the stored running totals; None: not checked
    cleared: Decimal = ZERO  # pre-financing cleared against the loans (L-9)


@dataclass(frozen=True)
class PlanLineBooks:
    """One (Member State, category): Σ of what active loans drew (plan_draws) vs. the stored running total."""

    member_state: str
    category: str
    drawn: Decimal = ZERO
    total: Decimal = ZERO


@dataclass(frozen=True)
class LoanBooks:
    loan_id: str
    member_state: str
    amount: Decimal
    status: str
    reservations: int = 0
    reserved: Decimal = ZERO
    releases: int = 0
    released: Decimal = ZERO
    instalments: Decimal = ZERO
    cleared: Decimal = ZERO  # pre-financing cleared against the loan (L-9)


@dataclass(frozen=True)
class Difference:
    member_state: str
    check: str
    message: str
    expected: str | None = None
    actual: str | None = None


@dataclass
class Report:
    checked_at: datetime
    facilities: list[FacilityBooks] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_at": self.checked_at.isoformat(),
            "facilities": [
                {"member_state": f.member_state, "max_eur": str(f.max_eur), "reserved_eur": str(f.reserved),
                 "released_eur": str(f.released), "approved_eur": str(f.approved),
                 "active_loans_eur": str(f.active_loans), "pre_financing_paid_eur": str(f.pre_financing),
                 "instalments_paid_eur": str(f.instalments), "disbursed_eur": str(f.disbursed),
                 "available_eur": str(f.max_eur - f.approved)}
                for f in self.facilities
            ],
            "differences": [d.__dict__ for d in self.differences],
        }

    def text(self) -> str:
        lines = [f"ledger check at {self.checked_at.isoformat()}: {len(self.facilities)} facilities, "
                 + ("no difference" if self.ok else f"{len(self.differences)} difference(s)")]
        for d in self.differences:
            extra = f" (expected {d.expected}, found {d.actual})" if d.expected is not None else ""
            lines.append(f"  {d.member_state or '-'} {d.check}: {d.message}{extra}")
        return "\n".join(lines)


def compare(
    *,
    checked_at: datetime,
    facilities: Sequence[FacilityBooks],
    loans: Sequence[LoanBooks],
    orphans: Sequence[Difference] = (),
    pre_financing_share: Decimal = Decimal("0.15"),
    plan_lines: Sequence[PlanLineBooks] = (),
) -> Report:
    """Every difference between the ledger and the loans, between the ledger and the running totals, and every
    broken invariant (L-2, L-3)."""
    out: list[Difference] = list(orphans)
    for f in facilities:
        out += _running_totals(f)
        out += _facility_invariants(f, pre_financing_share)
    for loan in loans:
        out += _loan_invariants(loan)
    out += [d for d in map(_plan_line_total, plan_lines) if d]
    return Report(checked_at=checked_at, facilities=list(facilities), differences=out)


def _running_totals(f: FacilityBooks) -> list[Difference]:
    """Each stored running total equals the sum of its kind of ledger entry (None: not checked)."""
    if f.totals is None:
        return []
    return [Difference(f.member_state, "running_total_matches_ledger", f"the running total {name} differs from the "
                       f"sum of the {kind} entries in the ledger", str(summed), str(stored))
            for name, kind, summed, stored in (
                ("reserved", "reservation", f.reserved, f.totals.reserved),
                ("released", "release", f.released, f.totals.released),
                ("pre_financing", "pre_financing", f.pre_financing, f.totals.pre_financing),
                ("instalments", "instalment", f.instalments, f.totals.instalments),
            ) if stored != summed]


def _facility_invariants(f: FacilityBooks, pre_financing_share: Decimal) -> list[Difference]:
    """A facility's ledger against its loans and its limits (L-2, L-3, L-9)."""
    ms = f.member_state
    out: list[Difference] = []
    if f.active_loans != f.approved:
        out.append(Difference(ms, "approved_matches_loans", "active approved loans differ from reservations − "
                              "releases in the ledger", str(f.active_loans), str(f.approved)))
    if f.approved > f.max_eur:
        out.append(Difference(ms, "approved_within_max", "approved loans exceed the facility maximum (L-2)",
                              f"<= {f.max_eur}", str(f.approved)))
    if f.approved < 0:
        out.append(Difference(ms, "approved_not_negative", "more released than reserved", ">= 0", str(f.approved)))
    if f.instalments > f.approved:
        out.append(Difference(ms, "disbursed_within_approved", "instalments paid exceed the approved loans (L-3)",
                              f"<= {f.approved}", str(f.instalments)))
    cap = pre_financing_cap(f.max_eur, f.pre_financing_eur, pre_financing_share)
    if f.pre_financing > cap:
        out.append(Difference(ms, "pre_financing_within_cap", "pre-financing paid exceeds its cap (L-3)",
                              f"<= {cap}", str(f.pre_financing)))
    if f.disbursed > f.approved:
        out.append(Difference(ms, "advances_within_approved", "L-9 broken: pre-financing + instalments paid exceed "
                              "the loans approved (pre-financing is an advance on the loans, not extra money)",
                              f"<= {f.approved}", str(f.disbursed)))
    if f.cleared > f.pre_financing or f.cleared < 0:
        out.append(Difference(ms, "cleared_within_pre_financing", "L-9 broken: more pre-financing cleared against "
                              "loans than was paid", f"0 <= … <= {f.pre_financing}", str(f.cleared)))
    if f.disbursed > f.max_eur:
        out.append(Difference(ms, "disbursed_within_max", "pre-financing + instalments exceed the facility maximum",
                              f"<= {f.max_eur}", str(f.disbursed)))
    return out


def _loan_invariants(loan: LoanBooks) -> list[Difference]:
    """A loan's ledger entries against its amount and status (L-3, L-9)."""
    ms = loan.member_state
    out: list[Difference] = []
    if loan.reservations != 1 or loan.reserved != loan.amount:
        out.append(Difference(ms, "loan_reserved_once", f"loan {loan.loan_id} must have exactly one reservation "
                              "of its amount", f"1 × {loan.amount}", f"{loan.reservations} × … = {loan.reserved}"))
    expected_released = loan.amount if loan.status == "released" else ZERO
    expected_count = 1 if loan.status == "released" else 0
    if loan.releases != expected_count or loan.released != expected_released:
        out.append(Difference(ms, "loan_released_once", f"loan {loan.loan_id} ({loan.status}) release entries "
                              "do not match its status", f"{expected_count} × {expected_released}",
                              f"{loan.releases} × … = {loan.released}"))
    if loan.instalments + loan.cleared > loan.amount:
        out.append(Difference(ms, "loan_advances_within_amount", f"L-9 broken: loan {loan.loan_id}: instalments + "
                              "pre-financing cleared against it exceed the loan", f"<= {loan.amount}",
                              str(loan.instalments + loan.cleared)))
    if loan.instalments > loan.amount:
        out.append(Difference(ms, "loan_instalments_within_amount", f"loan {loan.loan_id}: instalments exceed "
                              "the loan (L-3)", f"<= {loan.amount}", str(loan.instalments)))
    return out


def _plan_line_total(line: PlanLineBooks) -> Difference | None:
    """The stored total drawn from a plan line equals the sum of the active loans' draws on it."""
    if line.total == line.drawn:
        return None
    return Difference(line.member_state, "plan_drawn_total_matches_draws", f"the running total drawn from the "
                      f"{line.category} plan line differs from the sum of the active loans' draws",
                      str(line.drawn), str(line.total))
