"""R-PART-1..3: who must take part, who may join, and the single-Member-State transitional rule."""

from __future__ import annotations

from datetime import date

from safe_procurement.services.origin_verification.domain.rules import (
    r_part_1,
    r_part_2,
    r_part_3,
    transitional_window_open,
)
from tests.unit.origin_verification.support import area, failed, proposal, rules, run


def test_a_member_state_plus_another_member_state_passes() -> None:
    f = r_part_1(proposal(participants=["PL", "LT"]), area())
    assert f.passed is True and "LT" in f.message


def test_ukraine_and_eea_efta_states_count_as_the_second_participant() -> None:
    for other in ("UA", "NO", "IS", "LI"):
        assert r_part_1(proposal(participants=["PL", other]), area()).passed is True


def test_a_lead_that_is_not_a_member_state_fails() -> None:
    for lead in ("NO", "UA", "GB"):
        f = r_part_1(proposal(lead_member_state=lead, participants=[lead, "PL"]), area())
        assert f.passed is False and lead in f.message


def test_switzerland_does_not_count_as_the_second_participant() -> None:
    p = proposal(participants=["PL", "CH"], contract_signed_on="2026-09-01")
    assert r_part_1(p, area()).passed is False
    assert {"R-PART-1", "R-PART-3"} <= failed(run(p))


def test_candidates_and_sdp_countries_may_join_but_do_not_count() -> None:
    p = proposal(participants=["PL", "TR", "JP", "MD"])
    notes = r_part_2(p, area())
    assert {f.subject for f in notes} == {"TR", "JP", "MD"}
    assert all(f.passed is True and "does not count" in f.message and f.assumption for f in notes)
    assert r_part_1(p, area()).passed is False  # no other counting participant, after the deadline


def test_an_sdp_signatory_counts_only_from_its_signing_date_as_a_joiner() -> None:
    before = r_part_2(proposal(participants=["PL", "LT", "CA"], contract_signed_on="2025-06-22"), area("2025-06-22"))
    after = r_part_2(proposal(participants=["PL", "LT", "CA"], contract_signed_on="2025-06-23"), area("2025-06-23"))
    assert "no SAFE participation group" in before[0].message
    assert "sdp" in after[0].message


def test_every_participant_counting_gives_a_passing_note() -> None:
    [f] = r_part_2(proposal(participants=["PL", "LT", "UA"]), area())
    assert f.passed is True


def test_a_single_member_state_passes_on_the_transitional_deadline_day() -> None:
    p = proposal(participants=["PL"], contract_signed_on="2026-05-30")
    f = r_part_3(p, area("2026-05-30"))
    assert f is not None and f.passed is True and "inclusive" in (f.assumption or "")
    assert r_part_1(p, area("2026-05-30")).passed is True
    assert run(p).outcome == "eligible"


def test_a_single_member_state_fails_the_day_after_the_transitional_deadline() -> None:
    p = proposal(participants=["PL"], contract_signed_on="2026-05-31")
    f = r_part_3(p, area("2026-05-31"))
    assert f is not None and f.passed is False and "2026-05-30" in f.message
    v = run(p)
    assert v.outcome == "ineligible" and {"R-PART-1", "R-PART-3"} <= failed(v)


def test_a_candidate_alongside_a_single_member_state_is_still_a_single_member_state_procurement() -> None:
    assert r_part_3(proposal(participants=["PL", "TR"], contract_signed_on="2026-06-01"), area("2026-06-01")).passed is False
    assert r_part_3(proposal(participants=["PL", "TR"], contract_signed_on="2026-05-01"), area("2026-05-01")).passed is True


def test_the_transitional_rule_does_not_apply_to_a_joint_procurement() -> None:
    assert r_part_3(proposal(participants=["PL", "LT"]), area()) is None


def test_the_transitional_deadline_inclusiveness_is_configurable() -> None:
    rs = rules()
    assert transitional_window_open(date(2026, 5, 30), rs) is True
    assert transitional_window_open(date(2026, 5, 31), rs) is False
    exclusive = type(rs)(rs.version, rs.effective_from, {
        **rs.settings,
        "transitional_deadline_inclusive": type(rs["transitional_deadline_inclusive"])(
            "transitional_deadline_inclusive", False, "test", "assumed"),
    })
    assert transitional_window_open(date(2026, 5, 30), exclusive) is False
    assert transitional_window_open(date(2026, 5, 29), exclusive) is True
