"""The engine: every rule over one proposal, then the outcome. `verify` is the one entrypoint (a plain
function: time it, call it from tests, replay it with the reference data of any date)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, DivisionByZero, InvalidOperation, Overflow, localcontext

from safe_procurement.services.origin_verification.domain.area import Area
from safe_procurement.services.origin_verification.domain.model import (
    Outcome,
    ProposalLike,
    RuleFinding,
    Verdict,
)
from safe_procurement.services.origin_verification.domain.reference import ReferenceData
from safe_procurement.services.origin_verification.domain.rulebook import RuleSet
from safe_procurement.services.origin_verification.domain.rules import (
    assess_end_product,
    r_con_1,
    r_con_2_3,
    r_con_4,
    r_con_5,
    r_des_1,
    r_orig_2,
    r_part_1,
    r_part_2,
    r_part_3,
    r_part_4,
)

RULE_ORDER = ("R-PART-1", "R-PART-2", "R-PART-3", "R-PART-4", "R-PART-5", "R-CON-1", "R-CON-2", "R-CON-3", "R-CON-4", "R-CON-5",
              "R-ORIG-1", "R-ORIG-2", "R-ORIG-3", "R-ORIG-4", "R-ORIG-5", "R-DES-1")
_RANK = {r: i for i, r in enumerate(RULE_ORDER)}

# Sums and products of amounts (2 places, ≤ 10^15 each, ≤ 50 000 of them) times shares (≤ 10 places) need
# about 35 significant digits; 80 keeps every addition and multiplication exact. Only the displayed share
# is ever rounded.
EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])


def decide(findings: Iterable[RuleFinding]) -> tuple[Outcome, tuple[str, ...]]:
    """Any failed rule → ineligible; else anything undecided → needs_review (naming what is missing)."""
    findings = list(findings)
    if any(f.passed is False for f in findings):
        return "ineligible", ()
    undecided = [f for f in findings if f.passed is None]
    if undecided:
        missing: dict[str, None] = {}
        for f in undecided:
            for m in f.missing or (f"{f.rule}: {f.message}",):
                missing[m] = None
        return "needs_review", tuple(missing)
    return "eligible", ()


def verify(proposal: ProposalLike, reference: ReferenceData, rules: RuleSet, *, checked_at: datetime) -> Verdict:
    """Decide one proposal against `rules` and the reference data in force on its contract_signed_on."""
    with localcontext(EXACT):
        area = Area(reference, rules, proposal.contract_signed_on)
        findings: list[RuleFinding] = [r_part_1(proposal, area), *r_part_2(proposal, area)]
        part_3 = r_part_3(proposal, area)
        if part_3 is not None:
            findings.append(part_3)
        findings.append(r_part_4(proposal, area))
        findings += [r_con_1(proposal, area), *r_con_2_3(proposal, area), r_con_4(proposal, area),
                     *r_con_5(proposal, area)]
        assessments = [assess_end_product(ep, area) for ep in proposal.end_products]
        for a in assessments:
            findings += a.findings
        products = [a.result for a in assessments]
        findings.append(r_orig_2(proposal, products))
        findings.append(r_des_1(proposal, rules))
    ordered = sorted(findings, key=lambda f: _RANK.get(f.rule, len(_RANK)))
    outcome, missing = decide(ordered)
    return Verdict(
        outcome=outcome,
        checked_at=checked_at,
        rules_version=rules.version,
        end_products=tuple(products),
        findings=tuple(ordered),
        missing=missing,
        context=_context(proposal, area),
    )


def _context(p: ProposalLike, area: Area) -> dict[str, object]:
    """Non-normative context: groups on the contract date and partnership levels (never a rule)."""
    participants: Sequence[str] = p.participants
    return {
        "contract_signed_on": area.on.isoformat(),
        "registry_version": area.ref.registry_version,
        "rules_effective_from": area.rules.effective_from.isoformat() if area.rules.effective_from else None,
        "participant_groups": {c: sorted(area.groups(c)) for c in participants},
        "partnership_levels": {c: area.ref.partnership_level(c) for c in participants},
        "partnership_levels_note": "EU partnership strategy level (1-3) as context only; never used by a rule",
    }
