"""Partner registry: the packaged seed file and the seed diff (what a load must publish)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest
import yaml

from safe_procurement.services.partner_registry.adapters import seed as seed_file
from safe_procurement.services.partner_registry.domain import registry
from safe_procurement.shared.contracts.events import GROUPS

D = date.fromisoformat
TODAY = D("2026-06-01")

EU = set("AT BE BG HR CY CZ DK EE FI FR DE EL HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split())


@pytest.fixture(scope="module")
def seed() -> seed_file.Seed:
    return seed_file.load()


def members(seed: seed_file.Seed, group: str, on: date = TODAY) -> set[str]:
    return {c for c, r in seed.countries.items() if group in r.groups_on(on)}


def test_the_seed_has_the_27_member_states_with_greece_as_el(seed: seed_file.Seed) -> None:
    assert members(seed, "eu_member_state") == EU
    assert "GR" not in seed.countries


def test_the_seed_has_eea_efta_ukraine_candidates_and_kosovo(seed: seed_file.Seed) -> None:
    assert members(seed, "eea_efta") == {"IS", "LI", "NO"}
    assert members(seed, "ukraine") == {"UA"}
    assert members(seed, "candidate") == set("AL BA GE MD ME MK RS TR UA".split())
    assert members(seed, "potential_candidate") == {"XK"}


def test_switzerland_is_efta_only_and_so_outside_the_eligible_groups(seed: seed_file.Seed) -> None:
    assert seed.countries["CH"].groups_on(TODAY) == ["efta"]


def test_sdp_countries_carry_their_signing_dates(seed: seed_file.Seed) -> None:
    signed = {c: r.sdp_on(TODAY).effective_from for c, r in seed.countries.items() if r.sdp_on(TODAY)}  # type: ignore[union-attr]
    assert signed == {
        "MD": D("2024-05-21"), "NO": D("2024-05-28"), "JP": D("2024-11-01"), "KR": D("2024-11-01"),
        "AL": D("2024-11-19"), "MK": D("2024-11-19"), "GB": D("2025-05-19"), "CA": D("2025-06-23"),
    }
    kr = seed.countries["KR"].sdp_on(TODAY)
    assert kr is not None and kr.confidence == "assumed"
    assert seed.countries["CA"].groups_on(D("2025-06-22")) == []


def test_partnership_levels_are_context_on_the_records(seed: seed_file.Seed) -> None:
    levels = {c: r.partnership.level for c, r in seed.countries.items() if r.partnership}
    assert {c for c, lv in levels.items() if lv == 1} == {"IS", "LI", "NO", "UA"}
    assert {c for c, lv in levels.items() if lv == 2} == {"GB", "CA", "TR"}
    assert {c for c, lv in levels.items() if lv == 3} == {"JP", "KR", "AU", "NZ", "IN", "SG"}
    assert "security and defence dialogue" in (seed.countries["IS"].partnership.note or "")  # type: ignore[union-attr]


def test_every_seed_row_has_a_source_and_a_confidence_and_a_known_group(seed: seed_file.Seed) -> None:
    assert seed.countries and seed.agreements
    for record in seed.countries.values():
        assert record.source and record.confidence in registry.CONFIDENCE
        for m in record.memberships:
            assert m.group in GROUPS and m.source and m.confidence in registry.CONFIDENCE
    for t in seed.agreements.values():
        assert t.source and t.confidence in registry.CONFIDENCE


def test_seeded_agreements_none_for_gb_tr_kr_and_an_unconfirmed_placeholder_for_canada(seed: seed_file.Seed) -> None:
    by_country = {t.country: t for t in seed.agreements.values()}
    assert {c: t.status for c, t in by_country.items()} == {"GB": "none", "TR": "none", "KR": "none", "CA": "in_force"}
    ca = by_country["CA"]
    assert ca.unconfirmed and ca.confidence == "assumed" and ca.max_content_share is None
    assert ca.content_counts_as_eligible and ca.entities_eligible
    assert not ca.in_force_on(D("2026-02-14")) and ca.in_force_on(D("2026-02-15"))


def test_loading_a_seed_into_an_empty_store_publishes_everything(seed: seed_file.Seed) -> None:
    plan = registry.plan_seed(seed.countries, seed.agreements, {}, {}, {})
    assert len(plan.countries) == len(seed.countries)
    assert [a for a, _ in plan.agreements] == sorted(seed.agreements)


def _stored(seed: seed_file.Seed) -> tuple[dict[str, registry.CountryRecord], dict[str, registry.Agreement]]:
    return dict(seed.countries), {k: registry.Agreement(id=k, version=1, terms=t) for k, t in seed.agreements.items()}


def test_loading_the_same_seed_again_publishes_nothing(seed: seed_file.Seed) -> None:
    countries, agreements = _stored(seed)
    reordered = {k: replace(v, memberships=tuple(reversed(v.memberships))) for k, v in countries.items()}
    plan = registry.plan_seed(seed.countries, seed.agreements, reordered, agreements, dict(seed.agreements))
    assert plan.empty


def test_only_new_or_changed_rows_are_published(seed: seed_file.Seed) -> None:
    countries, agreements = _stored(seed)
    changed = dict(seed.countries)
    changed["FJ"] = registry.CountryRecord(code="FJ", name="Fiji", source="s", confidence="official")
    changed["KR"] = replace(changed["KR"], name="Korea, Republic of")
    plan = registry.plan_seed(changed, seed.agreements, countries, agreements, dict(seed.agreements))
    assert sorted(c.code for c in plan.countries) == ["FJ", "KR"]
    assert plan.agreements == []


def test_a_seeded_agreement_an_operator_corrected_is_not_overwritten_by_the_seed(seed: seed_file.Seed) -> None:
    countries, agreements = _stored(seed)
    ca_id = next(k for k, t in seed.agreements.items() if t.country == "CA")
    agreements[ca_id] = registry.Agreement(id=ca_id, version=2, origin="operator",
                                           terms=registry.superseded(seed.agreements[ca_id], "agr-x"))
    assert registry.plan_seed(seed.countries, seed.agreements, countries, agreements, dict(seed.agreements)).empty
    edited = dict(seed.agreements)
    edited[ca_id] = replace(edited[ca_id], note="edited in the file")
    plan = registry.plan_seed(seed.countries, edited, countries, agreements, dict(seed.agreements))
    assert plan.agreements == [] and plan.kept_operator_versions == [ca_id]


def _doc() -> dict[str, Any]:
    with seed_file.DEFAULT_SEED.open(encoding="utf-8") as f:
        return yaml.safe_load(f)  # type: ignore[no-any-return]


def test_a_seed_with_an_alias_code_is_refused() -> None:
    doc = _doc()
    doc["countries"]["GR"] = doc["countries"].pop("EL")
    with pytest.raises(seed_file.SeedError, match="canonical code 'EL'"):
        seed_file.parse(doc)


def test_a_seed_share_written_as_a_yaml_number_is_refused() -> None:
    doc = _doc()
    doc["agreements"][-1]["max_content_share"] = 0.5
    with pytest.raises(ValueError, match="quoted decimal"):
        seed_file.parse(doc)


def test_a_seed_with_an_unknown_group_is_refused() -> None:
    doc = _doc()
    doc["countries"]["CH"]["memberships"][0]["group"] = "eea"
    with pytest.raises(ValueError, match="unknown group"):
        seed_file.parse(doc)


def test_a_seed_with_overlapping_agreements_is_refused() -> None:
    doc = _doc()
    ca = next(a for a in doc["agreements"] if a["country"] == "CA")
    doc["agreements"].append({**ca, "id": "agr-ca-duplicate"})
    with pytest.raises(seed_file.SeedError, match="overlap"):
        seed_file.parse(doc)
