"""The console in the auth matrix: every role through the console's own pages and forms, against the real
applications service (in process, real Redis and database). The console adds its refusals in front of the
services': no page without a session, no form without the session's CSRF token, no write by a reader — and
the services' Member State scope shows through (another state's case is 'not found')."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from safe_procurement.services.console.app import build_app as build_console
from safe_procurement.services.console.config import ConsoleSettings
from safe_procurement.services.console.upstream import Upstream
from safe_procurement.services.testing.inprocess import running
from safe_procurement.shared.kit import auth
from tests.builders import proposal, proposal_led_by
from tests.integration.test_auth_matrix import SAFE_TOKENS, TOKENS, _call, build

CASE_PAGES = ["/cases/{case}", "/cases/{case}/live"]
LIST_PAGES = ["/cases", "/cases?status=verifying", "/cases?q=T-"]
READ = {"operator": 200, "auditor": 200, "member-state-PL": 200, "member-state-DE": 404}


async def _signed_in(console: httpx.AsyncClient, role: str) -> str:
    """Sign in through the form (with the sign-in page's double-submit token); returns the session's CSRF token."""
    console.cookies.clear()
    page = await console.get("/")
    pre = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = await console.post("/sign-in", data={"csrf": pre, "token": TOKENS[role], "next": "/cases"})
    assert r.status_code == 303, r.text
    page = await console.get("/cases")
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def test_the_console_refuses_to_start_outside_dev_without_tokens():
    with pytest.raises(auth.TokenError, match="SAFE_TOKENS"):
        build_console(ConsoleSettings(safe_tokens=None, safe_env="production"))


async def test_every_console_page_and_form_answers_every_role(tmp_path, prefix, redis_client):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        pl = (await _call(client, "POST", "/procurements", proposal(financing=[]), "operator")).json()
        upstream = Upstream({s: "http://applications" for s in
                             ("applications", "origin_verification", "partner_registry", "loan_disbursement")},
                            transport=httpx.ASGITransport(app=app))
        console_app = build_console(ConsoleSettings(safe_tokens=SAFE_TOKENS, safe_env="production"), upstream=upstream)
        async with console_app.router.lifespan_context(console_app):
            console = httpx.AsyncClient(transport=httpx.ASGITransport(app=console_app), base_url="http://console")
            failures: list[Any] = []
            withdraw = f"/cases/{pl['id']}/actions/withdraw"
            form = {"reason": "matrix", "confirm": "yes"}

            # nobody signed in: pages send to the sign-in page, forms are refused
            for path in [*LIST_PAGES, *(p.format(case=pl["id"]) for p in CASE_PAGES), "/facilities", "/system"]:
                r = await console.get(path)
                if r.status_code != 303 or not r.headers["location"].startswith("/?next="):
                    failures.append(("none", path, r.status_code))
            if (r := await console.post(withdraw, data=form)).status_code != 401:
                failures.append(("none", withdraw, r.status_code))
            # an unknown token does not sign in
            page = await console.get("/")
            pre = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            if (r := await console.post("/sign-in", data={"csrf": pre, "token": "not-a-token"})).status_code != 401:
                failures.append(("bad", "/sign-in", r.status_code))

            for role in ("auditor", "member-state-PL", "member-state-DE", "operator"):
                csrf = await _signed_in(console, role)
                for path in LIST_PAGES:
                    if (r := await console.get(path)).status_code != 200:
                        failures.append((role, path, r.status_code))
                for template in CASE_PAGES:
                    path = template.format(case=pl["id"])
                    if (r := await console.get(path)).status_code != READ[role]:
                        failures.append((role, path, r.status_code, READ[role]))
                listed = pl["reference"] in (await console.get("/cases")).text
                if listed != (role != "member-state-DE"):
                    failures.append((role, "/cases lists the PL case", listed))
                # a form without the CSRF token: refused for everyone
                if (r := await console.post(withdraw, data=form)).status_code != 403:
                    failures.append((role, withdraw, "no csrf", r.status_code))
                if role != "operator":  # a reader's forged post, with a valid CSRF token: refused by the console
                    r = await console.post(withdraw, data={**form, "csrf": csrf})
                    if r.status_code != 403 or "can read but not change" not in r.text:
                        failures.append((role, withdraw, "reader", r.status_code))
            assert not failures, failures
            case = (await _call(client, "GET", f"/procurements/{pl['id']}", None, "operator")).json()
            assert case["status"] != "withdrawn"  # none of the refused posts reached the service

            # the operator's post, with the token, is forwarded
            r = await console.post(withdraw, data={**form, "csrf": csrf})
            assert r.status_code == 303, r.text
            case = (await _call(client, "GET", f"/procurements/{pl['id']}", None, "operator")).json()
            assert case["status"] == "withdrawn"
            # and refused by the service afterwards: shown as a plain message, not a stack trace
            r = await console.post(withdraw, data={**form, "csrf": csrf})
            assert r.status_code == 409 and "Traceback" not in r.text and 'role="alert"' in r.text
            await console.aclose()


async def test_counts_and_reference_search_keep_the_member_state_scope(tmp_path, prefix, redis_client):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        pl = (await _call(client, "POST", "/procurements", proposal(financing=[]), "operator")).json()
        de = (await _call(client, "POST", "/procurements", proposal_led_by(["DE", "FR"]), "operator")).json()
        for who, refs in (("operator", {pl["reference"], de["reference"]}), ("auditor", {pl["reference"], de["reference"]}),
                          ("member-state-PL", {pl["reference"]}), ("member-state-DE", {de["reference"]})):
            r = await _call(client, "GET", "/procurement-search?reference=T-", None, who)
            assert r.status_code == 200 and {c["reference"] for c in r.json()["items"]} == refs, (who, r.text)
            r = await _call(client, "GET", "/procurement-counts", None, who)
            assert r.status_code == 200 and r.json()["total"] == len(refs), (who, r.text)
        r = await _call(client, "GET", f"/procurement-search?reference={pl['reference'][:6]}", None, "operator")
        assert [c["reference"] for c in r.json()["items"]] == [pl["reference"]]
        assert (await _call(client, "GET", "/procurement-counts?member_state=DE", None, "operator")).json()["total"] == 1
        for who in ("none", "bad"):
            assert (await _call(client, "GET", "/procurement-counts", None, who)).status_code == 401
            assert (await _call(client, "GET", "/procurement-search?reference=T", None, who)).status_code == 401
        assert (await _call(client, "GET", "/procurement-counts?member_state=ZZ", None, "operator")).status_code == 422
