"""Partner registry domain: effective-dated lookups and overlap detection."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from safe_procurement.services.partner_registry.domain import registry
from safe_procurement.services.partner_registry.domain.registry import (
    Agreement,
    AgreementTerms,
    CountryRecord,
    Membership,
)

D = date.fromisoformat


def terms(country: str = "CA", start: str | None = "2026-02-15", end: str | None = None, **kw: object) -> AgreementTerms:
    base = AgreementTerms(
        country=country, kind="safe_participation", status="in_force", effective_from=D(start) if start else None,
        effective_to=D(end) if end else None, content_counts_as_eligible=True, max_content_share=Decimal("0.50"),
        entities_eligible=True, source="test", confidence="official",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_membership_is_in_force_from_its_first_day_and_not_on_its_end_day() -> None:
    m = Membership(group="eu_member_state", effective_from=D("1973-01-01"), effective_to=D("2020-02-01"))
    assert not m.in_force(D("1972-12-31"))
    assert m.in_force(D("1973-01-01"))
    assert m.in_force(D("2020-01-31"))
    assert not m.in_force(D("2020-02-01"))


def test_a_membership_without_dates_is_always_in_force() -> None:
    assert Membership(group="ukraine").in_force(D("1900-01-01"))
    assert Membership(group="ukraine").in_force(D("2100-01-01"))


def test_groups_on_a_date_follow_the_dated_memberships() -> None:
    gb = CountryRecord(code="GB", name="United Kingdom", memberships=(
        Membership(group="eu_member_state", effective_from=D("1973-01-01"), effective_to=D("2020-02-01")),
        Membership(group="sdp", effective_from=D("2025-05-19")),
    ))
    assert gb.groups_on(D("2019-06-01")) == ["eu_member_state"]
    assert gb.groups_on(D("2025-05-18")) == []
    assert gb.groups_on(D("2025-05-19")) == ["sdp"]
    sdp = gb.sdp_on(D("2026-01-01"))
    assert sdp is not None and sdp.effective_from == D("2025-05-19")


def test_an_agreement_is_not_in_force_the_day_before_its_effect_and_is_on_the_day() -> None:
    ca = terms(start="2026-02-15", end="2027-01-01")
    assert not ca.in_force_on(D("2026-02-14"))
    assert ca.in_force_on(D("2026-02-15"))
    assert ca.in_force_on(D("2026-12-31"))
    assert not ca.in_force_on(D("2027-01-01"))


def test_an_agreement_that_is_not_in_force_or_has_no_start_never_applies() -> None:
    assert not terms(status="none", start=None).in_force_on(D("2026-06-01"))
    assert not terms(status="superseded").in_force_on(D("2026-06-01"))
    assert not terms(start=None).in_force_on(D("2026-06-01"))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (("2026-01-01", "2026-02-01"), ("2026-02-01", None), False),  # adjacent: [from, to) do not touch
        (("2026-01-01", "2026-02-02"), ("2026-02-01", None), True),
        (("2026-01-01", None), ("2030-01-01", "2031-01-01"), True),
        ((None, "2026-01-01"), ("2025-12-31", "2026-06-01"), True),
        (("2027-01-01", None), ("2026-01-01", "2027-01-01"), False),
    ],
)
def test_periods_overlap_as_half_open_intervals(
    a: tuple[str | None, str | None], b: tuple[str | None, str | None], expected: bool
) -> None:
    def d(x: str | None) -> date | None:
        return D(x) if x else None

    assert registry.periods_overlap(d(a[0]), d(a[1]), d(b[0]), d(b[1])) is expected
    assert registry.periods_overlap(d(b[0]), d(b[1]), d(a[0]), d(a[1])) is expected


def test_an_overlap_with_a_confirmed_agreement_in_force_is_a_conflict() -> None:
    existing = [Agreement(id="agr-1", version=1, terms=terms(start="2026-01-01"), origin="operator")]
    with pytest.raises(registry.Conflict) as e:
        registry.supersessions(terms(start="2026-06-01"), existing)
    assert [a.id for a in e.value.agreements] == ["agr-1"]


def test_an_overlap_with_an_unconfirmed_placeholder_supersedes_it() -> None:
    placeholder = Agreement(id="agr-ca", version=1, terms=terms(start="2026-02-15", unconfirmed=True,
                                                                 max_content_share=None))
    assert registry.supersessions(terms(start="2026-03-01"), [placeholder]) == [placeholder]
    gone = registry.superseded(placeholder.terms, "agr-new")
    assert gone.status == "superseded" and not gone.in_force_on(D("2026-06-01"))


def test_no_conflict_with_other_countries_other_statuses_adjacent_periods_or_itself() -> None:
    existing = [
        Agreement(id="other-country", version=1, terms=terms(country="JP", start="2026-01-01")),
        Agreement(id="no-agreement", version=1, terms=terms(status="none", start=None)),
        Agreement(id="earlier", version=1, terms=terms(start="2025-01-01", end="2026-01-01")),
        Agreement(id="itself", version=3, terms=terms(start="2026-01-01")),
    ]
    assert registry.supersessions(terms(start="2026-01-01"), existing, itself="itself") == []


def test_terms_that_are_not_in_force_never_conflict() -> None:
    existing = [Agreement(id="agr-1", version=1, terms=terms(start="2026-01-01"))]
    assert registry.supersessions(terms(status="revoked"), existing) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"effective_to": D("2026-02-15")}, "effective_to"),
        ({"effective_to": D("2026-01-01")}, "effective_to"),
        ({"max_content_share": Decimal("1.01")}, "max_content_share"),
        ({"max_content_share": Decimal("-0.01")}, "max_content_share"),
        ({"max_content_share": Decimal("NaN")}, "max_content_share"),
        ({"effective_from": None}, "effective_from"),
        ({"confidence": "certain"}, "confidence"),
    ],
)
def test_invalid_terms_name_the_offending_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(registry.InvalidTerms) as e:
        replace(terms(start="2026-02-15"), **change).validate()  # type: ignore[arg-type]
    assert e.value.field == field


def test_shares_at_the_bounds_are_valid() -> None:
    terms(max_content_share=Decimal("0")).validate()
    terms(max_content_share=Decimal("1")).validate()
    terms(max_content_share=None).validate()
