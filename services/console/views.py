"""View models: the services' JSON turned into what a page shows. Pure functions, no I/O (unit-tested)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from safe_procurement.shared.kit.auth import Principal

# the case statuses (docs/interface.md) in flow order; needs_review: the rules could not decide
STATUSES = ("submitted", "verifying", "needs_review", "origin_rejected", "origin_verified", "loan_requested",
            "loan_approved", "loan_rejected", "withdrawn")
FINAL = {"origin_rejected", "loan_approved", "loan_rejected", "withdrawn"}
ENVELOPE_EUR = Decimal("150000000000")  # SAFE's loan envelope: EUR 150 bn


def is_final(case: dict[str, Any]) -> bool:
    status = case.get("status")
    if status in FINAL:
        return True
    return status == "origin_verified" and not (case.get("proposal") or {}).get("financing")


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    """A short, human duration: '45 s', '12 min', '3 h 05 min', '2 d 4 h'."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def money(value: Any) -> str:
    """EUR amounts exactly as given, grouped by thousands: '1,200,000.00'; '—' when absent."""
    d = decimal(value)
    if d is None:
        return "—"
    return f"{d:,.2f}" if d == d.quantize(Decimal("0.01")) else f"{d:,}"


def billions(value: Any) -> str:
    d = decimal(value)
    return "—" if d is None else f"{(d / Decimal(10) ** 9).quantize(Decimal('0.01'))} bn"


def percent(value: Any, places: int = 1) -> str:
    d = decimal(value)
    if d is None:
        return "—"
    return f"{(d * 100).quantize(Decimal(1).scaleb(-places))} %"


# --- cases ----------------------------------------------------------------------------------------------

@dataclass
class CaseListRow:
    id: str
    reference: str
    status: str
    lead_member_state: str
    created_at: datetime | None
    in_status_for: str


def case_rows(items: list[dict[str, Any]], now: datetime) -> list[CaseListRow]:
    """The case list: time in the current status counts from the case's last change (`updated_at`)."""
    rows = []
    for c in items:
        since = parse_time(c.get("status_since") or c.get("updated_at"))
        rows.append(CaseListRow(
            id=c["id"], reference=c["reference"], status=c["status"], lead_member_state=c.get("lead_member_state", ""),
            created_at=parse_time(c.get("created_at")),
            in_status_for=duration((now - since).total_seconds()) if since else "—"))
    return rows


def status_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Every status in flow order with its count (0 when absent), then any status this console does not know."""
    known = [(s, int(counts.get(s, 0))) for s in STATUSES]
    return known + sorted((s, int(n)) for s, n in counts.items() if s not in STATUSES)


@dataclass(frozen=True)
class Action:
    """An operator action on a case: the console shows it when the case's explain lists its endpoint."""

    name: str
    label: str
    help: str
    danger: bool = False


# Adding an action (e.g. review, amend) is one entry here: the console posts {reason} to
# POST /procurements/{id}/{name} and shows the button when GET /procurements/{id}/explain lists that endpoint.
CASE_ACTIONS: dict[str, Action] = {
    "withdraw": Action("withdraw", "Withdraw the case", "Final: releases any loan reservation. Only before a loan "
                       "is approved.", danger=True),
    "reverify": Action("reverify", "Re-verify the case", "Asks origin verification to decide again (e.g. after a "
                       "registry correction)."),
}


def allowed_actions(explain: dict[str, Any] | None, case_id: str, who: Principal) -> list[Action]:
    """The actions this user may take now: none for a reader; for an operator, those the explain endpoint offers."""
    if not who.can_write or not explain:
        return []
    offered = set()
    for entry in explain.get("operator_actions") or []:
        method, _, path = str(entry).partition(" ")
        prefix = f"/procurements/{case_id}/"
        if method == "POST" and path.startswith(prefix):
            offered.add(path.removeprefix(prefix).split()[0])
    return [a for name, a in CASE_ACTIONS.items() if name in offered]


@dataclass
class ShareRow:
    name: str
    component_cost: str
    non_eligible_cost: str
    share: str
    cap: str
    passes: bool
    share_pct: float  # 0..100, for the bar
    cap_pct: float


@dataclass
class FindingRow:
    rule: str
    passed: bool
    message: str
    assumption: str | None


@dataclass
class VerificationView:
    outcome: str
    checked_at: str
    rules_version: str
    shares: list[ShareRow]
    findings: list[FindingRow]
    assumptions: list[str]
    missing: list[str]


def _pct(value: Any) -> float:
    d = decimal(value)
    return 0.0 if d is None else float(min(max(d, Decimal(0)), Decimal(1)) * 100)


def verification_view(v: dict[str, Any] | None) -> VerificationView | None:
    if not v:
        return None
    shares = [ShareRow(name=str(ep.get("name", "")), component_cost=money(ep.get("component_cost_eur")),
                       non_eligible_cost=money(ep.get("non_eligible_cost_eur")),
                       share=percent(ep.get("non_eligible_share"), 2), cap=percent(ep.get("cap"), 0),
                       passes=bool(ep.get("passes")), share_pct=_pct(ep.get("non_eligible_share")),
                       cap_pct=_pct(ep.get("cap")))
              for ep in v.get("end_products") or []]
    findings = [FindingRow(rule=str(f.get("rule", "")), passed=bool(f.get("passed")), message=str(f.get("message", "")),
                           assumption=f.get("assumption"))
                for f in v.get("findings") or []]
    findings.sort(key=lambda f: (f.passed, f.rule))  # failed first
    assumptions: list[str] = []
    for a in [*(v.get("assumptions") or []), *(f.assumption for f in findings)]:
        text = a if isinstance(a, str) else json.dumps(a, sort_keys=True) if a else None
        if text and text not in assumptions:
            assumptions.append(text)
    missing = [m if isinstance(m, str) else json.dumps(m, sort_keys=True) for m in v.get("missing") or []]
    return VerificationView(outcome=str(v.get("outcome", "")), checked_at=str(v.get("checked_at", "")),
                            rules_version=str(v.get("rules_version", "")), shares=shares, findings=findings,
                            assumptions=assumptions, missing=missing)


@dataclass
class ComponentRow:
    name: str
    origin: str
    cost: str
    supplier: str
    evidence: str


@dataclass
class EndProductRow:
    name: str
    category: str
    components: list[ComponentRow]
    total: str


def end_products(proposal: dict[str, Any]) -> list[EndProductRow]:
    rows = []
    for ep in proposal.get("end_products") or []:
        comps = ep.get("components") or []
        total = sum((decimal(c.get("cost_eur")) or Decimal(0) for c in comps), start=Decimal(0))
        rows.append(EndProductRow(
            name=str(ep.get("name", "")), category=str(ep.get("category", "")).replace("_", " "),
            components=[ComponentRow(name=str(c.get("name", "")), origin=str(c.get("origin_country", "")),
                                     cost=money(c.get("cost_eur")), supplier=str(c.get("supplier") or ""),
                                     evidence=str(c.get("evidence_ref") or "")) for c in comps],
            total=money(total)))
    return rows


# --- facilities -----------------------------------------------------------------------------------------

@dataclass
class FacilityRow:
    member_state: str
    max: str
    approved: str
    disbursed: str
    available: str
    pre_financing: str
    status: str
    max_d: Decimal
    approved_d: Decimal
    disbursed_d: Decimal


def facility_rows(items: list[dict[str, Any]]) -> list[FacilityRow]:
    rows = []
    for f in items:
        status = f.get("status") or ("suspended" if f.get("suspended") else "not suspended")
        rows.append(FacilityRow(
            member_state=f["member_state"], max=money(f.get("max_eur")), approved=money(f.get("approved_eur")),
            disbursed=money(f.get("disbursed_eur")), available=money(f.get("available_eur")),
            pre_financing=money(f.get("pre_financing_eur")) if f.get("pre_financing_eur") is not None else "unconfirmed",
            status=str(status), max_d=decimal(f.get("max_eur")) or Decimal(0),
            approved_d=decimal(f.get("approved_eur")) or Decimal(0),
            disbursed_d=decimal(f.get("disbursed_eur")) or Decimal(0)))
    rows.sort(key=lambda r: (-r.max_d, r.member_state))
    return rows


@dataclass
class Bar:
    label: str
    y: int
    max_w: float
    approved_w: float
    disbursed_w: float
    title: str


@dataclass
class Chart:
    width: int
    height: int
    label_w: int
    bars: list[Bar]
    allocated: str
    envelope: str
    unallocated: str
    bar_h: int = 18
    gap: int = 6
    axis: list[tuple[float, str]] = field(default_factory=list)


def envelope_chart(rows: list[FacilityRow], envelope: Decimal = ENVELOPE_EUR, width: int = 720) -> Chart:
    """Horizontal bars, one per Member State, on one scale (the largest maximum spans the plot): the maximum
    (light), approved (mid) and disbursed (dark) amounts; the headline compares their sum with the envelope."""
    label_w, bar_h, gap = 44, 18, 6
    plot = width - label_w - 10
    top = max((r.max_d for r in rows), default=Decimal(0))
    scale = (Decimal(plot) / top) if top > 0 else Decimal(0)
    bars = []
    for i, r in enumerate(rows):
        bars.append(Bar(label=r.member_state, y=i * (bar_h + gap) + 4, max_w=float(r.max_d * scale),
                        approved_w=float(min(r.approved_d, r.max_d) * scale) if r.max_d else 0.0,
                        disbursed_w=float(min(r.disbursed_d, r.max_d) * scale) if r.max_d else 0.0,
                        title=f"{r.member_state}: maximum EUR {billions(r.max_d)}, approved EUR {billions(r.approved_d)}, "
                              f"disbursed EUR {billions(r.disbursed_d)}"))
    allocated = sum((r.max_d for r in rows), start=Decimal(0))
    axis = []
    if top > 0:
        for k in range(5):
            amount = top * k / 4
            axis.append((label_w + float(amount * scale), billions(amount)))
    height = len(rows) * (bar_h + gap) + 30
    return Chart(width=width, height=height, label_w=label_w, bars=bars, allocated=billions(allocated),
                 envelope=billions(envelope), unallocated=billions(envelope - allocated), bar_h=bar_h, gap=gap, axis=axis)


# --- system ---------------------------------------------------------------------------------------------

@dataclass
class StreamRow:
    stream: str
    lag: int
    pending: int


@dataclass
class ServiceHealth:
    service: str
    ready: bool
    checks: dict[str, Any]
    streams: list[StreamRow]
    dead_letters: int | None
    outbox_unsent: int | None
    error: str | None = None


def _metric(name: str, *candidates: str) -> bool:
    return any(name == c or name == c + "_total" for c in candidates)


def service_health(service: str, ready: dict[str, Any] | None, metrics_text: str | None,
                   error: str | None = None) -> ServiceHealth:
    """One service's row on the system page, from its /health/ready answer and /metrics text."""
    streams: dict[str, StreamRow] = {}
    dead = outbox = None
    for fam in text_string_to_metric_families(metrics_text or ""):
        for s in fam.samples:
            if _metric(s.name, "safe_stream_lag", "safe_stream_pending"):
                row = streams.setdefault(s.labels.get("stream", "?"), StreamRow(s.labels.get("stream", "?"), 0, 0))
                if "lag" in s.name:
                    row.lag += int(s.value)
                else:
                    row.pending += int(s.value)
            elif _metric(s.name, "safe_dead_letters_open"):
                dead = (dead or 0) + int(s.value)
            elif _metric(s.name, "safe_outbox_unsent"):
                outbox = (outbox or 0) + int(s.value)
    is_ready = bool(ready) and ready.get("status") in ("ready", "ok", True) if ready else False
    checks = (ready or {}).get("checks") or {}
    if ready and "status" not in ready and checks:
        is_ready = all(bool(v) for v in checks.values())
    return ServiceHealth(service=service, ready=is_ready, checks=checks,
                         streams=sorted(streams.values(), key=lambda r: r.stream), dead_letters=dead,
                         outbox_unsent=outbox, error=error)


def pretty_json(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)
