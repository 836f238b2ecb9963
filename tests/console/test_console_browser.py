"""The operator console in a real browser (Playwright + Debian's chromium) against a real running stack.

One stack and one browser for the module; each test signs in with its own role in a fresh browser context."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from safe_procurement.services.testing.plugin import Stack
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import wire
from tests.console.conftest import AXE, SCREENSHOTS, TOKENS, Api

pytestmark = pytest.mark.e2e

CONTENT = re.compile(r".*")


def expect() -> Any:
    from playwright.sync_api import expect as e

    return e


@pytest.fixture
def signed_in(browser: Any, stack: Stack) -> Iterator[Any]:
    """`signed_in(role)` → a page signed in to the console with that role's token."""
    contexts = []

    def sign_in(role: str) -> Any:
        ctx = browser.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True,  # axe is injected inline
                                  base_url=stack.console_url)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto("/")
        page.get_by_label("Token").fill(TOKENS[role])
        page.get_by_role("button", name="Sign in").click()
        expect()(page.get_by_test_id("role")).to_have_text(role)
        return page

    yield sign_in
    for ctx in contexts:
        ctx.close()


def accessibility(page: Any, name: str) -> None:
    """axe-core (vendored, pinned) on the page: no serious or critical violation; and a screenshot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
           for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: {bad}"


def csrf_of(page: Any) -> str:
    return page.locator("form[action='/sign-out'] input[name=csrf]").get_attribute("value")  # type: ignore[no-any-return]


def needs_review_case(api: Api) -> dict[str, Any]:
    """A case that stops at needs_review (an agreement counts KR content eligible, its cap not configured)."""
    r = api.post("partner_registry", "/agreements", {
        "country": "KR", "kind": "safe_participation", "effective_from": "2026-01-01",
        "content_counts_as_eligible": True, "entities_eligible": False, "source": "console test: cap not configured"})
    assert r.status_code in (201, 409), r.text
    created = api.submit(end_products=[{"name": "radar", "category": "ammunition_and_missiles", "components": [
        {"name": "antenna", "origin_country": "KR", "cost_eur": "400000.00", "supplier": "s", "evidence_ref": "e1"},
        {"name": "casing", "origin_country": "PL", "cost_eur": "600000.00", "supplier": "s", "evidence_ref": "e2"}]}])
    api.wait("applications", f"/procurements/{created['id']}", lambda c: c["status"] == "needs_review")
    return created


def test_sign_in_is_required_and_a_wrong_token_is_refused(browser: Any, stack: Stack) -> None:
    ctx = browser.new_context(base_url=stack.console_url)
    page = ctx.new_page()
    page.goto("/cases")
    expect()(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect()(page.get_by_role("alert")).to_contain_text("not known")
    cookie = [c for c in ctx.cookies() if c["name"] == "safe_console_signin"][0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_label("Token").fill(TOKENS["operator"])
    page.get_by_role("button", name="Sign in").click()
    expect()(page).to_have_url(re.compile(r"/cases$"))
    session = [c for c in ctx.cookies() if c["name"] == "safe_console"][0]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and not session["secure"]  # plain HTTP here
    assert TOKENS["operator"] not in session["value"]
    page.get_by_role("button", name="Sign out").click()
    expect()(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto("/cases")  # the session is gone
    expect()(page.get_by_role("heading", name="Sign in")).to_be_visible()
    ctx.close()


def test_a_case_reaches_loan_approved_on_its_page_without_a_reload(signed_in: Any, api: Api) -> None:
    created = api.submit()
    page = signed_in("operator")
    page.goto(f"/cases/{created['id']}")
    page.evaluate("() => { window.__sameDocument = 'yes' }")
    expect()(page.get_by_test_id("status")).to_have_text("loan approved", timeout=60_000)
    assert page.evaluate("() => window.__sameDocument") == "yes", "the page was reloaded"
    expect()(page.get_by_test_id("outcome")).to_have_text("eligible")
    expect()(page.get_by_test_id("timeline")).to_contain_text("loan approved")
    expect()(page.get_by_role("table", name=re.compile("Ledger entries of this case"))).to_contain_text("reservation")
    accessibility(page, "case")


def test_withdraw_with_a_reason_shows_on_the_timeline(signed_in: Any, api: Api) -> None:
    created = needs_review_case(api)
    page = signed_in("operator")
    page.goto(f"/cases/{created['id']}")
    expect()(page.get_by_test_id("status")).to_have_text("needs review")
    accessibility(page, "case-needs-review")
    page.get_by_text("Withdraw the case", exact=True).first.click()  # opens the <details>
    page.get_by_label("Reason (recorded in the audit trail)").first.fill("duplicate of an earlier submission")
    page.get_by_role("button", name="Withdraw the case").click()
    # the required confirmation stops the form until ticked
    expect()(page.get_by_test_id("status")).to_have_text("needs review")
    page.get_by_label(re.compile("I confirm: withdraw the case")).check()
    page.get_by_role("button", name="Withdraw the case").click()
    # the outcome, then the case as it now is (the live poll may already have replaced the confirmation line)
    expect()(page.get_by_test_id("status")).to_have_text("withdrawn")
    expect()(page.get_by_test_id("timeline")).to_contain_text("duplicate of an earlier submission")
    assert api.get("applications", f"/procurements/{created['id']}")["status"] == "withdrawn"


def test_a_poison_message_s_dead_letter_is_inspected_and_replayed(signed_in: Any, api: Api, stack: Stack) -> None:
    poison = '{"reference": "POISON-1", "title": 42}'
    r = redis.Redis.from_url(stack.redis_url)
    try:
        r.xadd(stack.stream(streams.SUBMIT_PROCUREMENT), {wire.DATA: poison})
    finally:
        r.close()
    items = api.wait("applications", "/dead-letters",
                     lambda page: any("POISON-1" in str(i["payload"]) for i in page["items"]))["items"]
    dl = next(i for i in items if "POISON-1" in str(i["payload"]))
    page = signed_in("operator")
    page.goto("/dead-letters")
    accessibility(page, "dead-letters")
    page.get_by_role("link", name=f"#{dl['id']}").click()
    expect()(page.get_by_test_id("payload")).to_contain_text("POISON-1")
    expect()(page.get_by_test_id("dl-status")).to_have_text("open")
    accessibility(page, "dead-letter")
    page.get_by_text("Replay", exact=True).first.click()
    page.get_by_label("Reason (optional)").fill("replayed from the console test")
    page.get_by_label("I confirm the replay").check()
    page.get_by_role("button", name="Replay").click()
    expect()(page.get_by_test_id("dl-status")).to_have_text("replayed")
    assert api.get("applications", f"/dead-letters/{dl['id']}")["status"] == "replayed"


def test_an_auditor_sees_no_action_and_a_forged_post_is_refused(signed_in: Any, api: Api) -> None:
    created = needs_review_case(api)
    page = signed_in("auditor")
    page.goto(f"/cases/{created['id']}")
    expect()(page.get_by_test_id("status")).to_have_text("needs review")
    expect()(page.get_by_test_id("actions")).to_have_count(0)
    expect()(page.get_by_role("button", name=re.compile("Withdraw|Re-verify"))).to_have_count(0)
    page.goto("/registry")
    expect()(page.get_by_test_id("actions")).to_have_count(0)
    # a forged form post with a valid session and CSRF token: the console refuses it (and does not forward it)
    r = page.request.post(f"/cases/{created['id']}/actions/withdraw",
                          form={"csrf": csrf_of(page), "reason": "forged", "confirm": "yes"})
    assert r.status == 403 and "can read but not change" in r.text()
    assert api.get("applications", f"/procurements/{created['id']}")["status"] == "needs_review"


def test_a_dk_user_cannot_open_a_pl_case_by_url(signed_in: Any, api: Api) -> None:
    created = api.submit()  # PL lead, PL and LT participate
    page = signed_in("member-state-DK")
    r = page.goto(f"/cases/{created['id']}")
    assert r is not None and r.status == 404
    expect()(page.get_by_test_id("error")).to_contain_text("no such procurement case")
    expect()(page.get_by_text("Polska Amunicja")).to_have_count(0)
    page.goto("/cases")
    expect()(page.get_by_test_id("cases")).not_to_contain_text(created["reference"])
    r = page.goto("/facilities/PL")
    assert r is not None and r.status == 403
    pl = signed_in("member-state-PL")
    pl.goto(f"/cases/{created['id']}")
    expect()(pl.get_by_test_id("status")).to_be_visible()


def test_form_posts_without_the_csrf_token_are_refused(signed_in: Any, api: Api, browser: Any, stack: Stack) -> None:
    created = needs_review_case(api)
    page = signed_in("operator")
    for form in ({"reason": "no token", "confirm": "yes"}, {"csrf": "guessed", "reason": "x", "confirm": "yes"}):
        r = page.request.post(f"/cases/{created['id']}/actions/withdraw", form=form)
        assert r.status == 403 and "CSRF" in r.text()
    r = page.request.post("/registry/agreements", form={"country": "CH", "source": "x"})
    assert r.status == 403
    r = page.request.post("/sign-out", form={})
    assert r.status == 403
    assert api.get("applications", f"/procurements/{created['id']}")["status"] == "needs_review"
    # the sign-in form is protected too (double-submit token): a post from elsewhere is refused
    ctx = browser.new_context(base_url=stack.console_url)
    r = ctx.request.post("/sign-in", form={"token": TOKENS["operator"]})
    assert r.status == 403
    ctx.close()


def test_every_page_is_accessible(signed_in: Any, api: Api, browser: Any, stack: Stack) -> None:
    """axe: no serious or critical violation on each page (screenshots under var/screenshots/)."""
    ctx = browser.new_context(bypass_csp=True, base_url=stack.console_url, viewport={"width": 1366, "height": 900})
    page = ctx.new_page()
    page.goto("/")
    accessibility(page, "sign-in")
    ctx.close()
    created = api.submit()
    api.wait("applications", f"/procurements/{created['id']}", lambda c: c["status"] == "loan_approved")
    page = signed_in("operator")
    for path, name in (("/cases", "cases"), ("/facilities", "facilities"), ("/facilities/PL", "facility"),
                       ("/registry?on=2026-06-01", "registry"), ("/system", "system"),
                       (f"/cases/{created['id']}", "case-approved"), ("/cases/does-not-exist", "error")):
        page.goto(path)
        accessibility(page, name)
    expect()(page.get_by_test_id("error")).to_be_visible()
    page.goto("/system")
    expect()(page.get_by_test_id("system")).to_contain_text("ready")
    page.goto("/facilities")
    expect()(page.locator("svg.chart rect").first).to_be_visible()
    page.goto("/cases?status=loan_approved")
    expect()(page.get_by_test_id("cases")).to_contain_text(created["reference"])
    expect()(page.get_by_test_id("counts")).to_contain_text("loan approved")
