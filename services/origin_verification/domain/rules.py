"""The SAFE rules (docs/safe-rules.md), one pure function each. Every function returns findings; none of
them looks at today's date, a database or a message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from safe_procurement.services.origin_verification.domain.area import Area, EntityStatus, tri_and, tri_or
from safe_procurement.services.origin_verification.domain.model import (
    ComponentLike,
    EndProductLike,
    ProductResult,
    ProposalLike,
    RuleFinding,
)
from safe_procurement.services.origin_verification.domain.reference import IN_FORCE, Agreement
from safe_procurement.services.origin_verification.domain.rulebook import RuleSet

ZERO = Decimal(0)
NEAR_CAP = Decimal("0.0001")  # within this of the cap a displayed percentage can mislead (R-ORIG-3)
LISTED = 10  # names quoted in a message before "and N more"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f" and {len(items) - LISTED} more" if len(items) > LISTED else "")


def _missing_of(statuses: Iterable[EntityStatus]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m for s in statuses for m in s.missing))


def _agreement_assumption(area: Area, statuses: Iterable[EntityStatus]) -> str | None:
    if any(s.agreement is not None for s in statuses):
        return area.rules["agreement_entities_in_area"].assumption()
    return None


# --- participation (docs/safe-rules.md §2) -------------------------------------------------------


def transitional_window_open(signed_on: date, rules: RuleSet) -> bool:
    """Is a contract signed on `signed_on` within the single-Member-State transitional period?"""
    deadline: date = rules.value("transitional_deadline")
    return signed_on <= deadline if rules.value("transitional_deadline_inclusive") else signed_on < deadline


def _deadline_assumption(rules: RuleSet) -> str:
    return rules["transitional_deadline_inclusive"].assumption(rules["transitional_deadline"].assumption())


def other_counting_participants(p: ProposalLike, area: Area) -> list[str]:
    return [c for c in p.participants if c != p.lead_member_state and area.counts(c)]


def is_single_member_state(p: ProposalLike, area: Area) -> bool:
    return area.is_member_state(p.lead_member_state) and not other_counting_participants(p, area)


def r_part_1(p: ProposalLike, area: Area) -> RuleFinding:
    """A borrowing Member State plus at least one other Member State, EEA-EFTA state or Ukraine."""
    lead, on = p.lead_member_state, area.on
    if not area.is_member_state(lead):
        return RuleFinding("R-PART-1", False, f"the lead {lead} is not an EU Member State on {on}: only a Member State "
                           "can borrow under SAFE and lead the procurement", subject=lead)
    others = other_counting_participants(p, area)
    if others:
        return RuleFinding("R-PART-1", True, f"borrowing Member State {lead} plus {_names(others)} "
                           "(Member State, EEA-EFTA state or Ukraine)")
    if transitional_window_open(on, area.rules):
        return RuleFinding("R-PART-1", True, f"{lead} procures without another Member State, EEA-EFTA state or "
                           "Ukraine; admitted under the transitional rule R-PART-3",
                           assumption=_deadline_assumption(area.rules), subject=lead)
    return RuleFinding("R-PART-1", False, f"{lead} is the only Member State, EEA-EFTA or Ukraine participant; a "
                       "common procurement needs at least one more", subject=lead)


def r_part_2(p: ProposalLike, area: Area) -> list[RuleFinding]:
    """Candidate, potential-candidate and SDP countries may join but do not count."""
    rules = area.rules
    out: list[RuleFinding] = []
    for c in p.participants:
        if area.counts(c):
            continue
        if area.may_join(c):
            roles = sorted(area.groups(c) & rules.value("may_join_groups"))
            out.append(RuleFinding("R-PART-2", True, f"{c} ({', '.join(roles)}) may join but does not count toward "
                                   "the two-country minimum", assumption=rules["may_join_groups"].assumption(),
                                   subject=c))
            continue
        mode = rules.value("unlisted_participants")
        passed = {"allow": True, "review": None, "fail": False}[mode]
        verdict = {"allow": "it may take part but does not count", "review": "a reviewer must confirm it may take part",
                   "fail": "it may not take part"}[mode]
        out.append(RuleFinding(
            "R-PART-5", passed, f"{c} is in no SAFE participation group on {area.on}; {verdict}",
            assumption=rules["unlisted_participants"].assumption(), subject=c,
            missing=(f"confirmation that {c} may take part in the procurement",) if passed is None else (),
        ))
    if not out:
        out.append(RuleFinding("R-PART-2", True, "every participant is a Member State, EEA-EFTA state or Ukraine"))
    return out


def r_part_4(p: ProposalLike, area: Area) -> RuleFinding:
    """A contract signed before the regulation entered into force is not a SAFE common procurement."""
    setting = area.rules["regulation_in_force_on"]
    in_force: date = setting.value
    on = p.contract_signed_on
    if on < in_force:
        return RuleFinding("R-PART-4", False, f"the contract was signed on {on}, before SAFE (Regulation (EU) "
                           f"2025/1106) entered into force on {in_force}: it is not a SAFE common procurement",
                           assumption=setting.assumption(), subject=on.isoformat())
    return RuleFinding("R-PART-4", True, f"the contract was signed on {on}, on or after SAFE entered into force "
                       f"({in_force})", assumption=setting.assumption())


def r_part_3(p: ProposalLike, area: Area) -> RuleFinding | None:
    """A single-Member-State procurement is eligible when signed by the transitional deadline."""
    if not is_single_member_state(p, area):
        return None
    deadline = area.rules.value("transitional_deadline")
    lead, on = p.lead_member_state, area.on
    if transitional_window_open(on, area.rules):
        return RuleFinding("R-PART-3", True, f"single-Member-State procurement by {lead} signed {on}, within the "
                           f"transitional period ending {deadline}", assumption=_deadline_assumption(area.rules),
                           subject=lead)
    return RuleFinding("R-PART-3", False, f"single-Member-State procurement by {lead} signed {on}, after the "
                       f"transitional deadline {deadline}", assumption=_deadline_assumption(area.rules), subject=lead)


# --- contractors (docs/safe-rules.md §3) ---------------------------------------------------------


def r_con_1(p: ProposalLike, area: Area) -> RuleFinding:
    """The contractor is established in, and managed from, the eligible area."""
    c = p.contractor
    est, mgmt = area.entity(c.established_in), area.entity(c.executive_management_in)
    passed = tri_and(est.in_area, mgmt.in_area)
    verdict = {True: "in the eligible area", False: "not in the eligible area", None: "undecided"}[passed]
    return RuleFinding(
        "R-CON-1", passed, f"contractor {c.name}: established in {est.describe()}, executive management in "
        f"{mgmt.describe()}: {verdict}", assumption=_agreement_assumption(area, (est, mgmt)),
        subject=c.name, missing=_missing_of((est, mgmt)) if passed is None else (),
    )


def r_con_2_3(p: ProposalLike, area: Area) -> list[RuleFinding]:
    """R-CON-2 control from the eligible area, unless the R-CON-3 screening-and-guarantees derogation applies."""
    c = p.contractor
    ctrl, est = area.entity(c.controlled_from), area.entity(c.established_in)
    if ctrl.in_area is True:
        return [RuleFinding("R-CON-2", True, f"contractor {c.name} is controlled from {ctrl.describe()}",
                            assumption=_agreement_assumption(area, (ctrl,)), subject=c.name)]
    out: list[RuleFinding] = []
    claimed = c.screening_and_guarantees and bool(area.rules.value("screening_derogation"))
    derogation = est.in_area if claimed else False
    if claimed:
        how = {True: "applies: established in the eligible area, security screening passed and guarantees approved",
               False: f"cannot apply: the contractor is established in {est.describe()}",
               None: f"undecided: established in {est.describe()}"}[derogation]
        out.append(RuleFinding("R-CON-3", derogation, f"screening-and-guarantees derogation for {c.name} {how}",
                               assumption=area.rules["screening_derogation"].assumption(), subject=c.name,
                               missing=est.missing if derogation is None else ()))
    passed = tri_or(ctrl.in_area, derogation)
    if passed is True:
        msg = f"contractor {c.name} is controlled from {ctrl.describe()}; admitted under the R-CON-3 derogation"
    elif passed is False:
        msg = (f"contractor {c.name} is controlled from {ctrl.describe()}, a non-eligible third country"
               + ("" if claimed else ", without security screening and guarantees (R-CON-3)"))
    else:
        msg = f"contractor {c.name} is controlled from {ctrl.describe()}: undecided"
    out.insert(0, RuleFinding("R-CON-2", passed, msg, assumption=_agreement_assumption(area, (ctrl,)) or (
        area.rules["screening_derogation"].assumption() if passed is True else None), subject=c.name,
        missing=_missing_of((ctrl, est)) if passed is None else ()))
    return out


def r_con_4(p: ProposalLike, area: Area) -> RuleFinding:
    """Infrastructure, facilities, assets and resources are in the eligible area."""
    c = p.contractor
    statuses = [area.entity(f) for f in dict.fromkeys(c.facilities_in)]
    passed = tri_and(*(s.in_area for s in statuses))
    outside = [s.country for s in statuses if s.in_area is False]
    if passed is False:
        msg = f"contractor {c.name} uses facilities outside the eligible area: {_names(outside)}"
    else:
        msg = f"contractor {c.name} facilities: " + "; ".join(s.describe() for s in statuses)
    return RuleFinding("R-CON-4", passed, msg, assumption=_agreement_assumption(area, statuses), subject=c.name,
                       missing=_missing_of(statuses) if passed is None else ())


def subcontractor_share_allowed(
    share: Decimal, contract_before: date | None, replacement_study_committed: bool, rules: RuleSet
) -> tuple[bool, str, str | None]:
    """R-CON-5 for a subcontractor outside the eligible area: (allowed, why, assumption used)."""
    allowed: Decimal = rules.value("subcontractor_allowed_share")
    maximum: Decimal = rules.value("subcontractor_max_share")
    cutoff: date = rules.value("subcontractor_prior_contract_before")
    if share <= allowed:
        return True, f"share {share} is at or below {allowed}: allowed", rules["subcontractor_allowed_share"].assumption()
    if share > maximum:
        return False, f"share {share} is above {maximum}: ineligible", None
    band = f"share {share} is above {allowed} and at most {maximum}"
    if contract_before is not None and contract_before < cutoff:
        return True, f"{band}; allowed: direct contract of {contract_before}, before {cutoff}", None
    if replacement_study_committed:
        return True, f"{band}; allowed: the contractor commits to study its replacement within two years", None
    why = f"direct contract of {contract_before} is not before {cutoff}" if contract_before else "no prior direct contract"
    return False, f"{band}; {why} and no replacement study committed: ineligible", None


def r_con_5(p: ProposalLike, area: Area) -> list[RuleFinding]:
    """Subcontractors outside the eligible area: the 15–35 % band and its two escape routes."""
    out: list[RuleFinding] = []
    for s in p.subcontractors:
        st = area.entity(s.established_in)
        if st.in_area is True:
            continue
        ok, why, assumption = subcontractor_share_allowed(
            s.share_of_contract_value, s.contract_before, s.replacement_study_committed, area.rules
        )
        passed: bool | None = ok if st.in_area is False else (True if ok else None)
        out.append(RuleFinding("R-CON-5", passed, f"subcontractor {s.name} established in {st.describe()}: {why}",
                               assumption=assumption, subject=s.name, missing=st.missing if passed is None else ()))
    if not out:
        n = len(p.subcontractors)
        out.append(RuleFinding("R-CON-5", True, "no subcontractor outside the eligible area" + (
            f" ({n} subcontractor(s) declared)" if n else " (no subcontractors declared)")))
    return out


# --- component origin (docs/safe-rules.md §4) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class OriginTally:
    total: Decimal
    by_country: dict[str, Decimal]
    without_evidence: dict[str, list[str]]


def tally_components(components: Sequence[ComponentLike]) -> OriginTally:
    """Component cost per declared origin country (R-ORIG-2 base), and components lacking evidence (R-ORIG-5)."""
    by_country: dict[str, Decimal] = {}
    without: dict[str, list[str]] = {}
    get = by_country.get
    for c in components:
        k = c.origin_country
        by_country[k] = get(k, ZERO) + c.cost_eur
        if not c.evidence_ref:
            without.setdefault(k, []).append(c.name)
    return OriginTally(sum(by_country.values(), ZERO), by_country, without)


@dataclass(frozen=True, slots=True)
class OriginCount:
    """How one origin country's content of one end product counts (R-ORIG-1, R-ORIG-4)."""

    country: str
    amount: Decimal
    non_eligible_min: Decimal  # if every unconfirmed agreement value turns out favourable
    non_eligible_max: Decimal  # if every unconfirmed agreement value turns out unfavourable
    may_count_eligible: bool
    agreement: Agreement | None = None
    note: str = ""
    missing: tuple[str, ...] = ()


def _not_applied(ag: Agreement, on: date) -> str:
    if ag.status != IN_FORCE:
        return f"no participation agreement in force ({ag.agreement_id}: {ag.status})"
    if ag.effective_to is not None and on >= ag.effective_to:
        return f"agreement {ag.agreement_id} ended {ag.effective_to}, before the contract date {on}"
    if ag.effective_from is not None and on < ag.effective_from:
        return f"agreement {ag.agreement_id} takes effect {ag.effective_from}, after the contract date {on}"
    return f"agreement {ag.agreement_id} does not count content as eligible"


def count_origin(country: str, amount: Decimal, total: Decimal, area: Area) -> OriginCount:
    """R-ORIG-4: eligible area counts eligible; an in-force agreement counts eligible up to its cap."""
    if area.is_eligible(country):
        return OriginCount(country, amount, ZERO, ZERO, True, note="eligible area")
    ag = area.agreement(country)
    if ag is None:
        return OriginCount(country, amount, amount, amount, False, note="non-eligible origin")
    state = ag.in_force_on(area.on)
    if state is False or not ag.content_counts_as_eligible:
        return OriginCount(country, amount, amount, amount, False, ag, _not_applied(ag, area.on) + ": non-eligible")
    missing: list[str] = []
    if state is None:
        missing.append(f"effective date of the {country} participation agreement {ag.agreement_id}")
    if ag.max_content_share is None:
        missing.append(f"max_content_share of the {country} participation agreement {ag.agreement_id}")
        best = ZERO
        note = f"agreement {ag.agreement_id} counts its content eligible; its cap is not configured"
    else:
        allowance = ag.max_content_share * total
        all_of_it = area.rules.value("agreement_content_excess") == "all_non_eligible"
        best = (amount if all_of_it else amount - allowance) if amount > allowance else ZERO
        counted = "all of its content counted non-eligible" if all_of_it else f"excess EUR {best} counted non-eligible"
        note = (f"agreement {ag.agreement_id} counts its content eligible up to {ag.max_content_share} of component "
                f"cost (EUR {allowance})" + (f"; over the cap: {counted}" if best else ""))
    worst = amount if missing else best
    return OriginCount(country, amount, best, worst, best < amount, ag, note, tuple(missing))


def _share(part: Decimal, total: Decimal, places: int) -> Decimal:
    if not total:
        return ZERO.quantize(Decimal(1).scaleb(-places))
    return (part / total).quantize(Decimal(1).scaleb(-places))


def r_orig_1(name: str, total: Decimal, ne_min: Decimal, ne_max: Decimal, cap: Decimal, places: int,
             missing: Sequence[str] = ()) -> tuple[RuleFinding, ProductResult]:
    """Non-eligible component cost ≤ cap × component cost, compared exactly (never a rounded share)."""
    limit = cap * total
    passed: bool | None
    if total <= 0:
        passed = None
    elif ne_max <= limit:
        passed = True
    elif ne_min > limit:
        passed = False
    else:
        passed = None
    shown = ne_min if passed is False else ne_max
    share = _share(shown, total, places)
    if passed is None and total <= 0:
        msg, miss = f"end product {name} has no component cost", (f"component costs of end product {name}",)
    elif passed is None:
        msg = (f"end product {name}: non-eligible component cost between EUR {ne_min} and EUR {ne_max} of EUR "
               f"{total}, cap {cap} (EUR {limit}): the verdict depends on unconfirmed agreement values")
        miss = tuple(missing)
    else:
        where = "within" if passed else "above"
        msg = (f"end product {name}: non-eligible component cost EUR {shown} of component cost EUR {total} = "
               f"{share} ({where} the cap {cap}, compared exactly)")
        miss = ()
    finding = RuleFinding("R-ORIG-1", passed, msg, subject=name, missing=miss)
    return finding, ProductResult(name, total, shown, share, cap, passed is True, passed is not None)


def r_orig_2(p: ProposalLike, products: Sequence[ProductResult]) -> RuleFinding:
    """The base is the component cost, never the contract value."""
    base = sum((r.component_cost_eur for r in products), ZERO)
    tail = (f"; the contract value EUR {p.contract_value_eur} is not used" if p.contract_value_eur is not None
            else "")
    return RuleFinding("R-ORIG-2", True, f"the base of R-ORIG-1 is each end product's component cost (EUR {base} in "
                       f"total), labour, assembly and margin excluded{tail}")


def r_orig_3(result: ProductResult, passed: bool | None) -> RuleFinding | None:
    """Near the cap, say that the comparison was exact (35 % passes, 35.00001 % fails)."""
    if passed is None or result.component_cost_eur <= 0:
        return None
    total = result.component_cost_eur
    diff = result.non_eligible_cost_eur - result.cap * total  # cross-multiplied: no division, no rounding
    if abs(diff) >= NEAR_CAP * total:
        return None
    how = "exactly at" if diff == 0 else "above" if diff > 0 else "below"
    return RuleFinding("R-ORIG-3", passed, f"end product {result.name}: non-eligible share is {how} the cap {result.cap} "
                       "by exact decimal comparison (a rounded percentage would read the same)", subject=result.name)


def agreement_assumption(ag: Agreement, rules: RuleSet | None = None) -> str | None:
    """The agreement facts a finding relies on when they are not official (e.g. Canada's assumed start date), and
    the cap reading (all or only the excess over the cap) when its cap applies: each with its value and source."""
    parts = []
    if ag.confidence != "official":
        parts.append(f"agreement {ag.agreement_id} ({ag.country}): effective_from="
                     f"{ag.effective_from.isoformat() if ag.effective_from else 'not configured'}, max_content_share="
                     f"{ag.max_content_share if ag.max_content_share is not None else 'not configured'} "
                     f"[{ag.confidence or 'unconfirmed'}] (source: {ag.source or 'not given'})")
    if rules is not None and ag.max_content_share is not None and ag.content_counts_as_eligible:
        parts.append(rules["agreement_content_excess"].assumption())
    return "; ".join(parts) or None


def r_orig_4(name: str, counts: Sequence[OriginCount], orig_1: bool | None,
             rules: RuleSet | None = None) -> list[RuleFinding]:
    """Participation agreements: from their effective date, content counts eligible up to their cap."""
    out: list[RuleFinding] = []
    for c in counts:
        if c.agreement is None:
            continue
        out.append(replace(_r_orig_4_one(name, c, orig_1), assumption=agreement_assumption(c.agreement, rules)))
    return out


def _r_orig_4_one(name: str, c: OriginCount, orig_1: bool | None) -> RuleFinding:
    subject = f"{name}/{c.country}"
    if c.missing:
        passed = None if orig_1 is None else True
        tail = ("; the verdict depends on it" if passed is None else "; the verdict is the same either way")
        return RuleFinding("R-ORIG-4", passed, f"{c.country} content EUR {c.amount} in {name}: {c.note}; "
                           f"not configured: {', '.join(c.missing)}{tail}", subject=subject,
                           missing=c.missing if passed is None else ())
    if c.may_count_eligible and c.non_eligible_max > 0:
        return RuleFinding("R-ORIG-4", False if orig_1 is False else True, f"{c.country} content EUR {c.amount} in "
                           f"{name} exceeds its agreement cap: {c.note}", subject=subject)
    return RuleFinding("R-ORIG-4", True, f"{c.country} content EUR {c.amount} in {name}: {c.note}", subject=subject)


def r_orig_5(name: str, counts: Sequence[OriginCount], without_evidence: dict[str, list[str]],
             rules: RuleSet) -> RuleFinding:
    """Origin is declared with evidence; eligible-origin content without an evidence reference needs review."""
    setting = rules["evidence_required_for_eligible_content"]
    lacking = [n for c in counts if c.may_count_eligible for n in without_evidence.get(c.country, ())]
    if not lacking or not setting.value:
        return RuleFinding("R-ORIG-5", True, f"end product {name}: declared origin and evidence reference kept per "
                           "component" + ("; every component counted as eligible origin has evidence" if setting.value
                                          else ""), assumption=setting.assumption(), subject=name)
    return RuleFinding("R-ORIG-5", None, f"end product {name}: {len(lacking)} component(s) counted as eligible origin "
                       f"have no evidence reference: {_names(lacking)}", assumption=setting.assumption(),
                       subject=name, missing=(f"evidence_ref (origin declaration) for component(s) of end product "
                                              f"{name}: {_names(lacking)}",))


@dataclass(frozen=True)
class ProductAssessment:
    result: ProductResult
    findings: list[RuleFinding]
    counts: list[OriginCount]


def assess_end_product(ep: EndProductLike, area: Area) -> ProductAssessment:
    """R-ORIG-1, 3, 4 and 5 for one end product (sum per origin country first: no per-component arithmetic)."""
    rules = area.rules
    tally = tally_components(ep.components)
    counts = [count_origin(k, v, tally.total, area) for k, v in sorted(tally.by_country.items())]
    ne_min = sum((c.non_eligible_min for c in counts), ZERO)
    ne_max = sum((c.non_eligible_max for c in counts), ZERO)
    missing = tuple(dict.fromkeys(m for c in counts for m in c.missing))
    f1, result = r_orig_1(ep.name, tally.total, ne_min, ne_max, rules.origin_cap, rules.value("share_display_places"),
                          missing)
    findings = [f1]
    f3 = r_orig_3(result, f1.passed)
    if f3 is not None:
        findings.append(f3)
    findings += r_orig_4(ep.name, counts, f1.passed, area.rules)
    findings.append(r_orig_5(ep.name, counts, tally.without_evidence, rules))
    return ProductAssessment(result, findings, counts)


# --- design authority (docs/safe-rules.md §5) ----------------------------------------------------


def r_des_1(p: ProposalLike, rules: RuleSet) -> RuleFinding:
    """Category 2 products need the contractor's design authority, free of third-country restrictions."""
    cat2 = [ep.name for ep in p.end_products if ep.category in rules.value("category_2")]
    assumption = rules["category_2"].assumption()
    if not cat2:
        return RuleFinding("R-DES-1", True, "no Category 2 end product: design authority not required",
                           assumption=assumption)
    da = p.contractor.design_authority
    subject = _names(cat2)
    if da is None:
        return RuleFinding("R-DES-1", None, f"Category 2 end product(s) {subject}: the contractor's design authority "
                           "is not stated", assumption=assumption, subject=subject,
                           missing=(f"contractor.design_authority (held, third_country_restrictions) for Category 2 "
                                    f"end product(s) {subject}",))
    problems = [t for t, bad in (("the contractor does not hold design authority", not da.held),
                                 ("the design is subject to third-country restrictions", da.third_country_restrictions))
                if bad]
    if problems:
        return RuleFinding("R-DES-1", False, f"Category 2 end product(s) {subject}: {'; '.join(problems)}",
                           assumption=assumption, subject=subject)
    return RuleFinding("R-DES-1", True, f"Category 2 end product(s) {subject}: design authority held, free of "
                       "third-country restrictions", assumption=assumption, subject=subject)
