"""The audit trail of operator writes (GET /audit on every service) and "why is this case where it is?"."""

from __future__ import annotations

import pytest

from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from tests import dbs
from tests.builders import proposal
from tests.integration.helpers import FAST, xadd

AUDITOR = {"Authorization": "Bearer aud-1"}


@pytest.fixture
def app(tmp_path, prefix, redis_url):
    return build_app(Settings(database_url=dbs.url(tmp_path, "apps"), stream_prefix=prefix,
                              consumer_name="t1", safe_tokens="operator:dev-operator,auditor:aud-1", **FAST))


async def _status(client, case_id: str, status: str) -> bool:
    return (await client.get(f"/procurements/{case_id}")).json()["status"] == status


async def test_every_operator_write_is_in_the_audit_trail_with_who_when_what_and_why(app, redis_client, prefix):
    async with running(app) as (client, _rt):
        a = (await client.post("/procurements", json=proposal())).json()["id"]
        b = (await client.post("/procurements", json=proposal())).json()["id"]
        await wait_for(lambda: _status(client, b, "verifying"), message="verifying")
        assert (await client.post(f"/procurements/{a}/withdraw", json={"reason": "duplicate filing"})).status_code == 200
        assert (await client.post(f"/procurements/{b}/reverify", json={"reason": "registry corrected"})).status_code == 200
        for i in range(2):
            bad = proposal()
            bad["end_products"][0]["components"][0]["cost_eur"] = f"1.00{i + 1}"
            await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, bad)
        letters = await wait_for(lambda: _open_letters(client, 2), message="two dead letters")
        assert (await client.post(f"/dead-letters/{letters[0]}/discard", json={"reason": "sender resubmits"})).status_code == 200
        assert (await client.post(f"/dead-letters/{letters[1]}/replay", json={"reason": "retry"})).status_code == 200

        r = await client.get("/audit", headers=AUDITOR)  # auditors read the trail too
        assert r.status_code == 200
        items = r.json()["items"]
        by_action = {i["action"]: i for i in items}
        assert {"case.withdraw", "case.reverify", "dead_letter.discard", "dead_letter.replay"} <= set(by_action)
        withdraw = by_action["case.withdraw"]
        assert withdraw["actor"] == "operator" and withdraw["reason"] == "duplicate filing"
        assert withdraw["correlation_id"] == a and withdraw["target"] == f"procurements/{a}" and withdraw["at"]
        assert by_action["case.reverify"]["reason"] == "registry corrected"
        assert by_action["dead_letter.discard"]["reason"] == "sender resubmits"
        assert by_action["dead_letter.discard"]["details"]["stream"] == streams.SUBMIT_PROCUREMENT
        ids = [i["id"] for i in items]
        assert ids == sorted(ids, reverse=True)  # newest first

        # filters and pages
        only_a = (await client.get("/audit", params={"correlation_id": a})).json()["items"]
        assert [i["action"] for i in only_a] == ["case.withdraw"]
        only = (await client.get("/audit", params={"action": "case.reverify"})).json()["items"]
        assert [i["correlation_id"] for i in only] == [b]
        seen, cursor = [], None
        while True:
            page = (await client.get("/audit", params={"limit": 1} | ({"cursor": cursor} if cursor else {}))).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == ids
        assert (await client.get("/audit", params={"cursor": "not-a-cursor"})).status_code == 422

        # where the action concerns a case, it is in the case's timeline too
        timeline = (await client.get(f"/procurements/{a}/timeline")).json()["items"]
        assert any(t["type"] == "ProcurementWithdrawn" and "duplicate filing" in t["summary"] for t in timeline)


async def _open_letters(client, n: int) -> list[int] | None:
    items = (await client.get("/dead-letters", params={"status": "open"})).json()["items"]
    return sorted(i["id"] for i in items) if len(items) >= n else None


async def test_explain_says_a_case_waits_in_verifying_for_origin_verification_that_never_started(
    app, redis_client, prefix
):
    async with running(app) as (client, _rt):
        case = (await client.post("/procurements", json=proposal())).json()["id"]
        await wait_for(lambda: _status(client, case, "verifying"), message="verifying")

        r = await client.get(f"/procurements/{case}/explain")
        assert r.status_code == 200
        e = r.json()
        assert e["status"] == "verifying" and e["final"] is False and e["since"]
        assert "origin verification" in e["waiting_for"]
        assert e["service"] == "origin_verification"
        assert e["stream"] == streams.PROCUREMENT_SUBMITTED
        assert e["message_event_id"]  # the ProcurementSubmitted it waits on
        state = e["stream_state"]
        assert state["group"] == "origin_verification" and "does not exist" in state["note"]
        actions = " | ".join(e["operator_actions"])
        assert f"/procurements/{case}/withdraw" in actions and f"/procurements/{case}/reverify" in actions
        assert f"GET /dead-letters?correlation_id={case} on origin_verification" in actions

        # the group appears (origin verification started once, then stopped): the entry is lag, not pending
        await redis_client.xgroup_create(f"{prefix}{streams.PROCUREMENT_SUBMITTED}", "origin_verification", id="0")
        state = (await client.get(f"/procurements/{case}/explain")).json()["stream_state"]
        assert state["group"] == "origin_verification" and state["pending"] == 0 and state["lag"] >= 1

        # it read the entry and died: now it is pending in that group
        await redis_client.xreadgroup("origin_verification", "dead-replica", {f"{prefix}{streams.PROCUREMENT_SUBMITTED}": ">"})
        state = (await client.get(f"/procurements/{case}/explain")).json()["stream_state"]
        assert state["pending"] >= 1 and state["consumers"] == 1

        # a final case waits for nothing
        await client.post(f"/procurements/{case}/withdraw", json={"reason": "stuck"})
        e = (await client.get(f"/procurements/{case}/explain")).json()
        assert e["final"] is True and e["waiting_for"] is None and e["stream_state"] is None
        assert e["operator_actions"] == []
