"""Issue 21, defects 1, 6 and 7: one Member State scope rule — a Member State sees what concerns it, as a
participant or a lender — checked by a generated matrix on every service.

Every operation of every service's OpenAPI × {no token, unknown token, operator, auditor, member-state-DK,
member-state-EE}, with its path parameters filled once with DK's objects and once with EE's:
- no token / unknown token: 401; a write by anyone but the operator: 403; a staff-only read (its OpenAPI
  security names only operator and auditor): 403 for Member States;
- a read of an object: the auditor gets what the operator gets; a Member State gets it too for its own object,
  and 404 for the other state's (as for an object that does not exist);
- and no 200 body a Member State receives holds the other state's case ids, references, loan ids, entry ids or
  amounts anywhere (the body's text is searched for them).
Operator writes run after the reads, with empty bodies (no 401/403, no 5xx)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest

from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from tests import builders
from tests.integration.helpers import signed_xadd, xadd
from tests.integration.test_auth_matrix import EVENT_KEYS, SERVICES, build, headers

TOKENS = {
    "operator": "op-81c0a5d2e4", "auditor": "aud-2f9b6e0c13",
    "member-state-DK": "dk-5d1e7a9c42", "member-state-EE": "ee-93b04c6f18",
}
SAFE_TOKENS = ",".join(f"{role}:{token}" for role, token in TOKENS.items())
STATES = ("DK", "EE")
WHO = ["none", "bad", "operator", "auditor", "member-state-DK", "member-state-EE"]
OPEN_PATHS = {"/health/live", "/health/ready", "/metrics", "/asyncapi.json"}
# what a Member State may read of another state's: reference data (the registry, the rules)
PUBLIC_PARAMS = {"code", "country", "agreement_id"}
READ_ONLY_POSTS = {"/verifications/preview"}  # computes a verdict, stores and publishes nothing
# writes a participating Member State may make on its own case (docs/money-rules.md): its own answers as the
# operator's (the empty body refused), another state's is 404 like a read
MEMBER_STATE_WRITES = {"/procurements/{case_id}/amend"}


def _headers(who: str) -> dict[str, str]:
    return headers(who, TOKENS)


@dataclass
class Side:
    """One state's objects: `fill` for path parameters, `secrets` that only it (and staff) may read."""

    fill: dict[str, str] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)


async def _call(client: httpx.AsyncClient, method: str, path: str, who: str, body: Any = None) -> httpx.Response:
    client.headers.pop("Authorization", None)
    return await client.request(method, path, json=body, headers=_headers(who))


async def _letter(client: httpx.AsyncClient, marker: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        for item in (await _call(client, "GET", "/dead-letters?limit=500", "operator")).json()["items"]:
            if marker in json.dumps(item["payload"]):
                return item  # type: ignore[no-any-return]
        return None

    return await wait_for(probe, message=f"the dead letter of {marker}")


# --- each service's world: one side per Member State ---------------------------------------------------------


async def _applications(client: httpx.AsyncClient, redis: Any, prefix: str) -> dict[str, Side]:
    sides = {}
    for ms, other, amount in (("DK", "SE", "310021.17"), ("EE", "LV", "420032.29")):
        body = builders.proposal_led_by([ms, other], amount, tag="S")
        r = await _call(client, "POST", "/procurements", "operator", body)
        assert r.status_code == 201, r.text
        case = r.json()
        bad = builders.proposal_led_by([ms, other], amount, tag="S")
        bad["end_products"][0]["components"][0]["cost_eur"] = "1.001"  # dead-lettered at once
        await xadd(redis, prefix, streams.SUBMIT_PROCUREMENT, bad)
        dl = await _letter(client, bad["reference"])
        sides[ms] = Side(fill={"case_id": case["id"], "reference": case["reference"], "dl_id": str(dl["id"]),
                               "member_state": ms},
                         secrets={case["id"], case["reference"], bad["reference"], dl["entry_id"], amount})
    return sides


async def _origin_verification(client: httpx.AsyncClient, redis: Any, prefix: str) -> dict[str, Side]:
    sides = {}
    for ms, other in (("DK", "SE"), ("EE", "LV")):
        proposal = builders.proposal_led_by([ms, other], "1.00", tag="S")
        case_id = str(uuid.uuid4())
        event = {"event_type": "ProcurementSubmitted", "event_id": str(uuid.uuid4()), "correlation_id": case_id,
                 "case_id": case_id, "proposal": {**proposal, "contract_value_eur": "not money"}}
        await signed_xadd(redis, prefix, streams.PROCUREMENT_SUBMITTED, event, EVENT_KEYS)  # invalid: dead-lettered
        dl = await _letter(client, proposal["reference"])
        sides[ms] = Side(fill={"case_id": case_id, "dl_id": str(dl["id"]), "member_state": ms},
                         secrets={case_id, proposal["reference"], dl["entry_id"]})
    return sides


async def _partner_registry(client: httpx.AsyncClient, redis: Any, prefix: str) -> dict[str, Side]:
    # reference data only: nothing in it belongs to one Member State
    # (its dead letters concern no case: no Member State sees them; 999999 is none at all)
    return {ms: Side(fill={"member_state": ms, "code": ms, "country": ms, "dl_id": "999999",
                           "agreement_id": "agr-ca-safe-participation"}) for ms in STATES}


async def _loan_disbursement(client: httpx.AsyncClient, redis: Any, prefix: str) -> dict[str, Side]:
    sides = {}
    for ms, other, amount in (("DK", "SE", "1234567.89"), ("EE", "LV", "2345.67")):
        event = builders.loan_requested((ms, amount), participants=[ms, other], tag=f"S-{ms}")
        case_id, reference = event.case_id, event.reference
        await signed_xadd(redis, prefix, streams.LOAN_REQUESTED, event, EVENT_KEYS)

        async def loan(case_id: str = case_id) -> dict[str, Any] | None:
            r = await _call(client, "GET", f"/loan-requests/{case_id}", "operator")
            return r.json() if r.status_code == 200 and r.json()["loans"] else None

        decision = await wait_for(loan, timeout=60, message=f"the loan of {ms}")
        loan_id = decision["loans"][0]["loan_id"]
        bad = json.loads(event.model_dump_json())
        bad["reference"] = f"S-{ms}-{uuid.uuid4().hex[:10]}"
        bad["event_id"] = str(uuid.uuid4())
        bad["financing"][0]["amount_eur"] = "not money"  # dead-lettered at once
        await signed_xadd(redis, prefix, streams.LOAN_REQUESTED, bad, EVENT_KEYS)
        dl = await _letter(client, bad["reference"])
        facility = (await _call(client, "GET", f"/facilities/{ms}", "operator")).json()
        sides[ms] = Side(
            fill={"case_id": case_id, "loan_id": loan_id, "dl_id": str(dl["id"]), "member_state": ms},
            secrets={case_id, reference, loan_id, bad["reference"], dl["entry_id"], amount,
                     facility["max_eur"], facility["available_eur"]},
        )
    return sides


WORLDS = {"applications": _applications, "origin_verification": _origin_verification,
          "partner_registry": _partner_registry, "loan_disbursement": _loan_disbursement}


# --- the matrix ------------------------------------------------------------------------------------------------


def _operations(app: Any) -> list[tuple[str, str, bool]]:
    """(method, path template, staff only) of every operation that needs a token."""
    ops = []
    for path, item in app.openapi()["paths"].items():
        if path in OPEN_PATHS:
            continue
        for method, op in item.items():
            scopes = {s for req in op.get("security", []) for ss in req.values() for s in ss}
            ops.append((method.upper(), path, bool(scopes) and "operator" in scopes and "auditor" in scopes))
    return ops


def _fill(template: str, side: Side) -> str | None:
    path = template
    for name, value in side.fill.items():
        path = path.replace("{" + name + "}", value)
    # approvals belong to no Member State (staff only, docs/governance.md): any id answers by role alone
    path = path.replace("{approval_id}", "no-such-approval")
    return None if "{" in path else path


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_route_answers_every_identity_by_the_one_scope_rule_and_leaks_nothing(
    service, tmp_path, prefix, redis_client
):
    app = build(service, tmp_path, prefix, safe_tokens=SAFE_TOKENS)
    async with running(app) as (client, _rt):
        sides = await WORLDS[service](client, redis_client, prefix)
        failures: list[str] = []
        leaks: list[str] = []
        writes: list[tuple[str, str]] = []
        checked = 0
        for method, template, staff_only in _operations(app):
            public = "{" not in template or any("{" + p + "}" in template for p in PUBLIC_PARAMS)
            read = method == "GET" or template in READ_ONLY_POSTS or template in MEMBER_STATE_WRITES
            for owner in STATES:
                path = _fill(template, sides[owner])
                if path is None:
                    failures.append(f"{method} {template}: no {owner} object to fill it with")
                    continue
                if not read and path in {w[1] for w in writes}:
                    continue
                body = None if method == "GET" else {}
                operator = (await _call(client, method, path, "operator", body)).status_code if read else None
                for who in WHO:
                    if who == "operator" and not read:
                        writes.append((method, path))
                        continue
                    r = await _call(client, method, path, who, body)
                    checked += 1
                    want = _expected(read, who, owner, staff_only, public, operator)
                    if template in MEMBER_STATE_WRITES and who == "auditor":
                        want = 403  # auditors read, never write
                    elif template in MEMBER_STATE_WRITES and who.startswith("member-state-") \
                            and who != f"member-state-{owner}":
                        want = 404  # another state's case does not exist for it
                    if r.status_code != want:
                        failures.append(f"{method} {path} ({owner}'s) as {who}: {r.status_code}, want {want}: "
                                        f"{r.text[:160]}")
                    if r.status_code == 200 and who.startswith("member-state-"):
                        mine = who.removeprefix("member-state-")
                        for theirs in STATES:
                            if theirs == mine:
                                continue
                            found = sorted(s for s in sides[theirs].secrets if s in r.text)
                            if found:
                                leaks.append(f"{method} {path} as {who} shows {theirs}'s {found}")
                    assert r.status_code < 500, (method, path, who, r.text)
        for method, path in writes:  # the operator may write (empty bodies: most are refused); never a 5xx
            r = await _call(client, method, path, "operator", {})
            checked += 1
            assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, r.status_code, r.text)
        assert checked > 50
        assert not leaks, "\n".join(leaks)
        assert not failures, "\n".join(failures)


def _expected(read: bool, who: str, owner: str, staff_only: bool, public: bool, operator: int | None) -> int:
    if who in ("none", "bad"):
        return 401
    if not read:
        return 403  # the operator's writes are checked apart
    assert operator is not None
    if who == "auditor" or who == "operator":
        return operator
    if staff_only:
        return 403
    if public or who == f"member-state-{owner}" or operator != 200:
        return operator
    return 404  # another state's object, as if it did not exist


# --- the facility-totals policy and /loans paging --------------------------------------------------------------


async def test_other_states_facility_totals_open_only_by_the_setting_and_never_their_ledger_or_plan(
    tmp_path, prefix, redis_client
):
    for opened in (False, True):
        app = build("loan_disbursement", tmp_path / str(opened), prefix + str(opened), safe_tokens=SAFE_TOKENS,
                    other_states_totals_visible=opened)
        async with running(app) as (client, _rt):
            listed = {f["member_state"] for f in (await _call(client, "GET", "/facilities", "member-state-DK")).json()["items"]}
            assert (listed >= {"DK", "EE", "PL"}) if opened else (listed == {"DK"}), listed
            assert (await _call(client, "GET", "/facilities/EE", "member-state-DK")).status_code == (200 if opened else 404)
            assert (await _call(client, "GET", "/facilities/DK", "member-state-DK")).status_code == 200
            for path in ("/facilities/EE/ledger", "/facilities/EE/plan"):
                assert (await _call(client, "GET", path, "member-state-DK")).status_code == 404
                assert (await _call(client, "GET", path, "auditor")).status_code == 200
            assert (await _call(client, "GET", "/ledger/check", "member-state-DK")).status_code == 403


async def test_loans_page_by_keyset_and_a_member_state_pages_through_its_own_loans_only(tmp_path, prefix,
                                                                                      redis_client):
    app = build("loan_disbursement", tmp_path, prefix, safe_tokens=SAFE_TOKENS)
    async with running(app) as (client, _rt):
        mine: list[str] = []
        for i in range(7):
            ms = "DK" if i % 2 == 0 else "EE"
            event = builders.loan_requested((ms, "10.00"), participants=[ms, "SE"], tag="S")
            await signed_xadd(redis_client, prefix, streams.LOAN_REQUESTED, event, EVENT_KEYS)
            case_id = event.case_id
            if ms == "DK":
                mine.append(case_id)

        async def all_decided() -> bool:
            r = await _call(client, "GET", "/loans?limit=1000", "operator")
            return len(r.json()["items"]) == 7

        await wait_for(all_decided, timeout=60, message="seven loans")

        async def pages(who: str) -> list[str]:
            seen, cursor = [], None
            for _ in range(20):
                r = await _call(client, "GET", "/loans?limit=2" + (f"&cursor={cursor}" if cursor else ""), who)
                assert r.status_code == 200, r.text
                seen += [loan["case_id"] for loan in r.json()["items"]]
                cursor = r.json()["next_cursor"]
                if cursor is None:
                    return seen
            raise AssertionError("no last page")

        everything = await pages("auditor")
        assert len(everything) == len(set(everything)) == 7
        assert await pages("member-state-DK") == [c for c in everything if c in mine]
        assert set(await pages("member-state-EE")) == set(everything) - set(mine)


async def test_a_member_state_sees_origin_verifications_dead_letter_about_its_case_without_participants_in_it(
    tmp_path, prefix, redis_client
):
    """Defect 6: the dead letter's payload names no participants; the case's reports do."""
    from safe_procurement.services.origin_verification.config import Settings as OriginSettings
    from safe_procurement.services.origin_verification.main import build_app as build_origin
    from tests import dbs
    from tests.integration.helpers import FAST, publish_registry_seed
    from tests.integration.test_origin_verification_service import _completed

    app = build_origin(OriginSettings(database_url=dbs.url(tmp_path, "ov"), stream_prefix=prefix, consumer_name="t1",
                                      safe_tokens=SAFE_TOKENS, replica_retry_s=0.1, **FAST))
    async with running(app) as (client, _rt):
        await publish_registry_seed(redis_client, prefix)
        submitted = builders.submitted(builders.proposal_model(participants=["DK", "SE"], lead_member_state="DK"))
        await xadd(redis_client, prefix, streams.PROCUREMENT_SUBMITTED, submitted)
        await _completed(redis_client, prefix)
        broken = {"event_type": "ReverificationRequested", "event_id": str(uuid.uuid4()),
                  "correlation_id": submitted.case_id, "case_id": submitted.case_id}  # no proposal
        await xadd(redis_client, prefix, streams.REVERIFICATION_REQUESTED, broken)
        letter = await _letter(client, broken["event_id"])
        assert letter["correlation_id"] == submitted.case_id
        assert (await _call(client, "GET", f"/dead-letters/{letter['id']}", "member-state-DK")).status_code == 200
        assert (await _call(client, "GET", f"/dead-letters/{letter['id']}", "member-state-EE")).status_code == 404
        listed = (await _call(client, "GET", "/dead-letters", "member-state-DK")).json()["items"]
        assert letter["id"] in {d["id"] for d in listed}


async def test_a_member_state_pages_through_its_dead_letters_past_many_of_other_states(
    tmp_path, prefix, redis_client, monkeypatch
):
    """Defect 7's kin on the dead letters: rows were cut at 2 000 before the Member State filter. Now they are
    filtered in keyset batches; with tiny batches (2 rows, 4 per request) every own letter is still reached."""
    from safe_procurement.shared.kit import web

    monkeypatch.setattr(web, "_BATCH", 2)
    monkeypatch.setattr(web, "_SCAN", 4)
    app = build("applications", tmp_path, prefix, safe_tokens=SAFE_TOKENS)
    async with running(app) as (client, _rt):
        mine = []
        for i in range(9):
            ms, other = ("DK", "SE") if i % 3 == 0 else ("EE", "LV")
            bad = builders.proposal_led_by([ms, other], "1.00", tag="S")
            bad["end_products"][0]["components"][0]["cost_eur"] = "1.001"
            await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, bad)
            letter = await _letter(client, bad["reference"])
            if ms == "DK":
                mine.append(letter["id"])
        seen, cursor, requests = [], None, 0
        while True:
            r = await _call(client, "GET", "/dead-letters?limit=1" + (f"&cursor={cursor}" if cursor else ""),
                            "member-state-DK")
            requests += 1
            assert r.status_code == 200 and requests < 30
            seen += [d["id"] for d in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(mine, reverse=True)


async def test_a_lender_sees_the_case_it_lends_to_without_participating(tmp_path, prefix):
    """Defect 6: 'a loan financed by DK on a PL-led case is invisible to DK'. The money rules may refuse to make
    such a loan; the scope rule must still hold, so the rows are written directly here."""
    from safe_procurement.services.loan_disbursement.adapters.tables import LoanRequestRow, LoanRow
    from safe_procurement.shared.kit.db import transaction

    app = build("loan_disbursement", tmp_path, prefix, safe_tokens=SAFE_TOKENS)
    async with running(app) as (client, rt):
        case_id, loan_id = str(uuid.uuid4()), str(uuid.uuid4())
        async with transaction(rt.factory) as session:
            session.add(LoanRequestRow(case_id=case_id, event_id=str(uuid.uuid4()), reference="PL-LED-1",
                                       status="approved", verification_outcome="eligible", requested="[]",
                                       categories="[]", participants='["PL", "LT"]', reasons="[]"))
            await session.flush()
            session.add(LoanRow(loan_id=loan_id, case_id=case_id, member_state="DK", amount_eur=Decimal("10.00")))
        for who, status in (("member-state-DK", 200), ("member-state-EE", 404), ("auditor", 200)):
            assert (await _call(client, "GET", f"/loans/{loan_id}", who)).status_code == status, who
            assert (await _call(client, "GET", f"/loan-requests/{case_id}", who)).status_code == status, who
            listed = {x["loan_id"] for x in (await _call(client, "GET", "/loans", who)).json()["items"]}
            assert (loan_id in listed) == (status == 200), who


async def test_applications_shows_a_case_to_the_state_that_lends_to_it(tmp_path, prefix):
    """Defect 6 in the applications service: the same rule, participant or lender."""
    app = build("applications", tmp_path, prefix, safe_tokens=SAFE_TOKENS)
    async with running(app) as (client, _rt):
        body = builders.proposal_led_by(["PL", "LT"], "1000.00", tag="S")
        body["financing"] = [{"member_state": "DK", "amount_eur": "1000.00"}]
        r = await _call(client, "POST", "/procurements", "operator", body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        for who, status in (("member-state-DK", 200), ("member-state-EE", 404)):
            for suffix in ("", "/timeline", "/explain"):
                assert (await _call(client, "GET", f"/procurements/{case_id}{suffix}", who)).status_code == status
            listed = {c["id"] for c in (await _call(client, "GET", "/procurements", who)).json()["items"]}
            assert (case_id in listed) == (status == 200), who
