"""Subscriber layer with FastStream's in-memory TestRedisBroker: no Redis, a real SQLite database."""

from __future__ import annotations

import uuid

import pytest
from faststream.redis import TestRedisBroker
from sqlalchemy import func
from sqlmodel import select

from safe_procurement.services.applications.adapters.tables import CaseParticipant, CaseRow
from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.main import build_app
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.tables import DeadLetter, OutboxRow
from tests import dbs
from tests.builders import proposal, verification_completed


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
    app = build_app(settings, redis=RecordingRedis())  # type: ignore[arg-type]
    rt = app.state.runtime
    await db.migrate(settings.database_url, rt.spec.migrations)  # the lifespan's first step; the broker is the test's
    yield rt
    await rt.engine.dispose()


async def count(rt, model) -> int:
    async with rt.factory() as s:
        return (await s.exec(select(func.count()).select_from(model))).one()


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
    # the Member States each case concerns: its participants and its lenders (docs/security.md)
    concerned = {b["reference"]: set(b["participants"]) | {f["member_state"] for f in b.get("financing") or []}
                 for b in bodies}
    assert {cases[b["reference"]].seq: concerned[b["reference"]] for b in bodies} == by_seq


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


async def test_the_loan_request_carries_the_stored_proposals_terms_exactly(wired):
    """The loan request is built from the stored proposal's JSON (not validated again): the same terms as the
    validated proposal gives, amounts exact."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from safe_procurement.shared import contracts

    body = proposal()
    first = dict(body["end_products"][0])
    body["end_products"] = [first, {**first, "name": "second product", "category": "cyber"}]
    body["financing"] = [{"member_state": "PL", "amount_eur": "950000.01"}, {"member_state": "LT", "amount_eur": "0.99"}]
    expected = contracts.Proposal.model_validate(body)
    async with TestRedisBroker(wired.broker) as br:
        await br.publish(body, stream=streams.SUBMIT_PROCUREMENT)
        async with wired.factory() as s:
            case = (await s.exec(select(CaseRow))).one()
            await s.exec(update(CaseRow).values(status="verifying"))  # as the relay's publish would
            await s.commit()
        done = verification_completed(case.id, case.verification_request_id, checked_at=datetime.now(UTC))
        await br.publish(done.model_dump(mode="json"), stream=streams.ORIGIN_VERIFICATION_COMPLETED)
    async with wired.factory() as s:
        [row] = (await s.exec(select(OutboxRow).where(OutboxRow.event_type == "LoanRequested"))).all()
    request = contracts.LoanRequested.model_validate_json(row.payload)
    assert request.categories == expected.categories == ["ammunition_and_missiles", "cyber"]
    assert [(f.member_state, f.amount_eur) for f in request.financing] == [
        (f.member_state, f.amount_eur) for f in expected.financing]
    assert str(request.financing[0].amount_eur) == "950000.01"
    assert (request.lead_member_state, request.participants, request.contract_signed_on) == (
        expected.lead_member_state, expected.participants, expected.contract_signed_on)
