"""Domain ⇄ wire: the engine's verdict as the contract's VerificationResult."""

from __future__ import annotations

from safe_procurement.services.origin_verification.domain.model import Verdict
from safe_procurement.shared import contracts


def to_result(verdict: Verdict) -> contracts.VerificationResult:
    return contracts.VerificationResult(
        outcome=verdict.outcome,
        checked_at=verdict.checked_at,
        rules_version=verdict.rules_version,
        end_products=[
            contracts.EndProductResult(
                name=p.name, component_cost_eur=p.component_cost_eur, non_eligible_cost_eur=p.non_eligible_cost_eur,
                non_eligible_share=p.non_eligible_share, cap=p.cap, passes=p.passes,
            )
            for p in verdict.end_products
        ],
        findings=[
            contracts.Finding(rule=f.rule, passed=f.passed, message=f.message, assumption=f.assumption,
                              subject=f.subject)
            for f in verdict.findings
        ],
        missing=list(verdict.missing),
        assumptions=[contracts.AssumptionUsed(assumption=a, rules=r) for a, r in assumptions_of(verdict).items()],
        context=dict(verdict.context),
    )


def assumptions_of(verdict: Verdict) -> dict[str, list[str]]:
    """Every assumption of the findings, once, in the order first used, with the rules that used it."""
    out: dict[str, list[str]] = {}
    for f in verdict.findings:
        if f.assumption:
            rules = out.setdefault(f.assumption, [])
            if f.rule not in rules:
                rules.append(f.rule)
    return out
