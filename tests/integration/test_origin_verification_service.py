"""The origin verification service in-process on a real Redis and a real database: it follows the
registry's streams into its replica, defers verification until the replica is complete, answers each
request exactly once and keeps every report."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from safe_procurement.services.origin_verification.adapters.tables import ReportRow
from safe_procurement.services.origin_verification.config import Settings
from safe_procurement.services.origin_verification.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.tables import DeadLetter, MessageFailure
from tests.builders import proposal_model, submitted
from tests.integration.helpers import FAST, publish_registry_seed, read_all, xadd

FIXED_NOW = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def app(database_url: str, prefix: str, redis_url: str):  # type: ignore[no-untyped-def]
    settings = Settings(database_url=database_url, stream_prefix=prefix, consumer_name="ov-t1",
                        replica_retry_s=0.1, **FAST)
    return build_app(settings, clock=lambda: FIXED_NOW)


async def _completed(redis_client: Any, prefix: str, n: int = 1) -> list[contracts.OriginVerificationCompleted]:
    async def probe() -> list[contracts.OriginVerificationCompleted] | None:
        raw = await read_all(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED)
        return [contracts.OriginVerificationCompleted.model_validate(r) for r in raw] if len(raw) >= n else None

    return await wait_for(probe, message=f"{n} OriginVerificationCompleted event(s)")


async def _pending(redis_client: Any, prefix: str, stream: str) -> int:
    info = await redis_client.xpending(f"{prefix}{stream}", "origin_verification")
    return int(info["pending"])


async def _count(rt: Any, model: Any) -> int:
    async with rt.factory() as s:
        return int((await s.exec(select(func.count()).select_from(model))).one())


async def test_a_submission_waits_for_the_replica_and_is_then_verified(app, redis_client, prefix) -> None:
    async with running(app) as (client, rt):
        event = submitted()
        await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, event)

        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["registry_replica"] is False
        # deferred: read, left pending, retried without counting an attempt, nothing answered yet
        await wait_for(lambda: _pending(redis_client, prefix, streams.PROCUREMENT_SUBMITTED),
                       message="the submission to be read and deferred")
        assert await read_all(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED) == []

        await publish_registry_seed(redis_client, prefix)
        [done] = await _completed(redis_client, prefix)
        assert done.case_id == event.case_id and done.correlation_id == event.case_id
        assert done.causation_id == event.event_id
        assert done.result.outcome == "eligible"
        assert done.result.checked_at == FIXED_NOW
        assert done.result.rules_version == "safe-rules-2025.1"
        [product] = done.result.end_products
        assert product.non_eligible_share == Decimal("0.2631578947") and product.cap == Decimal("0.35")
        raw = (await read_all(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED))[0]
        assert raw["result"]["end_products"][0]["non_eligible_share"] == "0.2631578947"

        assert await _count(rt, MessageFailure) == 0 and await _count(rt, DeadLetter) == 0
        ready = await wait_for(lambda: _ready(client), message="ready")
        assert ready["checks"]["registry_replica"] is True

        history = (await client.get(f"/verifications/{event.case_id}")).json()
        assert [r["outcome"] for r in history["reports"]] == ["eligible"]
        assert history["reports"][0]["request_event_id"] == str(event.event_id)
        assert history["reports"][0]["registry_version"] == 1


async def _ready(client: Any) -> dict[str, Any] | None:
    r = await client.get("/health/ready")
    return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]


async def test_a_duplicate_submission_yields_exactly_one_report(app, redis_client, prefix) -> None:
    async with running(app) as (client, rt):
        await publish_registry_seed(redis_client, prefix)
        event = submitted()
        await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, event)
        second = await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, event)
        await _completed(redis_client, prefix)

        async def both_acknowledged() -> bool:
            [group] = await redis_client.xinfo_groups(f"{prefix}{streams.PROCUREMENT_SUBMITTED}")
            delivered = group["last-delivered-id"]
            delivered = delivered.decode() if isinstance(delivered, bytes) else str(delivered)
            return delivered == second and await _pending(redis_client, prefix, streams.PROCUREMENT_SUBMITTED) == 0

        await wait_for(both_acknowledged, message="both entries read and acknowledged")
        assert len(await read_all(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED)) == 1
        assert await _count(rt, ReportRow) == 1
        assert len((await client.get(f"/verifications/{event.case_id}")).json()["reports"]) == 1


async def test_a_reverification_adds_a_new_report_and_keeps_the_old_one(app, redis_client, prefix) -> None:
    async with running(app) as (client, rt):
        await publish_registry_seed(redis_client, prefix)
        first = submitted()
        await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, first)
        await _completed(redis_client, prefix)
        again = contracts.ReverificationRequested(correlation_id=first.case_id, case_id=first.case_id,
                                                  proposal=first.proposal, requested_by="operator", reason="check")
        await xadd(redis_client, prefix, streams.REVERIFICATION_REQUESTED, again)
        events = await _completed(redis_client, prefix, 2)
        assert [e.causation_id for e in events] == [first.event_id, again.event_id]
        reports = (await client.get(f"/verifications/{first.case_id}")).json()["reports"]
        assert [r["request_type"] for r in reports] == ["ProcurementSubmitted", "ReverificationRequested"]
        assert (await client.get(f"/verifications/{uuid.uuid4()}")).status_code == 404


def _canada(version: int, effective_from: date | None, cap: str | None) -> contracts.PartnerAgreementRecorded:
    return contracts.PartnerAgreementRecorded(
        correlation_id="CA-SAFE", agreement_id="CA-SAFE", version=version, country="CA", kind="safe_participation",
        effective_from=effective_from, content_counts_as_eligible=True,
        max_content_share=Decimal(cap) if cap is not None else None, entities_eligible=True, status="in_force",
        source="test",
    )


def _with_canadian_content(signed_on: str) -> contracts.Proposal:
    return proposal_model(contract_signed_on=signed_on, end_products=[{
        "name": "radar", "category": "ammunition_and_missiles", "components": [
            {"name": "antenna", "origin_country": "CA", "cost_eur": "400000.00", "evidence_ref": "d0"},
            {"name": "mast", "origin_country": "FR", "cost_eur": "600000.00", "evidence_ref": "d1"}]}])


async def test_the_replica_keeps_the_highest_agreement_version_and_decides_on_the_contract_date(
    app, redis_client, prefix
) -> None:
    async with running(app) as (client, rt):
        await publish_registry_seed(redis_client, prefix)
        # a correction (v3) overtakes an older version (v2) that arrives late; both are kept as history
        await xadd(redis_client, prefix, streams.PARTNER_AGREEMENT_RECORDED, _canada(3, date(2026, 2, 16), "0.50"))
        await xadd(redis_client, prefix, streams.PARTNER_AGREEMENT_RECORDED, _canada(2, date(2026, 1, 1), None))

        async def history() -> list[Any] | None:
            items = (await client.get("/replica/agreements?country=CA")).json()["items"]
            return items if len(items) == 3 else None

        items = await wait_for(history, message="three CA agreement versions")
        assert [i["version"] for i in items] == [1, 2, 3]

        before, on_the_day = submitted(_with_canadian_content("2026-02-15")), submitted(
            _with_canadian_content("2026-02-16"))
        await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, before)
        await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, on_the_day)
        events = {e.case_id: e for e in await _completed(redis_client, prefix, 2)}
        assert events[before.case_id].result.outcome == "ineligible"
        assert "R-ORIG-1" in {f.rule for f in events[before.case_id].result.findings if f.passed is False}
        assert events[on_the_day.case_id].result.outcome == "eligible"
        assert events[on_the_day.case_id].result.context["registry_version"] == 1


async def test_rules_and_replica_status_are_served_with_sources(app, redis_client, prefix) -> None:
    async with running(app) as (client, rt):
        rules = (await client.get("/rules", params={"on": "2026-09-01"})).json()
        assert rules["in_force"] == "safe-rules-2025.1"
        cap = rules["rule_set"]["settings"]["origin_cap"]
        assert cap["value"] == "0.35" and cap["confidence"] == "official" and cap["source"]
        deadline = rules["rule_set"]["settings"]["transitional_deadline_inclusive"]
        assert deadline["value"] is True and deadline["confidence"] == "assumed"
        status = (await client.get("/replica")).json()
        assert status["ready"] is False
        await publish_registry_seed(redis_client, prefix)
        await wait_for(lambda: _replica_ready(client), message="replica ready")
        assert (await client.get("/rules", headers={"Authorization": ""})).status_code == 401
        body = json.loads(proposal_model().model_dump_json())
        preview = (await client.post("/verifications/preview", json=body)).json()
        assert preview["outcome"] == "eligible"
        assert (await client.get("/openapi.json")).status_code == 200
        asyncapi = (await client.get("/asyncapi.json")).json()
        assert {"ProcurementSubmitted", "CountryStatusChanged", "OriginVerificationCompleted"} <= set(
            asyncapi["components"]["schemas"])


async def _replica_ready(client: Any) -> bool:
    return bool((await client.get("/replica")).json()["ready"])
