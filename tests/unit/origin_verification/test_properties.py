"""Properties of the component-cost rule (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.origin_verification.support import proposal, run

ORIGINS = ["DE", "FR", "PL", "UA", "NO", "US", "CN", "CH", "GB"]
ELIGIBLE = {"DE", "FR", "PL", "UA", "NO"}

cents = st.integers(min_value=1, max_value=10**11)
rows = st.lists(st.tuples(st.sampled_from(ORIGINS), cents), min_size=1, max_size=12)


def _verdict(items: list[tuple[str, int]]):  # type: ignore[no-untyped-def]
    comps = [{"name": f"c{i}", "origin_country": o, "cost_eur": str(Decimal(c).scaleb(-2)), "evidence_ref": "d"}
             for i, (o, c) in enumerate(items)]
    return run(proposal(end_products=[{"name": "p", "category": "artillery", "components": comps}]))


@settings(max_examples=150, deadline=None)
@given(rows, st.integers(min_value=2, max_value=1000))
def test_scaling_every_cost_by_the_same_factor_never_changes_the_verdict(items, factor) -> None:  # type: ignore[no-untyped-def]
    base = _verdict(items)
    scaled = _verdict([(o, c * factor) for o, c in items])
    assert base.outcome == scaled.outcome
    assert base.end_products[0].passes == scaled.end_products[0].passes
    assert base.end_products[0].non_eligible_share == scaled.end_products[0].non_eligible_share


@settings(max_examples=150, deadline=None)
@given(rows, st.data())
def test_moving_cost_to_a_non_eligible_origin_never_turns_ineligible_into_eligible(items, data) -> None:  # type: ignore[no-untyped-def]
    eligible_rows = [i for i, (o, _) in enumerate(items) if o in ELIGIBLE]
    before = _verdict(items)
    if not eligible_rows:
        return
    i = data.draw(st.sampled_from(eligible_rows))
    origin, cost = items[i]
    moved = data.draw(st.integers(min_value=0, max_value=cost))
    target = data.draw(st.sampled_from([o for o in ORIGINS if o not in ELIGIBLE]))
    after_items = list(items)
    after_items[i] = (origin, cost - moved)
    after_items.append((target, moved))
    after_items = [(o, c) for o, c in after_items if c > 0]
    after = _verdict(after_items)
    if before.outcome == "ineligible":
        assert after.outcome == "ineligible"
    assert after.end_products[0].non_eligible_cost_eur >= before.end_products[0].non_eligible_cost_eur


@settings(max_examples=200, deadline=None)
@given(rows)
def test_the_reported_share_is_non_eligible_over_component_cost_exactly(items) -> None:  # type: ignore[no-untyped-def]
    v = _verdict(items)
    [ep] = v.end_products
    total = sum((Decimal(c) for _, c in items), Decimal(0)).scaleb(-2)
    non_eligible = sum((Decimal(c) for o, c in items if o not in ELIGIBLE), Decimal(0)).scaleb(-2)
    assert ep.component_cost_eur == total and ep.non_eligible_cost_eur == non_eligible
    assert ep.non_eligible_share == (non_eligible / total).quantize(Decimal("0.0000000001"))
    assert ep.passes is (non_eligible * 100 <= total * 35)
