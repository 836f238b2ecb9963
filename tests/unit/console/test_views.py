"""The console's view models, sessions and error wording: pure functions on the services' JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from safe_procurement.services.console import views
from safe_procurement.services.console.sessions import SessionStore
from safe_procurement.services.console.upstream import plain_message
from safe_procurement.shared.kit.auth import Principal

OPERATOR = Principal("operator", "operator")
AUDITOR = Principal("auditor", "auditor")
PL = Principal("member-state-PL", "member-state-PL")


def test_durations_read_like_a_desk_officer_would_say_them():
    assert [views.duration(s) for s in (0, 59, 60, 3599, 3600, 3 * 3600 + 5 * 60, 86400 * 2 + 4 * 3600)] == [
        "0 s", "59 s", "1 min", "59 min", "1 h 00 min", "3 h 05 min", "2 d 4 h"]
    assert views.duration(-5) == "0 s"  # a clock a little ahead of ours never shows a negative time


def test_money_is_shown_exactly_as_the_service_sent_it():
    assert views.money("1200000.00") == "1,200,000.00"
    assert views.money("7019523.3") == "7,019,523.30"
    assert views.money("0.001") == "0.001"  # never rounded away
    assert views.money(None) == "—" and views.money("not a number") == "—"
    assert views.billions("149680000000") == "149.68 bn"
    assert views.percent("0.2631578947", 2) == "26.32 %" and views.percent("0.35", 0) == "35 %"


def test_case_rows_count_the_time_in_status_from_the_last_change():
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    rows = views.case_rows([
        {"id": "a", "reference": "R-1", "status": "verifying", "lead_member_state": "PL",
         "created_at": "2026-12-05T10:00:00Z", "updated_at": "2026-12-05T11:58:00Z"},
        {"id": "b", "reference": "R-2", "status": "needs_review", "lead_member_state": "DK",
         "created_at": "2026-12-01T10:00:00+00:00", "updated_at": "2026-12-01T10:00:00+00:00",
         "status_since": "2026-12-03T12:00:00"},  # naive: UTC
    ], now)
    assert [(r.reference, r.in_status_for) for r in rows] == [("R-1", "2 min"), ("R-2", "2 d 0 h")]
    assert rows[0].created_at == now - timedelta(hours=2)


def test_status_counts_list_every_status_in_flow_order_and_keep_unknown_ones():
    counts = views.status_counts({"loan_approved": 7, "submitted": 2, "amended": 1})
    assert [s for s, _ in counts][:len(views.STATUSES)] == list(views.STATUSES)
    assert dict(counts)["loan_approved"] == 7 and dict(counts)["verifying"] == 0
    assert counts[-1] == ("amended", 1)


def test_actions_are_those_the_explain_endpoint_offers_and_only_to_operators():
    explain = {"operator_actions": ["POST /procurements/c1/withdraw", "POST /procurements/c1/reverify",
                                    "GET /dead-letters?correlation_id=c1 on origin_verification",
                                    "POST /procurements/c1/teleport"]}
    assert [a.name for a in views.allowed_actions(explain, "c1", OPERATOR)] == ["withdraw", "reverify"]
    assert views.allowed_actions(explain, "c1", AUDITOR) == []
    assert views.allowed_actions(explain, "c1", PL) == []
    assert views.allowed_actions({"operator_actions": []}, "c1", OPERATOR) == []
    assert views.allowed_actions(explain, "another-case", OPERATOR) == []


def test_the_verification_view_puts_failed_findings_first_and_names_every_assumption():
    v = views.verification_view({
        "outcome": "ineligible", "checked_at": "t", "rules_version": "r1",
        "end_products": [{"name": "shell", "component_cost_eur": "950000.00", "non_eligible_cost_eur": "400000.00",
                          "non_eligible_share": "0.4210526316", "cap": "0.35", "passes": False}],
        "findings": [{"rule": "R-PART-1", "passed": True, "message": "ok", "assumption": None},
                     {"rule": "R-ORIG-1", "passed": False, "message": "over", "assumption": "US counted non-eligible"},
                     {"rule": "R-ORIG-5", "passed": True, "message": "ok", "assumption": "US counted non-eligible"}],
        "missing": ["max_content_share of the KR agreement"],
    })
    assert v is not None
    assert [f.rule for f in v.findings] == ["R-ORIG-1", "R-ORIG-5", "R-PART-1"]
    assert v.assumptions == ["US counted non-eligible"]
    assert v.missing == ["max_content_share of the KR agreement"]
    share = v.shares[0]
    assert (share.share, share.cap, share.passes) == ("42.11 %", "35 %", False)
    assert round(share.share_pct, 2) == 42.11 and share.cap_pct == 35.0
    assert views.verification_view(None) is None


def test_end_products_total_their_components_exactly():
    rows = views.end_products({"end_products": [{"name": "shell", "category": "ammunition_and_missiles", "components": [
        {"name": "a", "origin_country": "DE", "cost_eur": "0.10"}, {"name": "b", "origin_country": "PL", "cost_eur": "0.20"}]}]})
    assert rows[0].total == "0.30" and rows[0].category == "ammunition and missiles"
    assert [c.origin for c in rows[0].components] == ["DE", "PL"]


def test_facilities_sort_by_maximum_and_the_chart_is_drawn_to_one_scale():
    rows = views.facility_rows([
        {"member_state": "DK", "max_eur": "1000", "approved_eur": "0", "disbursed_eur": "0", "available_eur": "1000",
         "pre_financing_eur": None, "suspended": False},
        {"member_state": "PL", "max_eur": "4000", "approved_eur": "1000", "disbursed_eur": "500",
         "available_eur": "3000", "pre_financing_eur": "600", "suspended": True, "status": "agreement_signed"},
    ])
    assert [r.member_state for r in rows] == ["PL", "DK"]
    assert rows[0].status == "agreement_signed" and rows[1].status == "not suspended"
    assert rows[1].pre_financing == "unconfirmed"
    chart = views.envelope_chart(rows, envelope=Decimal("10000"), width=454)  # plot 400 px wide
    pl, dk = chart.bars
    assert (pl.max_w, pl.approved_w, pl.disbursed_w) == (400.0, 100.0, 50.0)
    assert dk.max_w == 100.0 and dk.y > pl.y
    assert chart.allocated == "0.00 bn" and chart.unallocated == "0.00 bn"  # tiny figures, in billions
    assert views.envelope_chart([]).bars == []


METRICS = """# HELP safe_stream_lag Entries not yet delivered to the group
# TYPE safe_stream_lag gauge
safe_stream_lag{service="applications",stream="applications.submit-procurement"} 3.0
safe_stream_lag{service="applications",stream="loan.decided"} 0.0
# HELP safe_stream_pending Entries delivered but not acknowledged
# TYPE safe_stream_pending gauge
safe_stream_pending{service="applications",stream="applications.submit-procurement"} 2.0
# HELP safe_dead_letters_open Open dead letters
# TYPE safe_dead_letters_open gauge
safe_dead_letters_open{service="applications"} 4.0
# HELP safe_outbox_unsent Outbox rows not yet published
# TYPE safe_outbox_unsent gauge
safe_outbox_unsent{service="applications"} 1.0
"""


def test_a_service_s_health_row_comes_from_its_ready_answer_and_metrics():
    h = views.service_health("applications", {"status": "ready", "checks": {"database": True, "redis": True}}, METRICS)
    assert h.ready and h.dead_letters == 4 and h.outbox_unsent == 1
    assert [(s.stream, s.lag, s.pending) for s in h.streams] == [
        ("applications.submit-procurement", 3, 2), ("loan.decided", 0, 0)]
    down = views.service_health("applications", {"status": "not_ready", "checks": {"redis": False}}, None)
    assert not down.ready and down.checks == {"redis": False} and down.dead_letters is None
    assert not views.service_health("applications", None, None, error="not reachable").ready


def test_service_errors_become_plain_sentences():
    assert plain_message(409, {"detail": "case is loan_approved"}) == "case is loan_approved"
    assert plain_message(422, {"detail": [{"loc": ["body", "country"], "msg": "unknown country"},
                                          {"field": "source", "msg": "required"}]}) == \
        "country: unknown country; source: required"
    assert plain_message(404, None) == "not found (or not visible to you)"
    assert plain_message(500, "<html>trace</html>") == "the service answered 500"


def test_sessions_expire_when_idle_and_check_their_csrf_token():
    now = [0.0]
    store = SessionStore(idle_seconds=60, clock=lambda: now[0])
    sid, s = store.create("tok", OPERATOR)
    assert store.get(sid) is s and s.csrf_ok(s.csrf)
    assert not s.csrf_ok("") and not s.csrf_ok(None) and not s.csrf_ok(s.csrf + "x")
    now[0] = 59
    assert store.get(sid) is s  # seen: the idle clock restarts
    now[0] = 59 + 61
    assert store.get(sid) is None and len(store) == 0
    assert store.get(None) is None and store.get("forged") is None
