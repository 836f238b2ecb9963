"""The applications service in-process on a real Redis and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from functools import partial

import pytest
from sqlalchemy import func
from sqlmodel import select

from safe_procurement.services.applications.adapters.tables import CaseRow
from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import wire
from safe_procurement.shared.kit.tables import DeadLetter, InboxRow, OutboxRow
from tests.builders import proposal, verification_completed
from tests.integration.helpers import FAST, read_all, xadd


@pytest.fixture
def app(database_url, prefix, redis_url):
    return build_app(Settings(database_url=database_url, stream_prefix=prefix, consumer_name="t1", **FAST))


async def count(rt, model) -> int:
    async with rt.factory() as s:
        return (await s.exec(select(func.count()).select_from(model))).one()


async def test_a_valid_proposal_is_stored_and_published_for_verification(app, redis_client, prefix):
    async with running(app) as (client, rt):
        r = await client.post("/procurements", json=proposal("PL-AMMO-1"))
        assert r.status_code == 201
        body = r.json()
        assert body["status"] == "submitted" and body["reference"] == "PL-AMMO-1"
        published = await wait_for(lambda: read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED),
                                   message="ProcurementSubmitted on the stream")
        event = contracts.ProcurementSubmitted.model_validate(published[0])
        assert event.case_id == body["id"] and event.correlation_id == body["id"]
        case = await wait_for(lambda: _status(client, body["id"], "verifying"), message="verifying")
        assert case["verification"] is None and case["loan"] is None


async def test_the_same_app_starts_again_after_a_stop(database_url, prefix, redis_url, monkeypatch):
    """The engine, the Redis client, the relay and the messaging are built once, with the app; a stop disposes the
    pool and closes the client, and the next start connects them again and runs the relay, the subscribers and
    the background loops again."""
    monkeypatch.setenv("SAFE_PUBLISH_AFTER_BATCH", "0")  # the events go out through the relay task
    app = build_app(Settings(database_url=database_url, stream_prefix=prefix, consumer_name="t1", **FAST))
    for run in range(2):
        async with running(app) as (client, rt):
            r = await client.post("/procurements", json=proposal(f"T-AGAIN-{run}-{uuid.uuid4().hex[:6]}"))
            assert r.status_code == 201, r.text
            # published by the relay task and read back by the service's own subscriber
            await wait_for(partial(_status, client, r.json()["id"], "verifying"), message=f"run {run}: verifying")
            ready = await client.get("/health/ready")
            assert ready.status_code == 200, ready.json()
            assert not rt.messaging.stopping and rt.guard is not None and rt.guard.started
    assert await count(rt, CaseRow) == 2


async def _status(client, case_id, status):
    case = (await client.get(f"/procurements/{case_id}")).json()
    return case if case["status"] == status else None


async def test_an_invalid_proposal_answers_422_listing_every_field_and_stores_nothing(app, redis_client, prefix):
    async with running(app) as (client, rt):
        bad = proposal()
        bad["participants"] = ["PL", "ZZ"]
        bad["end_products"][0]["components"][0]["cost_eur"] = "1.001"
        del bad["contractor"]
        r = await client.post("/procurements", json=bad)
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["detail"]}
        assert {"participants.1", "end_products.0.components.0.cost_eur", "contractor"} <= fields
        r = await client.post("/procurements", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert await count(rt, CaseRow) == 0
        assert await count(rt, OutboxRow) == 0
        assert await redis_client.xlen(f"{prefix}{streams.PROCUREMENT_SUBMITTED}") == 0


async def test_the_same_reference_answers_200_with_the_same_body_and_409_with_another(app):
    async with running(app) as (client, rt):
        body = proposal()
        first = await client.post("/procurements", json=body)
        again = await client.post("/procurements", json=body)
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        other = dict(body, title="something else")
        assert (await client.post("/procurements", json=other)).status_code == 409
        assert await count(rt, CaseRow) == 1


async def test_a_repeat_matches_a_case_whose_stored_text_another_serializer_wrote(app):
    """The repeat check compares the stored proposal text first, then the proposal it reads back: a case whose
    text differs only in form (key order, spacing, as another serializer writes it) is the same proposal."""
    async with running(app) as (client, rt):
        body = proposal()
        first = (await client.post("/procurements", json=body)).json()
        async with rt.factory() as s, s.begin():
            row = (await s.exec(select(CaseRow).where(CaseRow.id == first["id"]))).one()
            row.proposal = json.dumps(json.loads(row.proposal), sort_keys=True, indent=1)
        again = await client.post("/procurements", json=body)
        assert again.status_code == 200 and again.json()["id"] == first["id"]
        assert (await client.post("/procurements", json=dict(body, title="something else"))).status_code == 409
        assert await count(rt, CaseRow) == 1


async def test_a_proposal_on_the_stream_becomes_a_case_like_a_posted_one(app, redis_client, prefix):
    async with running(app) as (client, rt):
        body = proposal()
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, json.dumps(body))
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, json.dumps(body))  # same again: one case
        case = await wait_for(lambda: _by_ref(client, body["reference"]), message="case from the stream")
        assert case["proposal"]["reference"] == body["reference"]
        await wait_for(lambda: _pending_zero(redis_client, prefix, streams.SUBMIT_PROCUREMENT), message="acked")
        assert await count(rt, CaseRow) == 1


async def _by_ref(client, ref):
    r = await client.get(f"/procurements/by-reference/{ref}")
    return r.json() if r.status_code == 200 else None


async def _pending_zero(r, prefix, stream):
    info = await r.xpending(f"{prefix}{stream}", "applications")
    return info["pending"] == 0


async def test_poison_on_the_submit_stream_is_dead_lettered_and_the_next_message_still_processed(
    app, redis_client, prefix
):
    async with running(app) as (client, rt):
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, b"\xff not json")
        bad = proposal()
        bad["participants"] = ["PL", "ZZ"]
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, json.dumps(bad))
        good = proposal()
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, json.dumps(good))
        await wait_for(lambda: _by_ref(client, good["reference"]), message="the good proposal's case")
        letters = (await client.get("/dead-letters")).json()["items"]
        assert len(letters) == 2, letters
        assert all(dl["stream"] == streams.SUBMIT_PROCUREMENT and dl["attempts"] == 1 for dl in letters)
        assert any("participants.1" in dl["error"] for dl in letters)
        await wait_for(lambda: _pending_zero(redis_client, prefix, streams.SUBMIT_PROCUREMENT), message="acked")


async def test_a_corrected_dead_letter_replayed_completes_the_intake(app, redis_client, prefix):
    async with running(app) as (client, rt):
        bad = proposal()
        bad["participants"] = ["PL", "ZZ"]
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, json.dumps(bad))
        letters = await wait_for(lambda: _letters(client), message="dead letter")
        fixed = dict(bad, participants=["PL", "LT"])
        r = await client.post(f"/dead-letters/{letters[0]['id']}/replay", json={"payload": fixed})
        assert r.status_code == 200 and r.json()["status"] == "replayed"
        await wait_for(lambda: _by_ref(client, bad["reference"]), message="case after replay")
        again = await client.post(f"/dead-letters/{letters[0]['id']}/replay")
        assert again.status_code == 409


async def _letters(client):
    return (await client.get("/dead-letters", params={"status": "open"})).json()["items"]


async def test_results_move_the_case_to_the_end_and_duplicates_change_nothing(app, redis_client, prefix):
    async with running(app) as (client, rt):
        created = (await client.post("/procurements", json=proposal())).json()
        submitted = contracts.ProcurementSubmitted.model_validate(
            (await wait_for(lambda: read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED)))[0]
        )
        verified = verification_completed(created["id"], submitted.event_id, checked_at=submitted.occurred_at)
        for _ in range(3):
            await xadd(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED, verified)
        await wait_for(lambda: _status(client, created["id"], "loan_requested"), message="loan_requested")
        requests = await wait_for(lambda: read_all(redis_client, prefix, streams.LOAN_REQUESTED))
        loan_request = contracts.LoanRequested.model_validate(requests[0])
        assert loan_request.financing[0].amount_eur == contracts.FinancingLine(member_state="PL", amount_eur="950000.00").amount_eur
        approved = contracts.LoanApproved(
            correlation_id=created["id"], case_id=created["id"], causation_id=loan_request.event_id,
            loans=[contracts.ApprovedLoan(loan_id="L1", member_state="PL", amount_eur="950000.00")],
        )
        await xadd(redis_client, prefix, streams.LOAN_APPROVED, approved)
        await xadd(redis_client, prefix, streams.LOAN_APPROVED, approved)
        case = await wait_for(lambda: _status(client, created["id"], "loan_approved"), message="loan_approved")
        assert case["loan"]["loans"][0]["amount_eur"] == "950000.00"
        await wait_for(lambda: _pending_zero(redis_client, prefix, streams.LOAN_APPROVED), message="acked")
        timeline = (await client.get(f"/procurements/{created['id']}/timeline")).json()["items"]
        types = [t["type"] for t in timeline]
        assert types == ["ProcurementSubmitted", "OriginVerificationCompleted", "LoanRequested", "LoanApproved"]
        assert len(await read_all(redis_client, prefix, streams.LOAN_REQUESTED)) == 1
        assert (await client.post(f"/procurements/{created['id']}/withdraw", json={"reason": "x"})).status_code == 409


async def test_a_message_that_keeps_failing_is_retried_then_dead_lettered_with_its_attempts(app, redis_client, prefix):
    async with running(app) as (client, rt):
        ghost = str(uuid.uuid4())
        event = contracts.LoanApproved(correlation_id=ghost, case_id=ghost, loans=[])
        entry = await xadd(redis_client, prefix, streams.LOAN_APPROVED, event)
        letters = await wait_for(lambda: _letters(client), timeout=20, message="dead letter after retries")
        dl = letters[0]
        assert dl["entry_id"] == entry and dl["attempts"] == rt.settings.max_attempts
        assert dl["error_kind"] == "handler" and "not (yet) known" in dl["error"]
        assert dl["first_failed_at"] < dl["last_failed_at"]
        await wait_for(lambda: _pending_zero(redis_client, prefix, streams.LOAN_APPROVED), message="acked")
        r = await client.post(f"/dead-letters/{dl['id']}/discard", json={"reason": "no such case"})
        assert r.json()["status"] == "discarded"


async def test_withdrawal_is_published_and_later_results_do_not_move_the_case(app, redis_client, prefix):
    async with running(app) as (client, rt):
        created = (await client.post("/procurements", json=proposal())).json()
        r = await client.post(f"/procurements/{created['id']}/withdraw", json={"reason": "budget cut"})
        assert r.status_code == 200 and r.json()["status"] == "withdrawn"
        events = await wait_for(lambda: read_all(redis_client, prefix, streams.PROCUREMENT_WITHDRAWN))
        assert events[0]["case_id"] == created["id"]
        await xadd(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED,
                   verification_completed(created["id"], None, checked_at=events[0]["occurred_at"]))
        await wait_for(lambda: _pending_zero(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED))
        assert (await client.get(f"/procurements/{created['id']}")).json()["status"] == "withdrawn"
        assert await count(rt, InboxRow) >= 1


async def test_the_list_pages_with_a_cursor_and_filters_by_member_state(app):
    async with running(app) as (client, rt):
        for i in range(5):
            assert (await client.post("/procurements", json=proposal(f"LIST-{i}"))).status_code == 201
        other = proposal("LIST-RO", lead_member_state="RO", participants=["RO", "BG"],
                         financing=[{"member_state": "RO", "amount_eur": "1.00"}])
        assert (await client.post("/procurements", json=other)).status_code == 201
        page1 = (await client.get("/procurements", params={"limit": 4})).json()
        assert len(page1["items"]) == 4 and page1["next_cursor"]
        page2 = (await client.get("/procurements", params={"limit": 4, "cursor": page1["next_cursor"]})).json()
        refs = [c["reference"] for c in page1["items"] + page2["items"]]
        assert len(refs) == 6 and len(set(refs)) == 6 and page2["next_cursor"] is None
        ro = (await client.get("/procurements", params={"member_state": "BG"})).json()["items"]
        assert [c["reference"] for c in ro] == ["LIST-RO"]


async def test_a_message_from_a_dead_consumer_is_reclaimed_and_processed(database_url, redis_client, prefix):
    app = build_app(Settings(database_url=database_url, stream_prefix=prefix, consumer_name="t1",
                             **{**FAST, "claim_idle_ms": 1000}))
    async with running(app) as (client, rt):
        body = proposal()
        key = f"{prefix}{streams.SUBMIT_PROCUREMENT}"
        await redis_client.xadd(key, {wire.DATA: json.dumps(body)})
        # another consumer of the group takes it and dies without acknowledging
        await redis_client.xreadgroup("applications", "crashed-replica", {key: ">"}, count=10)
        await wait_for(lambda: _by_ref(client, body["reference"]), timeout=20, message="reclaimed after idle time")
        assert await count(rt, DeadLetter) == 0


async def test_concurrent_posts_share_transactions_and_each_gets_its_own_answer(app, redis_client, prefix):
    """Group commit: 60 concurrent POSTs (40 new references, 10 repeats, 10 conflicting) are answered one by
    one — 201 for each new case, 200 with the same case for a repeat, 409 for a different proposal under a
    taken reference — and fewer transactions than requests carried them."""
    import asyncio

    async with running(app) as (client, rt):
        taken = proposal(f"T-TAKEN-{uuid.uuid4().hex[:6]}")
        assert (await client.post("/procurements", json=taken)).status_code == 201
        new = [proposal() for _ in range(40)]
        conflicting = [dict(taken, contractor=dict(taken["contractor"], name=f"Other {i}")) for i in range(10)]
        bodies = new + new[:10] + conflicting
        answers = await asyncio.gather(*(client.post("/procurements", json=b) for b in bodies))
        codes = [a.status_code for a in answers]
        assert sorted(codes[:40] + codes[40:50]).count(201) + sorted(codes[:40] + codes[40:50]).count(200) == 50
        assert codes[50:] == [409] * 10
        ids = {}
        for body, a in zip(bodies[:50], answers[:50], strict=True):
            ids.setdefault(body["reference"], set()).add(a.json()["id"])
        assert len(ids) == 40 and all(len(v) == 1 for v in ids.values())  # a repeat names the same case
        assert await count(rt, CaseRow) == 41
        batcher = rt.deps.intake
        assert batcher.batches < 51 and batcher.fallbacks == 0

        async def all_published():
            xs = await read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED)
            return xs if len(xs) >= 41 else None

        published = await wait_for(all_published, message="one ProcurementSubmitted per case")
        assert len(published) == 41
        assert len({e["case_id"] for e in published}) == 41


async def test_when_a_shared_intake_transaction_fails_each_request_is_redone_alone(app, monkeypatch):
    """E.g. a replica committed one of the references first: the batch's commit fails; every request still
    gets its own answer from the single-request path."""
    import asyncio

    from safe_procurement.services.applications.service_layer import handlers

    real = handlers.prefetch_references
    calls = {"n": 0}

    async def fail_once(session, proposals):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated failure of the shared transaction")
        await real(session, proposals)

    monkeypatch.setattr(handlers, "prefetch_references", fail_once)
    async with running(app) as (client, rt):
        bodies = [proposal() for _ in range(5)]
        answers = await asyncio.gather(*(client.post("/procurements", json=b) for b in bodies))
        assert [a.status_code for a in answers] == [201] * 5
        assert await count(rt, CaseRow) == 5
        assert rt.deps.intake.fallbacks == 1
