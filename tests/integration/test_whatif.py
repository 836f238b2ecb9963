"""What-if replay on origin verification: stored cases (the shared scenario files, verified by the service) decided
again with a candidate rulebook, in process, writing nothing."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

from safe_procurement.services import governance_cli
from safe_procurement.services import scenarios as examples
from safe_procurement.services.origin_verification.adapters.rules_file import DEFAULT_PATH
from safe_procurement.services.origin_verification.config import Settings
from safe_procurement.services.origin_verification.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from tests import dbs
from tests.builders import submitted
from tests.integration.helpers import FAST, publish_registry_seed, read_all, xadd

AUDITOR = {"Authorization": "Bearer aud-1"}


def scenarios() -> list[dict[str, Any]]:
    out = []
    for path in examples.files():
        s = json.loads(path.read_text())
        if "rejected_at_intake" not in s["expected_outcome"]:
            out.append(s)
    return out


def rules_with_cap(cap: str) -> dict[str, Any]:
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    changed = copy.deepcopy(doc)
    for rule_set in changed["rule_sets"]:
        rule_set["settings"]["origin_cap"]["value"] = cap
        rule_set["settings"]["origin_cap"]["source"] = "what-if: a stricter cap"
        rule_set["settings"]["origin_cap"]["confidence"] = "assumed"
    return json.loads(json.dumps(changed, default=str))


async def table_count(rt: Any, table: str) -> int:
    async with rt.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_a_stricter_cap_changes_exactly_the_cases_between_30_and_35_percent_and_the_current_rules_none(
        tmp_path, prefix, redis_client):
    app = build_app(Settings(database_url=dbs.url(tmp_path, "ov"), stream_prefix=prefix, consumer_name="t1",
                             replica_retry_s=0.1, safe_tokens="operator:dev-operator,auditor:aud-1", **FAST))
    async with running(app) as (client, rt):
        await publish_registry_seed(redis_client, prefix)
        cases = {}
        for s in scenarios():
            event = submitted(contracts.Proposal.model_validate(s["proposal"]))
            cases[event.case_id] = s["name"]
            await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, event)

        async def all_answered() -> list[dict[str, Any]] | None:
            done = await read_all(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED)
            return done if len({d["case_id"] for d in done}) >= len(cases) else None
        results = {d["case_id"]: d["result"] for d in await wait_for(all_answered, message="every scenario verified")}
        assert len(cases) >= 8
        # the expected set, from the stored verdicts: not already ineligible, with a product's non-eligible share in (30 %, 35 %]
        expected = {cid for cid, r in results.items() if r["outcome"] != "ineligible"
                    and any(Decimal("0.30") < Decimal(p["non_eligible_share"]) <= Decimal("0.35")
                           for p in r["end_products"])}
        assert expected, "the scenarios include a share between 30 and 35 %"
        before = {t: await table_count(rt, t) for t in ("verification_reports", "outbox", "audit_log")}

        same = (await client.post("/whatif", json={})).json()
        assert (same["cases"], same["changed"], same["changes"]) == (len(cases), 0, [])
        same_file = (await client.post("/whatif", json={"rules": rules_with_cap("0.35")})).json()
        assert same_file["changed"] == 0 and same_file["not_reproduced"] == []

        stricter = (await client.post("/whatif", json={"rules": rules_with_cap("0.30")})).json()
        assert {c["case_id"] for c in stricter["changes"]} == expected, [cases[c["case_id"]] for c in stricter["changes"]]
        for c in stricter["changes"]:
            assert "R-ORIG-1" in {f["rule"] for f in c["findings"]}
            assert any(f["rule"] == "R-ORIG-1" and f["after"]["passed"] is False for f in c["findings"])
            (cap,) = [a for a in c["assumptions"] if a["setting"] == "origin_cap"]
            assert (cap["before"]["value"], cap["after"]["value"]) == ("0.35", "0.30")
            assert cap["after"]["confidence"] == "assumed"
            assert c["end_products"][0]["before"]["passes"] is True and c["end_products"][0]["after"]["passes"] is False
            assert c["candidate_outcome"] == "ineligible"
        # a case already ineligible above 35 % keeps its verdict; only its reasons differ
        assert all(r["case_id"] not in expected for r in stricter["reasons_changed"])

        text = (await client.post("/whatif", params={"format": "table"}, json={"rules": rules_with_cap("0.30")})).text
        assert f"{len(expected)} verdict(s) would change" in text and "origin_cap: 0.35 -> 0.30" in text
        assert all(cid in text for cid in expected)

        # no side effects: nothing stored, nothing published
        assert {t: await table_count(rt, t) for t in before} == before
        assert len(await read_all(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED)) == len(results)

        # the CLI's whatif, against this service
        rules_file = tmp_path / "stricter.yaml"
        rules_file.write_text(DEFAULT_PATH.read_text().replace('value: "0.35"', 'value: "0.30"', 1))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ov",
                                     headers={"Authorization": "Bearer dev-operator"}) as http:
            code, out = await governance_cli.whatif(http, "http://ov", str(rules_file), None, "2000-01-01")
            assert code == 1 and f"{len(expected)} verdict(s) would change" in out
            code, out = await governance_cli.whatif(http, "http://ov", str(DEFAULT_PATH), None, None, as_json=True)
            assert code == 0 and json.loads(out)["changed"] == 0

        # only operators; a bad rulebook is refused naming the field
        assert (await client.post("/whatif", json={}, headers=AUDITOR)).status_code == 403
        bad = await client.post("/whatif", json={"rules": {"rule_sets": []}})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "rules"


async def test_the_registry_as_of_a_day_before_it_was_received_decides_differently(tmp_path, prefix, redis_client):
    app = build_app(Settings(database_url=dbs.url(tmp_path, "ov"), stream_prefix=prefix, consumer_name="t1",
                             replica_retry_s=0.1, **FAST))
    async with running(app) as (client, _rt):
        await publish_registry_seed(redis_client, prefix)
        s = scenarios()[0]
        event = submitted(contracts.Proposal.model_validate(s["proposal"]))
        await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, event)
        await wait_for(lambda: read_all(redis_client, prefix, streams.ORIGIN_VERIFICATION_COMPLETED), message="verified")
        today = (await client.post("/whatif", json={"registry_at": "2999-01-01"})).json()
        assert today["changed"] == 0
        empty = (await client.post("/whatif", json={"registry_at": "2000-01-01"})).json()
        assert empty["changed"] == 1 and empty["registry_at"] == "2000-01-01"
        assert empty["changes"][0]["baseline_outcome"] != empty["changes"][0]["candidate_outcome"]
