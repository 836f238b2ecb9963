"""Subscriber layer with FastStream's in-memory TestRedisBroker: no Redis, a real SQLite database."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from faststream.redis import TestRedisBroker
from sqlalchemy import func
from sqlmodel import select

from services.applications.adapters.tables import CaseParticipant, CaseRow
from services.applications.config import Settings
from services.applications.main import build_app
from shared.contracts import streams
from shared.kit import db
from shared.kit.tables import DeadLetter, OutboxRow
from tests import dbs

DEMO = Path(__file__).resolve().parents[2] / "services" / "demo" / "proposal.json"


class RecordingRedis:
    """Stands in for Redis where the subscriber acknowledges entries."""

    def __init__(self) -> None:
        self.acked: list[str] = []

    async def xack(self, _stream: str, _group: str, *ids: str) -> int:
        self.acked.extend(ids)
        return len(ids)


@pytest.fixture
async def wired(tmp_path):
    settings = Settings(database_url=dbs.url(tmp_path, "a"), consumer_name="t")
    app = build_app(settings)
    rt = app.state.runtime
    await db.migrate(settings.database_url, rt.spec.migrations)
    rt.engine = db.make_engine(settings.database_url)
    rt.factory = rt.messaging.factory = db.session_factory(rt.engine)
    rt.messaging.redis = RecordingRedis()
    yield rt
    await rt.engine.dispose()


async def count(rt, model) -> int:
    async with rt.factory() as s:
        return (await s.exec(select(func.count()).select_from(model))).one()


def proposal() -> dict:
    body = json.loads(DEMO.read_text())
    body["reference"] = f"TB-{uuid.uuid4().hex[:8]}"
    return body


async def test_a_proposal_published_on_the_submit_stream_creates_one_case_and_one_outbox_event(wired):
    async with TestRedisBroker(wired.broker) as br:
        body = proposal()
        await br.publish(body, stream=streams.SUBMIT_PROCUREMENT)
        await br.publish(body, stream=streams.SUBMIT_PROCUREMENT)
    assert await count(wired, CaseRow) == 1
    async with wired.factory() as s:
        rows = (await s.exec(select(OutboxRow))).all()
    assert [r.stream for r in rows] == [streams.PROCUREMENT_SUBMITTED]
    assert len(wired.messaging.redis.acked) == 2


async def test_a_batch_of_submissions_stores_each_case_with_its_own_participants(wired):
    """The batch path adds cases without a flush each; the participant rows still get their case's seq."""
    bodies = []
    for i, parts in enumerate((["PL", "DE"], ["FR", "IT", "ES"], ["PL", "DE"])):
        body = proposal()
        body.update(lead_member_state=parts[0], participants=parts, reference=f"TB-BATCH-{uuid.uuid4().hex[:6]}-{i}")
        bodies.append(body)
    async with TestRedisBroker(wired.broker) as br:
        for body in [*bodies, bodies[0]]:  # the repeated reference in the same run stays one case
            await br.publish(body, stream=streams.SUBMIT_PROCUREMENT)
    async with wired.factory() as s:
        cases = {c.reference: c for c in (await s.exec(select(CaseRow))).all()}
        parts = (await s.exec(select(CaseParticipant))).all()
    assert set(cases) == {b["reference"] for b in bodies}
    by_seq: dict[int, set[str]] = {}
    for p in parts:
        by_seq.setdefault(p.case_seq, set()).add(p.country)
    assert {cases[b["reference"]].seq: set(b["participants"]) for b in bodies} == by_seq


async def test_an_invalid_proposal_on_the_stream_is_dead_lettered_not_dropped(wired):
    async with TestRedisBroker(wired.broker) as br:
        body = proposal()
        body["end_products"] = []
        await br.publish(body, stream=streams.SUBMIT_PROCUREMENT)
    assert await count(wired, CaseRow) == 0
    async with wired.factory() as s:
        letter = (await s.exec(select(DeadLetter))).one()
    assert letter.error_kind == "validation" and "end_products" in letter.error
    assert wired.messaging.redis.acked, "a dead-lettered entry is acknowledged, never left to loop"


async def test_an_event_of_an_unknown_schema_version_is_dead_lettered(wired):
    async with TestRedisBroker(wired.broker) as br:
        await br.publish({"event_id": str(uuid.uuid4()), "event_type": "LoanApproved", "schema_version": 99,
                          "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "c", "producer": "loan_disbursement",
                          "case_id": "c", "loans": []}, stream=streams.LOAN_APPROVED)
    async with wired.factory() as s:
        letter = (await s.exec(select(DeadLetter))).one()
    assert "schema_version" in letter.error
