"""Reliability of every consumer, in-process on a real Redis: poison messages are dead-lettered on the first
try and the consumer goes on; a corrected replay completes the case; every event type delivered twice changes
nothing; a crash between XADD and marking the outbox row sent re-publishes harmlessly; nothing published
before a service's first start is missed; shutdown finishes in-flight handlers or leaves them pending."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.tables import DeadLetter, InboxRow, OutboxRow
from tests import dbs
from tests.builders import NOW, loan_requested, proposal, reverification, submitted, verification_completed
from tests.integration.helpers import FAST, publish_registry_seed, read_all, xadd


def as_json(event: Any) -> dict[str, Any]:
    return json.loads(event.model_dump_json()) if hasattr(event, "model_dump_json") else dict(event)


def _anchor() -> dict[str, Any]:
    """A chain head another service published (every service keeps the others' heads)."""
    from safe_procurement.shared.contracts.audit import AuditAnchorPublished

    return as_json(AuditAnchorPublished(correlation_id="audit/elsewhere", producer="elsewhere", service="elsewhere",
                                        seq=1, hash="a" * 64))


def poisons(valid: dict[str, Any]) -> list[tuple[str, str | bytes]]:
    """The three kinds of poison, and the word their dead-letter reason must contain."""
    return [
        ("not JSON", b"\xff{this is not json"),
        ("wrong schema", json.dumps({"hello": "world", "event_id": str(uuid.uuid4())})),
        ("unknown version", json.dumps({**valid, "schema_version": 99})),
    ]


async def letters(rt: Any, stream: str | None = None) -> list[DeadLetter]:
    async with rt.factory() as s:
        q = select(DeadLetter)
        if stream:
            q = q.where(DeadLetter.stream == stream)
        return list((await s.exec(q.order_by(DeadLetter.id))).all())


async def inbox_has(rt: Any, event_id: Any) -> bool:
    async with rt.factory() as s:
        return (await s.get(InboxRow, str(event_id))) is not None


async def count(rt: Any, model: Any, *where: Any) -> int:
    async with rt.factory() as s:
        q = select(func.count()).select_from(model)
        for w in where:
            q = q.where(w)
        return int((await s.exec(q)).one())


async def all_published(rt: Any) -> bool:
    """No outbox row left unsent: every event the handlers wrote is on its stream."""
    return await count(rt, OutboxRow, OutboxRow.published_at.is_(None)) == 0  # type: ignore[union-attr]


async def settled(r: Any, prefix: str, group: str, names: list[str]) -> bool:
    """Every entry of these streams delivered to the group and acknowledged."""
    for name in names:
        key = f"{prefix}{name}"
        if not await r.exists(key):
            continue
        groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g for g in await r.xinfo_groups(key)}
        g = groups.get(group)
        if g is None or int(g["pending"]) or (g.get("lag") or 0):
            return False
    return True


async def poison_then_valid(rt: Any, redis_client: Any, prefix: str, version_bad: dict[str, Any],
                            valid: dict[str, Any]) -> None:
    """On every stream the service consumes, its poisons (built from `version_bad`) then its `valid` message;
    each poison dead-lettered."""
    for stream in rt.messaging.subscriptions:
        for _what, payload in poisons(version_bad[stream]):
            await xadd(redis_client, prefix, stream, payload)
        await xadd(redis_client, prefix, stream, json.dumps(valid[stream]))
    for stream in rt.messaging.subscriptions:
        await assert_poison_dead_lettered(rt, stream, valid[stream])


async def assert_poison_dead_lettered(rt: Any, stream: str, valid: dict[str, Any]) -> None:
    dls = await wait_for(lambda: _at_least(letters(rt, stream), 3), message=f"3 dead letters on {stream}")
    assert len(dls) == 3, [(d.error, d.payload) for d in dls]
    assert all(d.attempts == 1 and d.error_kind == "validation" and d.status == "open" for d in dls)
    errors = " | ".join(d.error for d in dls)
    assert "schema_version" in errors, errors
    assert any("Invalid JSON" in d.error or "json" in d.error.lower() for d in dls), errors
    assert any("hello" in d.error or "Field required" in d.error for d in dls), errors


async def _at_least(coro: Any, n: int) -> Any:
    items = await coro
    return items if len(items) >= n else None


def version_letter(dls: list[DeadLetter]) -> DeadLetter:
    [dl] = [d for d in dls if "schema_version" in d.error]
    return dl


# --- applications ----------------------------------------------------------------------------------------


@pytest.fixture
def apps_app(tmp_path, prefix, redis_url):
    from safe_procurement.services.applications.config import Settings
    from safe_procurement.services.applications.main import build_app

    return build_app(Settings(database_url=dbs.url(tmp_path, "apps"), stream_prefix=prefix,
                              consumer_name="rel-apps", **FAST))


async def _case_verifying(client: Any, redis_client: Any, prefix: str, **changes: Any) -> tuple[str, str]:
    """A posted case, now verifying; returns its id and the event id of its verification request."""
    r = await client.post("/procurements", json=proposal(**changes))
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]

    async def request_id() -> str | None:
        for ev in await read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED):
            if ev["case_id"] == case_id:
                return str(ev["event_id"])
        return None

    rid = await wait_for(request_id, message="ProcurementSubmitted published")
    await wait_for(lambda: _status_is(client, case_id, "verifying"), message="verifying")
    return case_id, rid


async def _status_is(client: Any, case_id: str, status: str) -> dict[str, Any] | None:
    case = (await client.get(f"/procurements/{case_id}")).json()
    return case if case["status"] == status else None


async def test_applications_dead_letters_poison_on_every_input_stream_and_a_corrected_replay_completes_the_case(
    apps_app, redis_client, prefix
):
    async with running(apps_app) as (client, rt):
        subs = rt.messaging.subscriptions
        case_a, rid_a = await _case_verifying(client, redis_client, prefix)
        case_b, rid_b = await _case_verifying(client, redis_client, prefix)
        valid: dict[str, Any] = {
            streams.SUBMIT_PROCUREMENT: proposal(),
            streams.ORIGIN_VERIFICATION_COMPLETED: as_json(verification_completed(case_a, rid_a)),
            streams.LOAN_APPROVED: as_json(contracts.LoanApproved(correlation_id=case_a, case_id=case_a, loans=[])),
            streams.LOAN_REJECTED: as_json(contracts.LoanRejected(correlation_id=case_a, case_id=case_a, reasons=[])),
        }
        for producer, stream in streams.OPERATOR_ACTION_RECORDED.items():
            valid[stream] = as_json(contracts.OperatorActionRecorded(
                correlation_id=case_a, case_id=case_a, producer=producer, action="test.poke", actor="tester",
                target=f"{producer}/x"))
        valid[streams.AUDIT_ANCHORS] = _anchor()
        # its own verification requests, read back (a case already verifying stays so)
        submitted = contracts.ProcurementSubmitted(correlation_id=case_a, case_id=case_a,
                                                   proposal=contracts.Proposal.model_validate(proposal()))
        valid[streams.PROCUREMENT_SUBMITTED] = as_json(submitted)
        valid[streams.REVERIFICATION_REQUESTED] = as_json(contracts.ReverificationRequested(
            correlation_id=case_a, case_id=case_a, proposal=submitted.proposal, requested_by="tester", reason="poke"))
        assert set(valid) == set(subs), "a new input stream needs a poison test"
        # the unknown-version poison of the verification stream is case B's result: replaying it fixed completes B
        version_bad = {**valid, streams.ORIGIN_VERIFICATION_COMPLETED: as_json(verification_completed(case_b, rid_b))}
        await poison_then_valid(rt, redis_client, prefix, version_bad, valid)
        # the consumer went on: each stream's valid message after the poison was processed
        good = await wait_for(lambda: client.get(f"/procurements/by-reference/{valid[streams.SUBMIT_PROCUREMENT]['reference']}"),
                              message="the good proposal after the poison")
        assert good.status_code == 200
        for stream, body in valid.items():
            if stream != streams.SUBMIT_PROCUREMENT:
                await wait_for(lambda b=body: inbox_has(rt, b["event_id"]), message=f"valid message on {stream}")
        types = [t["type"] for t in (await client.get(f"/procurements/{case_a}/timeline")).json()["items"]]
        assert types.count("OperatorActionRecorded") == 4 and types.count("OriginVerificationCompleted") == 1
        await wait_for(lambda: settled(redis_client, prefix, "applications", list(subs)), message="all acked")

        # replay the corrected payloads: case B completes, the proposal becomes a case
        dl = version_letter(await letters(rt, streams.ORIGIN_VERIFICATION_COMPLETED))
        fixed = {**json.loads(dl.payload), "schema_version": 1}
        r = await client.post(f"/dead-letters/{dl.id}/replay", json={"payload": fixed})
        assert r.status_code == 200 and r.json()["status"] == "replayed", r.text
        await wait_for(lambda: _status_is(client, case_b, "loan_requested"), message="case B after the replay")
        dl = version_letter(await letters(rt, streams.SUBMIT_PROCUREMENT))
        fixed = {k: v for k, v in json.loads(dl.payload).items() if k != "schema_version"}
        r = await client.post(f"/dead-letters/{dl.id}/replay", json={"payload": fixed})
        assert r.status_code == 200
        await wait_for(lambda: _ok(client.get(f"/procurements/by-reference/{fixed['reference']}")),
                       message="case after the replayed proposal")
        # replays are audited and the one about case B shows in its timeline
        await wait_for(lambda: _timeline_has(client, case_b, "OperatorActionRecorded"), message="replay in timeline")
        assert (await client.post(f"/dead-letters/{dl.id}/replay")).status_code == 409


async def _ok(coro: Any) -> Any:
    r = await coro
    return r if r.status_code == 200 else None


async def _timeline_has(client: Any, case_id: str, type_: str) -> bool:
    items = (await client.get(f"/procurements/{case_id}/timeline")).json()["items"]
    return any(t["type"] == type_ for t in items)


async def test_applications_every_event_type_delivered_twice_changes_nothing(apps_app, redis_client, prefix):
    async with running(apps_app) as (client, rt):
        subs = list(rt.messaging.subscriptions)
        # the submit command twice: one case, one ProcurementSubmitted
        body = proposal()
        for _ in range(2):
            await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, json.dumps(body))
        case = await wait_for(lambda: _ok(client.get(f"/procurements/by-reference/{body['reference']}")),
                              message="case from the command")
        case_a = case.json()["id"]
        case_b, rid_b = await _case_verifying(client, redis_client, prefix)
        await wait_for(lambda: _status_is(client, case_a, "verifying"), message="verifying")
        rid_a = next(str(e["event_id"]) for e in await read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED)
                     if e["case_id"] == case_a)
        twice = [
            (streams.ORIGIN_VERIFICATION_COMPLETED, verification_completed(case_a, rid_a)),
            (streams.ORIGIN_VERIFICATION_COMPLETED, verification_completed(case_b, rid_b)),
        ]
        for stream, ev in twice:
            await xadd(redis_client, prefix, stream, ev)
            await xadd(redis_client, prefix, stream, ev)
        await wait_for(lambda: _status_is(client, case_a, "loan_requested"), message="A loan_requested")
        await wait_for(lambda: _status_is(client, case_b, "loan_requested"), message="B loan_requested")
        decisions = [
            (streams.LOAN_APPROVED, contracts.LoanApproved(correlation_id=case_a, case_id=case_a, loans=[
                contracts.ApprovedLoan(loan_id="L-1", member_state="PL", amount_eur=Decimal("950000.00"))])),
            (streams.LOAN_REJECTED, contracts.LoanRejected(correlation_id=case_b, case_id=case_b, reasons=[
                contracts.LoanDecisionReason(member_state="PL", rule="L-2", message="over the facility")])),
        ]
        for stream, ev in decisions:
            await xadd(redis_client, prefix, stream, ev)
            await xadd(redis_client, prefix, stream, ev)
        await wait_for(lambda: _status_is(client, case_a, "loan_approved"), message="A approved")
        await wait_for(lambda: _status_is(client, case_b, "loan_rejected"), message="B rejected")
        # the operator actions only then: they come on streams of their own, read by other consumers, so sent
        # together with the decision they could be recorded before it and the timeline below would differ
        actions = [(stream, contracts.OperatorActionRecorded(correlation_id=case_a, case_id=case_a, producer=p,
                                                             action="test.poke", actor="tester", target=f"{p}/x"))
                   for p, stream in streams.OPERATOR_ACTION_RECORDED.items()]
        for stream, ev in actions:
            await xadd(redis_client, prefix, stream, ev)
            await xadd(redis_client, prefix, stream, ev)
        twice = [*decisions, *actions]
        await wait_for(lambda: settled(redis_client, prefix, "applications", subs), message="all acked")
        # what the handlers wrote is all on the streams now: a doubled effect would show below
        await wait_for(lambda: all_published(rt), message="every outbox row published")

        cases = (await client.get("/procurements", params={"limit": 100})).json()["items"]
        assert sorted(c["id"] for c in cases) == sorted([case_a, case_b])
        requests = await read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED)
        assert sorted(e["case_id"] for e in requests) == sorted([case_a, case_b])
        requested = await read_all(redis_client, prefix, streams.LOAN_REQUESTED)
        assert sorted(e["case_id"] for e in requested) == sorted([case_a, case_b])
        a = [t["type"] for t in (await client.get(f"/procurements/{case_a}/timeline")).json()["items"]]
        assert a == ["ProcurementSubmitted", "OriginVerificationCompleted", "LoanRequested", "LoanApproved",
                     *["OperatorActionRecorded"] * 4], a
        b = [t["type"] for t in (await client.get(f"/procurements/{case_b}/timeline")).json()["items"]]
        assert b == ["ProcurementSubmitted", "OriginVerificationCompleted", "LoanRequested", "LoanRejected"], b
        assert (await client.get(f"/procurements/{case_a}")).json()["loan"]["loans"][0]["loan_id"] == "L-1"
        assert await letters(rt) == []
        assert sum(s.duplicates for s in rt.messaging.subscriptions.values()) >= len(twice) + 2


# --- outbox crash safety -----------------------------------------------------------------------------------


async def test_a_crash_between_xadd_and_marking_the_row_sent_republishes_and_consumers_process_it_once(
    apps_app, redis_client, prefix, monkeypatch
):
    from safe_procurement.shared.kit.outbox import OutboxRelay

    crashed: list[int] = []
    real_send = OutboxRelay._send

    async def crash_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await real_send(self, *args, **kwargs)
        # Redis has executed the round (the events are on their streams); the process "dies" before the relay's
        # transaction, which marks the rows sent, commits
        if not crashed:
            crashed.append(1)
            raise ConnectionError("simulated crash after XADD, before marking the rows sent")
        return result

    monkeypatch.setattr(OutboxRelay, "_send", crash_once)
    async with running(apps_app) as (client, rt):
        r = await client.post("/procurements", json=proposal())
        case_id = r.json()["id"]
        published = await wait_for(lambda: _at_least(read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED), 2),
                                   message="the event published twice (before and after the crash)")
        assert crashed and len({e["event_id"] for e in published}) == 1
        # the relay marks the rows sent in the same transaction as its XADD round: wait for its commit
        # (on PostgreSQL a reader can see the entries on the stream before that commit)
        async def all_marked_sent() -> bool:
            return await count(rt, OutboxRow, OutboxRow.published_at.is_(None)) == 0  # type: ignore[union-attr]

        await wait_for(all_marked_sent, message="outbox rows marked sent after the re-publish")
        await wait_for(lambda: _status_is(client, case_id, "verifying"), message="verifying")
        # a consumer of the stream (origin verification's inbox) processes it once: answer twice-published
        # request with one result, delivered twice too — one transition, one loan request
        ev = verification_completed(case_id, published[0]["event_id"])
        await xadd(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED, ev)
        await xadd(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED, ev)
        await wait_for(lambda: _status_is(client, case_id, "loan_requested"), message="loan_requested")
        await wait_for(lambda: settled(redis_client, prefix, "applications", list(rt.messaging.subscriptions)),
                       message="acked")
        assert len(await read_all(redis_client, prefix, streams.LOAN_REQUESTED)) == 1


async def test_an_xadd_refused_inside_the_publish_round_leaves_the_rows_unsent_until_redis_takes_it(
    apps_app, redis_client, prefix
):
    """An XADD Redis refuses (here: the stream's key holds a string; a round of one event, sent without MULTI —
    inside MULTI/EXEC, see test_kit_outbox) fails the whole round: the rows stay unsent and the relay publishes them,
    once, when Redis accepts them."""
    key = f"{prefix}{streams.PROCUREMENT_SUBMITTED}"
    refused: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = refused.append  # type: ignore[method-assign]
    logging.getLogger("safe.outbox").addHandler(handler)
    try:
        async with running(apps_app) as (client, rt):
            # after the start: the service reads this stream back too, and would not start on a string key
            await redis_client.set(key, "not a stream")
            r = await client.post("/procurements", json=proposal())
            assert r.status_code == 201
            # the round right after the commit and at least one of the relay task's, each refused
            async def refused_twice() -> bool:
                return len(refused) >= 2

            await wait_for(refused_twice, message="two refused publish rounds")
            assert await count(rt, OutboxRow, OutboxRow.published_at.is_(None)) == 1  # type: ignore[union-attr]
            assert await redis_client.type(key) == b"string"
            await redis_client.delete(key)
            published = await wait_for(lambda: _at_least(read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED), 1),
                                       message="the event published once Redis takes it")
            assert [e["case_id"] for e in published] == [r.json()["id"]]

            async def all_marked_sent() -> bool:
                return await count(rt, OutboxRow, OutboxRow.published_at.is_(None)) == 0  # type: ignore[union-attr]

            await wait_for(all_marked_sent, message="the outbox row marked sent")
            assert len(await read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED)) == 1
    finally:
        logging.getLogger("safe.outbox").removeHandler(handler)


# --- origin verification -----------------------------------------------------------------------------------


@pytest.fixture
def ov_app(tmp_path, prefix, redis_url):
    from safe_procurement.services.origin_verification import main as ov
    from safe_procurement.services.origin_verification.config import Settings

    settings = Settings(database_url=dbs.url(tmp_path, "ov"), stream_prefix=prefix,
                        consumer_name="rel-ov", replica_retry_s=0.1, **FAST)
    return ov.build_app(settings, clock=lambda: NOW)


async def _results(redis_client: Any, prefix: str) -> list[dict[str, Any]]:
    return await read_all(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED)


async def test_origin_verification_dead_letters_poison_on_every_input_stream_and_a_corrected_replay_completes_the_case(
    ov_app, redis_client, prefix
):
    async with running(ov_app) as (client, rt):
        subs = list(rt.messaging.subscriptions)
        countries, agreements, published = await publish_registry_seed(redis_client, prefix)
        await wait_for(lambda: _ok(client.get("/health/ready")), message="replica ready")
        first, later = submitted(), submitted()
        valid = {
            streams.PROCUREMENT_SUBMITTED: as_json(first),
            streams.REVERIFICATION_REQUESTED: as_json(reverification(first)),
            # registry events again with new ids: same versions, nothing changes
            streams.COUNTRY_STATUS_CHANGED: {**as_json(countries[0]), "event_id": str(uuid.uuid4())},
            streams.PARTNER_AGREEMENT_RECORDED: {**as_json(agreements[0]), "event_id": str(uuid.uuid4())},
            streams.REFERENCE_DATA_PUBLISHED: {**as_json(published), "event_id": str(uuid.uuid4())},
            streams.AUDIT_ANCHORS: _anchor(),
        }
        assert set(valid) == set(subs), "a new input stream needs a poison test"
        version_bad = {**valid, streams.PROCUREMENT_SUBMITTED: as_json(later)}
        await poison_then_valid(rt, redis_client, prefix, version_bad, valid)
        for stream, body in valid.items():
            await wait_for(lambda b=body: inbox_has(rt, b["event_id"]), message=f"valid message on {stream}")
        await wait_for(lambda: _at_least(_results(redis_client, prefix), 2), message="two results for the first case")
        assert {r["case_id"] for r in await _results(redis_client, prefix)} == {first.case_id}

        dl = version_letter(await letters(rt, streams.PROCUREMENT_SUBMITTED))
        r = await client.post(f"/dead-letters/{dl.id}/replay",
                              json={"payload": {**json.loads(dl.payload), "schema_version": 1}})
        assert r.status_code == 200 and r.json()["status"] == "replayed"
        done = await wait_for(lambda: _results_for(redis_client, prefix, later.case_id), message="result after replay")
        assert done[0]["result"]["outcome"] == "eligible" and done[0]["causation_id"] == str(later.event_id)
        await wait_for(lambda: settled(redis_client, prefix, "origin_verification", subs), message="all acked")


async def _results_for(redis_client: Any, prefix: str, case_id: str) -> list[dict[str, Any]] | None:
    found = [r for r in await _results(redis_client, prefix) if r["case_id"] == case_id]
    return found or None


async def test_origin_verification_every_event_type_delivered_twice_changes_nothing(ov_app, redis_client, prefix):
    async with running(ov_app) as (client, rt):
        subs = list(rt.messaging.subscriptions)
        countries, agreements, published = await publish_registry_seed(redis_client, prefix)
        await wait_for(lambda: _ok(client.get("/health/ready")), message="replica ready")
        before = (await client.get("/replica")).json()
        sub = submitted()
        twice = [
            (streams.COUNTRY_STATUS_CHANGED, countries[0]), (streams.PARTNER_AGREEMENT_RECORDED, agreements[0]),
            (streams.REFERENCE_DATA_PUBLISHED, published),
            (streams.PROCUREMENT_SUBMITTED, sub), (streams.REVERIFICATION_REQUESTED, reverification(sub)),
        ]
        for stream, ev in twice:
            await xadd(redis_client, prefix, stream, ev)
            await xadd(redis_client, prefix, stream, ev)
        await wait_for(lambda: _at_least(_results(redis_client, prefix), 2), message="results")
        await wait_for(lambda: settled(redis_client, prefix, "origin_verification", subs), message="all acked")
        await wait_for(lambda: all_published(rt), message="every outbox row published")
        results = await _results(redis_client, prefix)
        assert sorted(str(r["causation_id"]) for r in results) == sorted([str(sub.event_id), str(twice[-1][1].event_id)])
        history = (await client.get(f"/verifications/{sub.case_id}")).json()
        assert len(history["reports"]) == 2
        assert (await client.get("/replica")).json() == before
        assert await letters(rt) == []


# --- loan disbursement -----------------------------------------------------------------------------------


def _loan_settings(tmp_path: Path, prefix: str, consumer: str = "rel-loans", **changes: Any) -> Any:
    from safe_procurement.services.loan_disbursement.config import Settings

    return Settings(database_url=dbs.url(tmp_path, "loans"), stream_prefix=prefix,
                    consumer_name=consumer, **{**FAST, **changes})


@pytest.fixture
def loans_module():
    from safe_procurement.services.loan_disbursement import main

    return main


async def _decisions(redis_client: Any, prefix: str) -> list[dict[str, Any]]:
    """Loan decisions on the streams, one per event id (the relay publishes at least once)."""
    every = [*await read_all(redis_client, prefix, streams.LOAN_APPROVED),
             *await read_all(redis_client, prefix, streams.LOAN_REJECTED)]
    return list({d["event_id"]: d for d in every}.values())


async def test_loan_disbursement_dead_letters_poison_on_every_input_stream_and_a_corrected_replay_completes_the_case(
    loans_module, tmp_path, redis_client, prefix
):
    async with running(loans_module.build_app(_loan_settings(tmp_path, prefix))) as (client, rt):
        subs = list(rt.messaging.subscriptions)
        first, later = loan_requested(("PL", "950000.00")), loan_requested(("PL", "1000.00"))
        withdrawn = contracts.ProcurementWithdrawn(correlation_id=first.case_id, case_id=first.case_id, reason="x")
        valid = {streams.LOAN_REQUESTED: as_json(first), streams.PROCUREMENT_WITHDRAWN: as_json(withdrawn),
                 streams.AUDIT_ANCHORS: _anchor()}
        assert set(valid) == set(subs), "a new input stream needs a poison test"
        version_bad = {**valid, streams.LOAN_REQUESTED: as_json(later)}
        for stream in subs:
            for _what, payload in poisons(version_bad[stream]):
                await xadd(redis_client, prefix, stream, payload)
        # in order: the request is decided before the withdrawal releases it
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, json.dumps(valid[streams.LOAN_REQUESTED]))
        await wait_for(lambda: _at_least(_decisions(redis_client, prefix), 1), message="first decision")
        await xadd(redis_client, prefix, streams.PROCUREMENT_WITHDRAWN, json.dumps(valid[streams.PROCUREMENT_WITHDRAWN]))
        await xadd(redis_client, prefix, streams.AUDIT_ANCHORS, json.dumps(valid[streams.AUDIT_ANCHORS]))
        for stream in subs:
            await assert_poison_dead_lettered(rt, stream, valid[stream])
        for stream, body in valid.items():
            await wait_for(lambda b=body: inbox_has(rt, b["event_id"]), message=f"valid message on {stream}")

        dl = version_letter(await letters(rt, streams.LOAN_REQUESTED))
        r = await client.post(f"/dead-letters/{dl.id}/replay",
                              json={"payload": {**json.loads(dl.payload), "schema_version": 1}})
        assert r.status_code == 200
        decisions = await wait_for(lambda: _at_least(_decisions(redis_client, prefix), 2), message="decision after replay")
        assert {d["case_id"] for d in decisions} == {first.case_id, later.case_id}
        assert (await client.get("/ledger/check")).json()["ok"] is True
        await wait_for(lambda: settled(redis_client, prefix, "loan_disbursement", subs), message="all acked")


async def test_loan_disbursement_every_event_type_delivered_twice_changes_nothing(
    loans_module, tmp_path, redis_client, prefix
):
    async with running(loans_module.build_app(_loan_settings(tmp_path, prefix))) as (client, rt):
        subs = list(rt.messaging.subscriptions)
        before = (await client.get("/facilities/PL")).json()
        kept, released = loan_requested(("PL", "1000.00")), loan_requested(("PL", "2000.00"))
        for ev in (kept, kept, released, released):
            await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        await wait_for(lambda: _at_least(_decisions(redis_client, prefix), 2), message="decisions")
        withdrawn = contracts.ProcurementWithdrawn(correlation_id=released.case_id, case_id=released.case_id,
                                                   reason="withdrawn twice")
        await xadd(redis_client, prefix, streams.PROCUREMENT_WITHDRAWN, withdrawn)
        await xadd(redis_client, prefix, streams.PROCUREMENT_WITHDRAWN, withdrawn)
        await wait_for(lambda: inbox_has(rt, withdrawn.event_id), message="withdrawal")
        await wait_for(lambda: settled(redis_client, prefix, "loan_disbursement", subs), message="all acked")
        await wait_for(lambda: all_published(rt), message="every outbox row published")
        decisions = await _decisions(redis_client, prefix)
        assert sorted(d["case_id"] for d in decisions) == sorted([kept.case_id, released.case_id])
        assert all(d["event_type"] == "LoanApproved" for d in decisions)
        after = (await client.get("/facilities/PL")).json()
        assert Decimal(after["approved_eur"]) - Decimal(before["approved_eur"]) == Decimal("1000.00")
        loans = (await client.get("/loans", params={"case_id": kept.case_id})).json()["items"]
        assert len(loans) == 1
        assert (await client.get("/ledger/check")).json()["ok"] is True
        assert await letters(rt) == []


# --- consumer-group lifecycle, recovery, shutdown ---------------------------------------------------------------


async def test_events_published_before_a_services_first_start_are_not_missed(
    loans_module, tmp_path, redis_client, prefix
):
    early = [loan_requested(("PL", f"{1000 + i}.00")) for i in range(3)]
    for ev in early:  # the stream exists, the group does not: the service has never run
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
    assert await redis_client.exists(f"{prefix}{streams.LOAN_REQUESTED}")
    async with running(loans_module.build_app(_loan_settings(tmp_path, prefix))) as (client, rt):
        decisions = await wait_for(lambda: _at_least(_decisions(redis_client, prefix), 3), message="3 decisions")
        assert {d["case_id"] for d in decisions} == {e.case_id for e in early}
        groups = await redis_client.xinfo_groups(f"{prefix}{streams.LOAN_REQUESTED}")
        assert [g["name"] for g in groups] == [b"loan_disbursement"]


async def test_a_consumer_killed_with_entries_pending_processes_them_after_restart(
    loans_module, tmp_path, redis_client, prefix
):
    settings = _loan_settings(tmp_path, prefix, consumer="rel-loans-1")
    async with running(loans_module.build_app(settings)):
        pass  # first start: migrations, groups
    ev = loan_requested(("PL", "3000.00"))
    await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
    # what a consumer killed in the middle of its handler leaves behind: the entry read by it, never acknowledged
    read = await redis_client.xreadgroup("loan_disbursement", "rel-loans-1", {f"{prefix}{streams.LOAN_REQUESTED}": ">"})
    assert len(read[0][1]) == 1
    async with running(loans_module.build_app(settings)) as (client, rt):  # restart, same consumer name
        [decision] = await wait_for(lambda: _at_least(_decisions(redis_client, prefix), 1), message="decision")
        assert decision["case_id"] == ev.case_id
        await wait_for(lambda: settled(redis_client, prefix, "loan_disbursement", list(rt.messaging.subscriptions)),
                       message="acked")


async def test_another_replica_takes_over_the_pending_entries_of_a_dead_one(
    loans_module, tmp_path, redis_client, prefix
):
    async with running(loans_module.build_app(_loan_settings(tmp_path, prefix, consumer="rel-loans-dead"))):
        pass  # the dead replica ran once: groups exist
    ev = loan_requested(("PL", "4000.00"))
    await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
    key = f"{prefix}{streams.LOAN_REQUESTED}"
    # it read the request and died in its handler: the entry is pending for it and never acknowledged
    read = await redis_client.xreadgroup("loan_disbursement", "rel-loans-dead", {key: ">"})
    assert read and len(read[0][1]) == 1
    settings = _loan_settings(tmp_path, prefix, consumer="rel-loans-alive", claim_idle_ms=500)
    async with running(loans_module.build_app(settings)) as (client, rt):
        [decision] = await wait_for(lambda: _at_least(_decisions(redis_client, prefix), 1), message="taken over")
        assert decision["case_id"] == ev.case_id
        await wait_for(lambda: settled(redis_client, prefix, "loan_disbursement", [streams.LOAN_REQUESTED]),
                       message="acknowledged by the live replica")
        consumers = {c["name"]: c["pending"] for c in await redis_client.xinfo_consumers(key, "loan_disbursement")}
        assert consumers[b"rel-loans-dead"] == 0


async def _shut_down_while_handling(app: Any, redis_client: Any, prefix: str, ev: Any, seconds: float) -> Any:
    """Start `app`, hand it `ev` with a handler that works `seconds` first, and end the lifespan (what SIGTERM
    does) while that handler runs; returns the runtime."""
    started = asyncio.Event()
    async with running(app) as (_client, rt):
        sub = rt.messaging.subscriptions[streams.LOAN_REQUESTED]
        real = sub.handler

        async def slow(ctx: Any, event: Any) -> None:
            started.set()
            await asyncio.sleep(seconds)  # the handler's work: its length against the shutdown timeout is under test
            await real(ctx, event)

        sub.handler = slow
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        await asyncio.wait_for(started.wait(), 10)
    return rt


async def test_shutdown_finishes_an_in_flight_handler_within_the_timeout(loans_module, tmp_path, redis_client, prefix):
    settings = _loan_settings(tmp_path, prefix, consumer="rel-graceful", shutdown_timeout_s=10.0)
    ev = loan_requested(("PL", "5000.00"))
    rt = await _shut_down_while_handling(loans_module.build_app(settings), redis_client, prefix, ev, 2.5)
    # kit bug: while the broker waited for the handler, the group keeper saw stopped subscribers and restarted
    # them, so the service went on consuming after SIGTERM
    assert [s.stream for s in rt.messaging.subscriptions.values() if s.subscriber.running] == []
    # the lifespan has ended (what SIGTERM does): the handler was allowed to finish, committed and acknowledged
    pending = await redis_client.xpending(f"{prefix}{streams.LOAN_REQUESTED}", "loan_disbursement")
    assert pending["pending"] == 0
    [decision] = await _decisions(redis_client, prefix)  # published by the final relay flush
    assert decision["case_id"] == ev.case_id


async def test_shutdown_leaves_a_handler_slower_than_the_timeout_pending_for_the_next_start(
    loans_module, tmp_path, redis_client, prefix
):
    settings = _loan_settings(tmp_path, prefix, consumer="rel-slow", shutdown_timeout_s=0.5)
    ev = loan_requested(("PL", "6000.00"))
    await _shut_down_while_handling(loans_module.build_app(settings), redis_client, prefix, ev, 30)
    pending = await redis_client.xpending(f"{prefix}{streams.LOAN_REQUESTED}", "loan_disbursement")
    assert pending["pending"] == 1 and await _decisions(redis_client, prefix) == []
    async with running(loans_module.build_app(settings)) as (client, rt):
        [decision] = await wait_for(lambda: _at_least(_decisions(redis_client, prefix), 1), message="after restart")
        assert decision["case_id"] == ev.case_id
        assert (await client.get("/ledger/check")).json()["ok"] is True


async def test_shutdown_also_finishes_a_handler_running_on_the_retry_path(loans_module, tmp_path, redis_client, prefix):
    # kit bug: Messaging.stop() cancelled retry/reclaim/recovery tasks first, killing their in-flight handlers
    settings = _loan_settings(tmp_path, prefix, consumer="rel-retry-graceful", shutdown_timeout_s=10.0)
    ev = loan_requested(("PL", "7000.00"))
    started = asyncio.Event()
    async with running(loans_module.build_app(settings)) as (client, rt):
        sub = rt.messaging.subscriptions[streams.LOAN_REQUESTED]
        real, calls = sub.handler, []

        async def fails_once_then_slow(ctx: Any, event: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("transient failure: retried with backoff")
            started.set()
            await asyncio.sleep(1.5)  # work still in flight when shutdown begins: what is under test
            await real(ctx, event)

        sub.handler = fails_once_then_slow
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, ev)
        await asyncio.wait_for(started.wait(), 10)  # now running on the retry path, not FastStream's
    pending = await redis_client.xpending(f"{prefix}{streams.LOAN_REQUESTED}", "loan_disbursement")
    assert pending["pending"] == 0
    [decision] = await _decisions(redis_client, prefix)
    assert decision["case_id"] == ev.case_id


def _count_calls(rt: Any, stream: str, calls: list[int]) -> None:
    """Count the calls of the handler of `stream` (while the replica is empty, each one is a deferral)."""
    sub = rt.messaging.subscriptions[stream]
    real = sub.handler

    async def counting(ctx: Any, event: Any) -> None:
        calls.append(1)
        await real(ctx, event)

    sub.handler = counting


async def test_a_long_deferred_entry_taken_over_from_a_dead_consumer_is_not_dead_lettered(
    ov_app, tmp_path, redis_client, prefix
):
    # kit bug: every deferral re-claimed the entry with a plain XCLAIM, which counts as a delivery; an entry
    # deferred a dozen times and then taken over by XAUTOCLAIM was dead-lettered as "delivered N times
    # without completing (consumer crashed?)" although it had never failed.
    from safe_procurement.services.origin_verification.config import Settings
    from safe_procurement.services.origin_verification.main import build_app

    deferrals: list[int] = []
    event = submitted()
    async with running(ov_app) as (client, rt):  # replica empty: verification is deferred, again and again
        _count_calls(rt, streams.PROCUREMENT_SUBMITTED, deferrals)
        await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, event)
        await wait_for(lambda: _true(len(deferrals) >= 20), message="20 deferrals")
    # that consumer is gone; another replica with a short claim idle time takes its entry over
    other = build_app(Settings(database_url=dbs.url(tmp_path, "ov"), stream_prefix=prefix,
                               consumer_name="rel-ov-other", replica_retry_s=0.05, **{**FAST, "claim_idle_ms": 200}),
                      clock=lambda: NOW)
    async with running(other) as (client, rt):
        key = f"{prefix}{streams.PROCUREMENT_SUBMITTED}"
        later: list[int] = []
        _count_calls(rt, streams.PROCUREMENT_SUBMITTED, later)

        async def taken_over() -> bool:
            return any(c["name"] == b"rel-ov-other" and c["pending"] == 1
                       for c in await redis_client.xinfo_consumers(key, "origin_verification"))

        await wait_for(taken_over, message="the entry taken over by XAUTOCLAIM")
        await wait_for(lambda: _true(len(later) >= 3), message="three deferrals on the new consumer")
        await publish_registry_seed(redis_client, prefix)
        [done] = await wait_for(lambda: _results_for(redis_client, prefix, event.case_id), message="verified")
        assert done["causation_id"] == str(event.event_id)
        assert await letters(rt) == []


async def _true(value: bool) -> bool:
    return value


async def test_events_of_a_batch_go_out_right_after_its_commit_and_the_relay_covers_a_failed_attempt(
    apps_app, redis_client, prefix, monkeypatch
):
    """The consumer publishes what its batch emitted on the same connection right after the commit; if that
    attempt fails, the rows stay unsent and the relay task publishes them — once."""
    async with running(apps_app) as (client, rt):
        real = rt.relay._round
        calls: list[str] = []

        async def first_attempt_fails(connection: Any, then: Any = ()) -> Any:
            if connection is not None:  # a round right after a batch's commit (not the relay task's own)
                calls.append("inline")
                if len(calls) == 1:
                    raise ConnectionError("simulated failure of the publish right after the batch")
            return await real(connection, then)

        cases = []
        for _ in range(2):  # (the HTTP intake publishes its own batches the same way: before the patch)
            r = await client.post("/procurements", json=proposal())
            cases.append(r.json()["id"])
        await wait_for(lambda: _status_is(client, cases[-1], "verifying"), message="verifying")
        monkeypatch.setattr(rt.relay, "_round", first_attempt_fails)
        for case_id in cases:
            await wait_for(lambda case_id=case_id: _status_is(client, case_id, "verifying"), message="verifying")
            request = [e for e in await read_all(redis_client, prefix, streams.PROCUREMENT_SUBMITTED)
                       if e["case_id"] == case_id][0]
            ev = verification_completed(case_id, request["event_id"])
            await xadd(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED, ev)
            await wait_for(lambda case_id=case_id: _status_is(client, case_id, "loan_requested"),
                           message="loan_requested")

        async def both_requested() -> list[Any] | None:
            got = await read_all(redis_client, prefix, streams.LOAN_REQUESTED)
            return got if len(got) >= 2 else None

        requested = await wait_for(both_requested, message="a LoanRequested per case")
        assert sorted(e["case_id"] for e in requested) == sorted(cases)  # each once: none lost, none doubled
        assert len(calls) == 2  # the first batch's attempt failed (relay took over); the second went out inline
        assert await count(rt, OutboxRow, OutboxRow.published_at.is_(None)) == 0  # type: ignore[union-attr]
