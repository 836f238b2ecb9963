"""What-if replay: stored cases verified again with a candidate rulebook and/or the registry as it was on a date,
in process, writing nothing; which verdicts would change, case by case, and why.

For each case (its latest report since `since`) the proposal as it was verified is decided twice with the same
engine: the baseline (the rules in service, the replica as it stands) and the candidate (the candidate rulebook,
the registry snapshot). A verdict changes when its outcome does (cases whose outcome stays but whose failed rules
differ are listed apart, as `reasons_changed`); the report names the findings that differ and the rule-set settings (with their source and confidence) that
differ between the two rule sets the case was judged by. The stored outcome is shown beside, and flagged when
the baseline no longer reproduces it (the registry or the rules changed since the case was decided).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.origin_verification.adapters import replica
from safe_procurement.services.origin_verification.adapters.tables import (
    ReplicaAgreementVersion,
    ReplicaCountryVersion,
    ReportRow,
)
from safe_procurement.services.origin_verification.domain import engine
from safe_procurement.services.origin_verification.domain.model import RuleFinding, Verdict
from safe_procurement.services.origin_verification.domain.reference import (
    Agreement,
    CountryRecord,
    ReferenceData,
)
from safe_procurement.services.origin_verification.domain.rulebook import RuleBook, RuleSet
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import countries as codes

_RANK = {r: i for i, r in enumerate(engine.RULE_ORDER)}


@dataclass
class CaseChange:
    case_id: str
    reference: str
    contract_signed_on: str
    stored_outcome: str
    baseline_outcome: str
    candidate_outcome: str
    changed: bool
    baseline_rules_version: str
    candidate_rules_version: str
    findings: list[dict[str, Any]] = field(default_factory=list)
    end_products: list[dict[str, Any]] = field(default_factory=list)
    assumptions: list[dict[str, Any]] = field(default_factory=list)
    stored_differs: bool = False


@dataclass
class Report:
    cases: int
    changed: int
    candidate_rules: list[str]
    registry_at: str | None
    since: str | None
    changes: list[CaseChange]
    unchanged: list[str]
    not_reproduced: list[str]
    reasons_changed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases, "changed": self.changed, "candidate_rules": self.candidate_rules,
            "registry_at": self.registry_at, "since": self.since,
            "changes": [c.__dict__ for c in self.changes], "unchanged": self.unchanged,
            "not_reproduced": self.not_reproduced, "reasons_changed": self.reasons_changed,
        }


def _failed(v: Verdict) -> set[tuple[str, str | None]]:
    return {(f.rule, f.subject) for f in v.findings if f.passed is False}


def _finding(f: RuleFinding | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {"passed": f.passed, "message": f.message, "assumption": f.assumption}


def _finding_diff(before: Verdict, after: Verdict) -> list[dict[str, Any]]:
    b = {(f.rule, f.subject): f for f in before.findings}
    a = {(f.rule, f.subject): f for f in after.findings}
    out = []
    for key in sorted(set(b) | set(a), key=lambda k: (_RANK.get(k[0], len(_RANK)), k[1] or "")):
        fb, fa = b.get(key), a.get(key)
        if fb is None or fa is None or (fb.passed, fb.assumption) != (fa.passed, fa.assumption):
            out.append({"rule": key[0], "subject": key[1], "before": _finding(fb), "after": _finding(fa)})
    return out


def _products_diff(before: Verdict, after: Verdict) -> list[dict[str, Any]]:
    out = []
    for pb, pa in zip(before.end_products, after.end_products, strict=False):
        if (pb.passes, pb.cap, pb.non_eligible_cost_eur) != (pa.passes, pa.cap, pa.non_eligible_cost_eur):
            out.append({"name": pb.name, "non_eligible_share": str(pa.non_eligible_share),
                        "before": {"cap": str(pb.cap), "non_eligible_cost_eur": str(pb.non_eligible_cost_eur),
                                   "passes": pb.passes},
                        "after": {"cap": str(pa.cap), "non_eligible_cost_eur": str(pa.non_eligible_cost_eur),
                                  "passes": pa.passes}})
    return out


def settings_diff(before: RuleSet, after: RuleSet) -> list[dict[str, Any]]:
    """The settings (thresholds, dates, lists) whose value differs, each with its source and confidence."""
    out = []
    for key in sorted(set(before.settings) | set(after.settings)):
        sb, sa = before.settings.get(key), after.settings.get(key)
        vb = None if sb is None else sb.public()
        va = None if sa is None else sa.public()
        if (vb or {}).get("value") != (va or {}).get("value"):
            out.append({"setting": key, "before": vb, "after": va})
    return out


def _end_of(day: date) -> datetime:
    if day == date.max:
        return datetime.max.replace(tzinfo=UTC)
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


async def reference_at(session: AsyncSession, day: date) -> ReferenceData:
    """The registry as this replica had received it by the end of `day` (UTC): per country and agreement, the
    highest version recorded by then."""
    until = _end_of(day)
    countries: dict[str, CountryRecord] = {}
    rows = (await session.exec(select(ReplicaCountryVersion).where(col(ReplicaCountryVersion.recorded_at) < until)
                               .order_by(col(ReplicaCountryVersion.version)))).all()
    for r in rows:
        ev = contracts.CountryStatusChanged.model_validate_json(r.payload)
        code = codes.canonical(ev.country)
        countries[code] = CountryRecord(
            code, ev.name, tuple(replica._membership(m.model_dump(mode="json")) for m in ev.memberships),
            ev.partnership_level, ev.version)
    agreements: dict[str, Agreement] = {}
    arows = (await session.exec(select(ReplicaAgreementVersion).where(col(ReplicaAgreementVersion.recorded_at) < until)
                                .order_by(col(ReplicaAgreementVersion.version)))).all()
    for r in arows:
        a = contracts.PartnerAgreementRecorded.model_validate_json(r.payload)
        agreements[a.agreement_id] = Agreement(
            agreement_id=a.agreement_id, country=codes.canonical(a.country), status=a.status,
            effective_from=a.effective_from, effective_to=a.effective_to,
            content_counts_as_eligible=a.content_counts_as_eligible,
            max_content_share=Decimal(str(a.max_content_share)) if a.max_content_share is not None else None,
            entities_eligible=a.entities_eligible, kind=a.kind, version=a.version, source=a.source,
            confidence=a.confidence)
    return ReferenceData(countries, tuple(agreements[k] for k in sorted(agreements)), None)


async def replay(session: AsyncSession, current: RuleBook, *, candidate: RuleBook | None = None,
                 registry_at: date | None = None, since: datetime | None = None,
                 checked_at: datetime) -> Report:
    """Decide every stored case (latest report per case) again, baseline and candidate; nothing is written."""
    status = await replica.readiness(session)
    now_ref = await replica.load_reference(session, status.registry_version)
    cand_ref = now_ref if registry_at is None else await reference_at(session, registry_at)
    cand_rules = candidate or current
    latest = select(func.max(ReportRow.id)).group_by(ReportRow.case_id)
    q = select(ReportRow).where(col(ReportRow.id).in_(latest))
    if since is not None:
        q = q.where(col(ReportRow.created_at) >= since)
    rows = (await session.exec(q.order_by(col(ReportRow.id)))).all()
    changes: list[CaseChange] = []
    unchanged: list[str] = []
    not_reproduced: list[str] = []
    reasons_changed: list[dict[str, Any]] = []
    for row in rows:
        proposal = contracts.Proposal.model_validate_json(row.proposal)
        rs_before = current.for_date(proposal.contract_signed_on)
        rs_after = cand_rules.for_date(proposal.contract_signed_on)
        before = engine.verify(proposal, now_ref, rs_before, checked_at=checked_at)
        after = engine.verify(proposal, cand_ref, rs_after, checked_at=checked_at)
        stored_differs = before.outcome != row.outcome
        if stored_differs:
            not_reproduced.append(row.case_id)
        if before.outcome == after.outcome:
            unchanged.append(row.case_id)
            if _failed(before) != _failed(after):  # same verdict, other reasons: listed, not counted as a change
                reasons_changed.append({"case_id": row.case_id, "reference": proposal.reference,
                                        "outcome": after.outcome, "findings": _finding_diff(before, after)})
            continue
        changes.append(CaseChange(
            case_id=row.case_id, reference=proposal.reference, contract_signed_on=proposal.contract_signed_on.isoformat(),
            stored_outcome=row.outcome, baseline_outcome=before.outcome, candidate_outcome=after.outcome, changed=True,
            baseline_rules_version=rs_before.version, candidate_rules_version=rs_after.version,
            findings=_finding_diff(before, after), end_products=_products_diff(before, after),
            assumptions=settings_diff(rs_before, rs_after), stored_differs=stored_differs,
        ))
    return Report(cases=len(rows), changed=len(changes), candidate_rules=[rs.version for rs in cand_rules.rule_sets],
                  registry_at=registry_at.isoformat() if registry_at else None,
                  since=since.isoformat() if since else None, changes=changes, unchanged=unchanged,
                  not_reproduced=not_reproduced, reasons_changed=reasons_changed)


def table(report: dict[str, Any]) -> str:
    """The report as a readable table: one line per changed case, then what made the difference."""
    lines = [f"what-if: {report['cases']} case(s) replayed, {report['changed']} verdict(s) would change"
             f" (rules {', '.join(report['candidate_rules'])}"
             f"{'; registry as of ' + report['registry_at'] if report['registry_at'] else ''}"
             f"{'; since ' + report['since'] if report['since'] else ''})"]
    if report["changes"]:
        lines.append(f"{'case':<38} {'reference':<22} {'now':<13} {'would be':<13} rules")
    for c in report["changes"]:
        rules = ", ".join(sorted({f["rule"] for f in c["findings"]}))
        lines.append(f"{c['case_id']:<38} {c['reference'][:22]:<22} {c['baseline_outcome']:<13} "
                     f"{c['candidate_outcome']:<13} {rules}")
        for f in c["findings"]:
            after = f["after"] or {}
            lines.append(f"    {f['rule']}{' (' + f['subject'] + ')' if f['subject'] else ''}: "
                         f"{_passed(f['before'])} -> {_passed(f['after'])}: {after.get('message', '')}"
                         f"{' [assumption: ' + after['assumption'] + ']' if after.get('assumption') else ''}")
        for a in c["assumptions"]:
            b, n = a["before"] or {}, a["after"] or {}
            lines.append(f"    setting {a['setting']}: {b.get('value')} -> {n.get('value')} "
                         f"({n.get('confidence', '?')}; {n.get('source', '')})")
    if report.get("reasons_changed"):
        lines.append(f"{len(report['reasons_changed'])} case(s) keep their verdict for other reasons: "
                     + ", ".join(f"{c['reference']} ({', '.join(sorted({f['rule'] for f in c['findings']}))})"
                                 for c in report["reasons_changed"][:10]))
    if report["not_reproduced"]:
        lines.append(f"note: {len(report['not_reproduced'])} stored verdict(s) differ from today's baseline "
                     "(registry or rules changed since): " + ", ".join(report["not_reproduced"][:10]))
    return "\n".join(lines)


def _passed(f: dict[str, Any] | None) -> str:
    if f is None:
        return "absent"
    return {True: "pass", False: "FAIL", None: "review"}[f["passed"]]


def parse_rules_document(text: str, name: str = "rules") -> RuleBook:
    """A candidate rulebook from YAML or JSON text (the same format as safe_rules.yaml)."""
    import yaml

    from safe_procurement.services.origin_verification.domain.rulebook import RulebookError, parse_rulebook

    data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise RulebookError(f"{name}: expected a mapping with rule_sets")
    return parse_rulebook(data)
