"""Auth as CONTRACT.md says: every role on every endpoint (a table), member-state scoping, constant-time
token comparison, tokens never logged, and no start without tokens outside dev.

The kit's own endpoints (dead letters, audit, health, docs) are checked on every service listed in
`SERVICES`; a service whose package does not exist yet is skipped."""

from __future__ import annotations

import hmac
import importlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import auth
from safe_procurement.shared.kit.logs import JsonFormatter
from tests import dbs
from tests.builders import proposal, proposal_led_by
from tests.integration.helpers import FAST, xadd

TOKENS = {
    "operator": "op-5e1f0c2a7b",
    "auditor": "aud-9d3b77e104",
    "member-state-PL": "pl-0a6c4f2e91",
    "member-state-DE": "de-7b2d9e5c30",
}
SAFE_TOKENS = ",".join(f"{role}:{token}" for role, token in TOKENS.items())
# outside dev a service needs its event keys too (shared/kit/signing.py); one per service, as deployed
EVENT_KEYS = ",".join(f"{svc}:k1:{svc}-test-event-key-0123456789abcdef" for svc in
                      ("applications", "origin_verification", "partner_registry", "loan_disbursement"))
WHO = ["operator", "auditor", "member-state-PL", "member-state-DE", "none", "bad"]

# service name → (module with build_app, module with Settings)
SERVICES = {
    "applications": ("safe_procurement.services.applications.main", "safe_procurement.services.applications.config"),
    "origin_verification": ("safe_procurement.services.origin_verification.main", "safe_procurement.services.origin_verification.config"),
    "partner_registry": ("safe_procurement.services.partner_registry.main", "safe_procurement.services.partner_registry.config"),
    "loan_disbursement": ("safe_procurement.services.loan_disbursement.main", "safe_procurement.services.loan_disbursement.config"),
}


def headers(who: str, tokens: dict[str, str] = TOKENS) -> dict[str, str]:
    """The Authorization header of `who`: a role of `tokens`, "none" (no header) or "bad" (an unknown token)."""
    if who == "none":
        return {}
    if who == "bad":
        return {"Authorization": "Bearer not-a-known-token"}
    return {"Authorization": f"Bearer {tokens[who]}"}


def build(service: str, tmp_path: Path, prefix: str, **overrides: Any) -> Any:
    main_mod, config_mod = SERVICES[service]
    main = importlib.import_module(main_mod)
    config = importlib.import_module(config_mod)
    options: dict[str, Any] = dict(
        database_url=dbs.url(tmp_path, service), stream_prefix=prefix, consumer_name="t1",
        safe_tokens=SAFE_TOKENS, safe_env="production", safe_event_keys=EVENT_KEYS, **FAST,
        four_eyes=False,  # roles only here; four-eyes approval has its own tests (test_four_eyes.py)
    )
    options.update(overrides)
    return main.build_app(config.Settings(**options))


# --- the kit: tokens ---------------------------------------------------------------------------------


def test_every_configured_token_is_compared_in_constant_time_whichever_matches(monkeypatch):
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    store = auth.TokenStore(SAFE_TOKENS, dev=False)
    for token, role in [(TOKENS["operator"], "operator"), (TOKENS["member-state-DE"], "member-state-DE"),
                        ("unknown", None), ("x" * 5000, None), ("", None)]:
        calls.clear()
        found = store.lookup(token)
        assert (found.role if found else None) == role
        # once per configured token, never stopping at the first match, on equal-length digests
        assert len(calls) == len(TOKENS), f"{len(calls)} comparisons for {role}"
        assert {a for a, _ in calls} == {b for _, b in calls} == {32}


def test_tokens_outside_dev_are_required_and_must_be_role_token_pairs():
    with pytest.raises(auth.TokenError):
        auth.TokenStore(None, dev=False)
    with pytest.raises(auth.TokenError):
        auth.TokenStore("operator", dev=False)
    with pytest.raises(auth.TokenError):
        auth.TokenStore("admin:secret", dev=False)
    with pytest.raises(auth.TokenError):
        auth.TokenStore("member-state-ZZ:secret", dev=False)
    assert auth.TokenStore(None, dev=True).lookup("dev-operator").role == "operator"
    # configured tokens replace the dev token, even in dev
    assert auth.TokenStore("auditor:a1", dev=True).lookup("dev-operator") is None
    assert "a1" not in repr(auth.TokenStore("auditor:a1", dev=True))


def test_member_state_roles_accept_the_greek_and_british_aliases():
    store = auth.TokenStore("member-state-EL:el,member-state-GR:gr", dev=False)
    assert store.lookup("el").member_state == store.lookup("gr").member_state
    assert store.lookup("el").sees(["GR", "PL"]) and not store.lookup("el").sees(["PL"])


@pytest.mark.parametrize("service", list(SERVICES))
def test_a_service_refuses_to_start_outside_dev_without_tokens(service, tmp_path, prefix):
    """Refused when its app is built, before anything starts: the tokens are checked first, the event keys then."""
    with pytest.raises(auth.TokenError, match="SAFE_TOKENS"):
        build(service, tmp_path, prefix, safe_tokens=None, safe_env="production")
    with pytest.raises(auth.TokenError, match="SAFE_TOKENS"):
        build(service, tmp_path, prefix, safe_tokens=None, safe_env="production", safe_event_keys=None)


async def test_the_comparison_runs_over_every_token_on_every_request(tmp_path, prefix, redis_url, monkeypatch):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        calls = 0
        real = hmac.compare_digest

        def counting(a: bytes, b: bytes) -> bool:
            nonlocal calls
            calls += 1
            return real(a, b)

        monkeypatch.setattr(auth.hmac, "compare_digest", counting)
        for who in ("operator", "member-state-DE", "bad"):
            calls = 0
            await client.get("/procurements", headers=headers(who))
            assert calls == len(TOKENS), who


# --- the kit's endpoints, on every service ------------------------------------------------------------

OPEN = ["/health/live", "/health/ready", "/metrics", "/asyncapi.json", "/docs", "/openapi.json"]

# (method, path, body, {who: status}); {id} is a dead letter that does not exist
KIT = [
    ("GET", "/dead-letters", None, {"operator": 200, "auditor": 200, "member-state-PL": 200, "member-state-DE": 200}),
    ("GET", "/dead-letters/999999", None, {"operator": 404, "auditor": 404, "member-state-PL": 404,
                                           "member-state-DE": 404}),
    ("POST", "/dead-letters/999999/replay", {}, {"operator": 404, "auditor": 403, "member-state-PL": 403,
                                                 "member-state-DE": 403}),
    ("POST", "/dead-letters/999999/discard", {"reason": "r"}, {"operator": 404, "auditor": 403,
                                                               "member-state-PL": 403, "member-state-DE": 403}),
    ("GET", "/audit", None, {"operator": 200, "auditor": 200, "member-state-PL": 403, "member-state-DE": 403}),
]


@pytest.mark.parametrize("service", list(SERVICES))
async def test_the_kit_endpoints_answer_every_role_as_the_contract_says(service, tmp_path, prefix, redis_client):
    app = build(service, tmp_path, prefix)
    async with running(app) as (client, _rt):
        failures = []
        for path in OPEN:
            for who in WHO:
                r = await _call(client, "GET", path, None, who)
                if r.status_code not in (200, 503):  # /health/ready may be 503 while a service waits for data
                    failures.append((service, "GET", path, who, r.status_code))
        for method, path, body, expected in KIT:
            for who in WHO:
                want = expected.get(who, 401)
                r = await _call(client, method, path, body, who)
                if r.status_code != want:
                    failures.append((service, method, path, who, r.status_code, want))
        assert not failures, failures


async def _call(client: httpx.AsyncClient, method: str, path: str, body: Any, who: str) -> httpx.Response:
    # the in-process client sends the dev-operator token by default: replace it (or remove it)
    client.headers.pop("Authorization", None)
    return await client.request(method, path, json=body, headers=headers(who))


# --- applications: every endpoint × every role --------------------------------------------------------


@dataclass
class World:
    pl_case: dict[str, Any]  # participants PL, LT
    de_case: dict[str, Any]  # participants DE, FR
    pl_letter: int
    de_letter: int


async def _letter_for(client: httpx.AsyncClient, reference: str) -> int:
    async def probe() -> int | None:
        r = await _call(client, "GET", "/dead-letters", None, "operator")
        for item in r.json()["items"]:
            if isinstance(item["payload"], dict) and item["payload"].get("reference") == reference:
                return int(item["id"])
        return None

    return await wait_for(probe, message=f"dead letter of {reference}")


async def _world(client: httpx.AsyncClient, redis_client: Any, prefix: str) -> World:
    cases = []
    for participants in (["PL", "LT"], ["DE", "FR"]):
        body = proposal_led_by(participants)
        r = await _call(client, "POST", "/procurements", body, "operator")
        assert r.status_code == 201, r.text
        cases.append(r.json())
    letters = []
    for participants in (["PL", "LT"], ["DE", "FR"]):
        bad = proposal_led_by(participants)
        bad["end_products"][0]["components"][0]["cost_eur"] = "1.001"  # invalid: dead-lettered at once
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, bad)
        letters.append(await _letter_for(client, bad["reference"]))
    return World(pl_case=cases[0], de_case=cases[1], pl_letter=letters[0], de_letter=letters[1])


READ = {"operator": 200, "auditor": 200, "member-state-PL": 200, "member-state-DE": 404}
# operator: None = checked after the matrix (the write changes the case)
WRITE_FORBIDDEN: dict[str, int | None] = {"operator": None, "auditor": 403, "member-state-PL": 403, "member-state-DE": 403}

# (method, path, body, {who: status}) — {case}/{ref} is the PL-LT case, {dl} its dead letter.
# Writes by the operator are listed separately (they change the case).
APPLICATIONS = [
    ("GET", "/procurements", None, {"operator": 200, "auditor": 200, "member-state-PL": 200, "member-state-DE": 200}),
    ("GET", "/procurements/{case}", None, READ),
    ("GET", "/procurements/by-reference/{ref}", None, READ),
    ("GET", "/procurements/{case}/timeline", None, READ),
    ("GET", "/procurements/{case}/explain", None, READ),
    ("GET", "/procurements/no-such-case", None, {"operator": 404, "auditor": 404, "member-state-PL": 404,
                                                 "member-state-DE": 404}),
    ("POST", "/procurements", "NEW", WRITE_FORBIDDEN),
    ("POST", "/procurements/{case}/withdraw", {"reason": "r"}, WRITE_FORBIDDEN),
    ("POST", "/procurements/{case}/reverify", {"reason": "r"}, WRITE_FORBIDDEN),
    ("GET", "/dead-letters", None, {"operator": 200, "auditor": 200, "member-state-PL": 200, "member-state-DE": 200}),
    ("GET", "/dead-letters/{dl}", None, READ),
    ("POST", "/dead-letters/{dl}/replay", {}, WRITE_FORBIDDEN),
    ("POST", "/dead-letters/{dl}/discard", {"reason": "r"}, WRITE_FORBIDDEN),
    ("GET", "/audit", None, {"operator": 200, "auditor": 200, "member-state-PL": 403, "member-state-DE": 403}),
]


async def test_every_applications_endpoint_answers_every_role_as_the_contract_says(tmp_path, prefix, redis_client):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        w = await _world(client, redis_client, prefix)
        fill = {"case": w.pl_case["id"], "ref": w.pl_case["reference"], "dl": str(w.pl_letter)}
        failures = []
        for method, template, body, expected in APPLICATIONS:
            path = template.format(**fill)
            for who in WHO:
                payload = proposal(financing=[]) if body == "NEW" else body
                want = expected.get(who, 401)
                if want is None:
                    continue
                r = await _call(client, method, path, payload, who)
                if r.status_code != want:
                    failures.append((method, path, who, r.status_code, want, r.text[:200]))
                if r.status_code == 401:
                    assert r.headers.get("www-authenticate") == "Bearer"
        assert not failures, failures
        # nothing of the refused writes happened
        case = (await _call(client, "GET", f"/procurements/{w.pl_case['id']}", None, "operator")).json()
        assert case["status"] in ("submitted", "verifying")
        letter = (await _call(client, "GET", f"/dead-letters/{w.pl_letter}", None, "operator")).json()
        assert letter["status"] == "open"

        # and the operator may write
        r = await _call(client, "POST", "/procurements", proposal(financing=[]), "operator")
        assert r.status_code == 201
        await wait_for(lambda: _has_status(client, w.pl_case["id"], "verifying"), message="verifying")
        assert (await _call(client, "POST", f"/procurements/{w.pl_case['id']}/reverify", {"reason": "r"},
                            "operator")).status_code == 200
        assert (await _call(client, "POST", f"/procurements/{w.pl_case['id']}/withdraw", {"reason": "r"},
                            "operator")).status_code == 200
        assert (await _call(client, "POST", f"/dead-letters/{w.pl_letter}/discard", {"reason": "r"},
                            "operator")).status_code == 200
        fixed = proposal_led_by(["DE", "FR"])
        assert (await _call(client, "POST", f"/dead-letters/{w.de_letter}/replay", {"payload": fixed},
                            "operator")).status_code == 200


async def _has_status(client: httpx.AsyncClient, case_id: str, status: str) -> bool:
    r = await _call(client, "GET", f"/procurements/{case_id}", None, "operator")
    return r.json()["status"] == status


async def test_a_member_state_sees_only_cases_it_participates_in(tmp_path, prefix, redis_client):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        w = await _world(client, redis_client, prefix)
        pl, de = w.pl_case["id"], w.de_case["id"]

        async def listed(who: str, **params: Any) -> set[str]:
            client.headers.pop("Authorization", None)
            r = await client.get("/procurements", params=params, headers=headers(who))
            assert r.status_code == 200
            return {i["id"] for i in r.json()["items"]}

        assert {pl, de} <= await listed("operator")
        assert {pl, de} <= await listed("auditor")
        assert await listed("member-state-PL") == {pl}
        assert await listed("member-state-DE") == {de}
        # a filter cannot widen the scope
        assert await listed("member-state-PL", member_state="DE") == set()
        assert await listed("member-state-PL", member_state="LT") == {pl}

        for suffix in ("", "/timeline", "/explain"):
            assert (await _call(client, "GET", f"/procurements/{pl}{suffix}", None, "member-state-PL")).status_code == 200
            assert (await _call(client, "GET", f"/procurements/{pl}{suffix}", None, "member-state-DE")).status_code == 404
            assert (await _call(client, "GET", f"/procurements/{de}{suffix}", None, "member-state-DE")).status_code == 200
            assert (await _call(client, "GET", f"/procurements/{de}{suffix}", None, "member-state-PL")).status_code == 404
        ref = w.de_case["reference"]
        assert (await _call(client, "GET", f"/procurements/by-reference/{ref}", None, "member-state-PL")).status_code == 404

        async def letters(who: str) -> set[int]:
            r = await _call(client, "GET", "/dead-letters", None, who)
            return {i["id"] for i in r.json()["items"]}

        assert {w.pl_letter, w.de_letter} <= await letters("auditor")
        assert await letters("member-state-PL") == {w.pl_letter}
        assert await letters("member-state-DE") == {w.de_letter}
        assert (await _call(client, "GET", f"/dead-letters/{w.de_letter}", None, "member-state-PL")).status_code == 404
        assert (await _call(client, "GET", f"/dead-letters/{w.de_letter}", None, "member-state-DE")).status_code == 200


async def test_tokens_never_appear_in_the_logs(tmp_path, prefix, redis_client):
    app = build("applications", tmp_path, prefix, log_messages=True)
    async with running(app) as (client, _rt):
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(JsonFormatter("applications"))
        root = logging.getLogger()
        root.addHandler(handler)
        level = root.level
        root.setLevel(logging.DEBUG)
        try:
            await _world(client, redis_client, prefix)
            for who in WHO:
                for path in ("/procurements", "/dead-letters", "/audit", "/procurements/x/explain"):
                    await _call(client, "GET", path, None, who)
                await _call(client, "POST", "/procurements", {"bad": True}, who)
            client.headers.pop("Authorization", None)
            await client.get("/procurements", headers={"Authorization": f"Basic {TOKENS['operator']}"})
            await client.get("/procurements", headers={"Authorization": f"Bearer {TOKENS['operator']}x"})
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
        text = out.getvalue()
        assert text, "nothing was logged: the check would prove nothing"
        for token in [*TOKENS.values(), "not-a-known-token"]:
            assert token not in text


# --- the other services: every endpoint of their OpenAPI × every role ---------------------------------

_SAMPLE = {"member_state": "PL", "ms": "PL", "code": "PL", "country": "PL", "case_id": "no-such-case",
           "loan_id": "no-such-loan", "agreement_id": "no-such-agreement", "id": "no-such-id"}
_OPEN_PATHS = {"/health/live", "/health/ready", "/metrics", "/asyncapi.json"}
_READ_ONLY_POSTS = {"/verifications/preview"}  # computes a verdict, stores and publishes nothing


def _operations(app: Any) -> list[tuple[str, str]]:
    ops = []
    for path, item in app.openapi()["paths"].items():
        if path in _OPEN_PATHS:
            continue
        for method in item:
            if method in {"get", "post", "put", "patch", "delete"}:
                ops.append((method.upper(), path))
    return ops


def _fill(path: str) -> str:
    for name, value in _SAMPLE.items():
        path = path.replace("{" + name + "}", value)
    return re.sub(r"\{[^}]+\}", "999999", path)


@pytest.mark.parametrize("service", ["origin_verification", "partner_registry", "loan_disbursement"])
async def test_every_endpoint_of_the_other_services_answers_every_role_as_the_contract_says(
    service, tmp_path, prefix, redis_client
):
    """No token or an unknown one: 401. Writes: only operators (auditors and member states: 403).
    Reads: auditors are never refused; nobody gets a 5xx."""
    app = build(service, tmp_path, prefix)
    async with running(app) as (client, _rt):
        failures = []
        ops = _operations(app)
        assert len(ops) >= 5, ops
        for method, template in ops:
            path = _fill(template)
            write = method != "GET" and template not in _READ_ONLY_POSTS
            for who in WHO:
                r = await _call(client, method, path, {} if write else None, who)
                code = r.status_code
                if who in ("none", "bad"):
                    ok = code == 401
                elif write and who != "operator":
                    ok = code == 403
                elif who == "auditor" or who == "operator":
                    ok = code not in (401, 403) and code < 500
                else:  # member states read what concerns them; some staff-only reads answer 403
                    ok = code != 401 and code < 500
                if not ok:
                    failures.append(f"{method} {path} as {who}: {code} {r.text[:200]}")
        assert not failures, "\n".join(failures)


# --- the direct route of POST /procurements -------------------------------------------------------------


async def test_the_direct_intake_route_answers_exactly_as_the_fastapi_route(tmp_path, prefix):
    """POST /procurements is served before FastAPI routes the request (ServiceApp); with the direct route
    switched off, FastAPI's declared route answers. Both must give the same statuses, bodies and headers."""
    same = proposal(financing=[])
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("no token", {}, json.dumps(proposal(financing=[])).encode()),
        ("bad token", headers("bad"), json.dumps(proposal(financing=[])).encode()),
        ("not bearer", {"Authorization": f"Basic {TOKENS['operator']}"}, b"{}"),
        ("auditor", headers("auditor"), json.dumps(proposal(financing=[])).encode()),
        ("member state", headers("member-state-PL"), json.dumps(proposal(financing=[])).encode()),
        ("not JSON", headers("operator"), b"{not json"),
        ("invalid", headers("operator"), json.dumps({**proposal(financing=[]), "participants": ["XX"],
                                                    "reference": ""}).encode()),
        ("too deep", headers("operator"), b"[" * 100_000 + b"]" * 100_000),
        ("NUL", headers("operator"), json.dumps(proposal(financing=[], title="a\u0000b")).encode()),
        ("too large", headers("operator"), b"{" + b" " * (16 * 1024 * 1024) + b"}"),
        ("created", headers("operator"), json.dumps(same).encode()),
        ("same again", headers("operator"), json.dumps(same).encode()),
        ("conflict", headers("operator"), json.dumps({**same, "title": "another title"}).encode()),
    ]
    answers: dict[bool, list[tuple[str, int, Any, str | None]]] = {}
    for direct in (True, False):
        app = build("applications", tmp_path / str(direct), prefix + str(direct))
        assert ("POST", "/procurements") in app.direct  # the applications service declares it
        if not direct:
            app.direct = {}
        async with running(app) as (client, _rt):
            out = []
            for name, hdrs, body in cases:
                r = await client.post("/procurements", content=body,
                                      headers={"content-type": "application/json", **hdrs})
                payload = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
                if isinstance(payload, dict):  # the new case's id and times differ between the two apps
                    payload = {k: v for k, v in payload.items() if k not in ("id", "created_at", "updated_at")}
                out.append((name, r.status_code, payload, r.headers.get("www-authenticate")))
                if name == "created":
                    # The case's status moves on once the relay has published its ProcurementSubmitted, in the
                    # background (on PostgreSQL possibly the relay task's round, not the one right after the
                    # commit). Settle it, so that "same again" finds the case in the same state through both routes.
                    case_id = r.json()["id"]

                    async def verifying(case_id: str = case_id) -> bool:
                        got = await client.get(f"/procurements/{case_id}", headers=headers("operator"))
                        return bool(got.json()["status"] == "verifying")

                    await wait_for(verifying, message="the new case with origin verification")
            answers[direct] = out
    assert answers[True] == answers[False]
    statuses = {name: status for name, status, _, _ in answers[True]}
    assert statuses == {"no token": 401, "bad token": 401, "not bearer": 401, "auditor": 403, "member state": 403,
                        "not JSON": 422, "invalid": 422, "too deep": 422, "NUL": 422, "too large": 413,
                        "created": 201, "same again": 200, "conflict": 409}


async def test_an_unexpected_error_on_the_direct_route_is_a_500_and_the_service_goes_on(tmp_path, prefix):
    app = build("applications", tmp_path, prefix)
    role, real = app.direct[("POST", "/procurements")]
    calls: list[int] = []

    async def fails_once(request: Any, who: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the handler")
        return await real(request, who)

    app.direct[("POST", "/procurements")] = (role, fails_once)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("safe.app").addHandler(handler)
    try:
        async with running(app) as (client, _rt):
            r = await _call(client, "POST", "/procurements", proposal(financing=[]), "operator")
            assert r.status_code == 500 and r.text == "Internal Server Error"
            assert any(rec.getMessage() == "request failed" and rec.exc_info for rec in records)
            r = await _call(client, "POST", "/procurements", proposal(financing=[]), "operator")
            assert r.status_code == 201
    finally:
        logging.getLogger("safe.app").removeHandler(handler)
