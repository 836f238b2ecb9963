"""The console's web app: sign-in, cases, a case, dead letters, facilities, partner registry, system.

Every page is rendered from the four services' public APIs, called with the signed-in user's token, so the
services' own role and Member State checks apply; the console adds its own refusals on top (a reader's POST,
a form without the session's CSRF token, another Member State's facility)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console import views
from services.console.config import ConsoleSettings
from services.console.sessions import COOKIE, PRE_COOKIE, Session, SessionStore
from services.console.upstream import SERVICE_TITLES, Upstream, UpstreamError
from services.launcher import SERVICES
from shared.kit.auth import TokenStore

log = logging.getLogger("safe.console")
HERE = Path(__file__).parent
HTMX = "vendor/htmx-2.0.11.min.js"


class PageError(Exception):
    """Shown to the user as a plain message with this HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInRequired(Exception):
    pass


def _csp() -> str:
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def build_app(settings: ConsoleSettings | None = None, upstream: Upstream | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    tokens = TokenStore(settings.safe_tokens, dev=settings.is_dev)
    sessions = SessionStore(idle_seconds=settings.session_idle_minutes * 60)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(money=views.money, billions=views.billions, percent=views.percent, htmx=HTMX,
                                 titles=SERVICE_TITLES, statuses=views.STATUSES, pretty=views.pretty_json)
    templates.env.filters["urlq"] = lambda v: quote(str(v), safe="")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.upstream = upstream or Upstream(settings.service_urls(), timeout=settings.request_timeout_s)
        try:
            yield
        finally:
            await app.state.upstream.aclose()

    app = FastAPI(title="SAFE operator console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.sessions = sessions
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def api(request: Request) -> Upstream:
        return request.app.state.upstream  # type: ignore[no-any-return]

    # --- plumbing -------------------------------------------------------------------------------------
    def secure(request: Request) -> bool:
        if settings.cookie_secure == "always":
            return True
        if settings.cookie_secure == "never":
            return False
        return request.url.scheme == "https"

    def current(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def need(request: Request) -> Session:
        s = current(request)
        if s is None:
            raise SignInRequired()
        return s

    async def form_of(request: Request, s: Session) -> dict[str, str]:
        """The posted form, after the CSRF check (a form without this session's token is refused) and the
        role check (a reader's POST is refused: the console never forwards it)."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not s.csrf_ok(form.get("csrf") or request.headers.get("x-csrf-token")):
            raise PageError(403, "This form did not come from your console session (CSRF check failed). "
                                 "Reload the page and try again.")
        if not s.principal.can_write:
            raise PageError(403, f"Your role ({s.principal.role}) can read but not change anything.")
        return form

    def render(request: Request, name: str, s: Session | None, code: int = 200, **ctx: Any) -> HTMLResponse:
        flash = list(s.flash) if s else []
        if s:
            s.flash.clear()
        ctx.update(request=request, s=s, who=s.principal if s else None, flash=flash, nav=ctx.get("nav", ""),
                   poll_ms=settings.poll_interval_ms)
        return templates.TemplateResponse(request, name, ctx, status_code=code)

    def back(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _csp())
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        if request.method != "GET":
            return render(request, "error.html", None, code=401, title="Signed out",
                          message="You are not signed in (or your session expired). Sign in and try again.")
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/"})
        return back("/?" + urlencode({"next": request.url.path}))

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return render(request, "error.html", current(request), code=exc.status, title="Not possible",
                      message=exc.message)

    @app.exception_handler(UpstreamError)
    async def _upstream_error(request: Request, exc: UpstreamError) -> Response:
        return render(request, "error.html", current(request), code=exc.status, title="The service said no"
                      if exc.status < 500 else "A service is unavailable", message=exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return render(request, "error.html", current(request), code=exc.status_code, title="Not found"
                      if exc.status_code == 404 else "Not possible", message=str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.error("page failed: %s %s", request.method, request.url.path, exc_info=exc)
        return render(request, "error.html", current(request), code=500, title="Something went wrong",
                      message="The console could not show this page. The error is in the console's log.")

    # --- health ---------------------------------------------------------------------------------------
    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive", "service": "console"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready", "service": "console", "sessions": len(sessions)})

    # --- sign-in / out --------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request, next: str = "/cases") -> Response:
        if current(request) is not None:
            return back("/cases")
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
        resp = render(request, "signin.html", None, pre=pre, next=next if next.startswith("/") and not
                      next.startswith("//") else "/cases")
        resp.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict", secure=secure(request), path="/")
        return resp

    @app.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        pre = request.cookies.get(PRE_COOKIE)
        if not pre or not secrets.compare_digest(pre.encode(), form.get("csrf", "").encode()):
            raise PageError(403, "The sign-in form expired or did not come from this console (CSRF check failed). "
                                 "Open the sign-in page again.")
        who = tokens.lookup(form.get("token", "").strip())
        if who is None:
            return render(request, "signin.html", None, code=401, pre=pre, next=form.get("next", "/cases"),
                          error="That token is not known. Check it and try again.")
        sid, _s = sessions.create(form["token"].strip(), who)
        target = form.get("next", "/cases")
        resp = back(target if target.startswith("/") and not target.startswith("//") else "/cases")
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=secure(request), path="/",
                        max_age=settings.session_idle_minutes * 60)
        resp.delete_cookie(PRE_COOKIE, path="/")
        return resp

    @app.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        s = need(request)
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not s.csrf_ok(form.get("csrf")):
            raise PageError(403, "CSRF check failed; reload the page and sign out again.")
        sessions.drop(request.cookies.get(COOKIE))
        resp = back("/")
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # --- cases ----------------------------------------------------------------------------------------
    @app.get("/cases", response_class=HTMLResponse)
    async def cases(request: Request, status: str = "", member_state: str = "", q: str = "",
                    cursor: str = "") -> Response:
        s = need(request)
        ms = member_state.strip().upper()
        if status and status not in views.STATUSES:
            raise PageError(422, f"Unknown status {status!r}.")
        up = api(request)
        counts_call = up.get("applications", "/procurement-counts", s.token, member_state=ms)
        if q.strip():
            page_call = up.get("applications", "/procurement-search", s.token, reference=q.strip(),
                               limit=settings.page_size)
        else:
            page_call = up.get("applications", "/procurements", s.token, status=status, member_state=ms,
                               limit=settings.page_size, cursor=cursor)
        counts, page = await asyncio.gather(counts_call, page_call)
        items = page["items"]
        if q.strip():
            items = [c for c in items if (not status or c["status"] == status)]
        rows = views.case_rows(items, datetime.now(UTC))
        base = {"status": status, "member_state": ms}
        next_url = ("/cases?" + urlencode({**base, "cursor": page["next_cursor"]})) if page.get("next_cursor") else None
        return render(request, "cases.html", s, nav="cases", rows=rows, counts=views.status_counts(counts["counts"]),
                      total=counts["total"], status=status, member_state=ms, q=q, next_url=next_url,
                      first_url=("/cases?" + urlencode(base)) if cursor else None)

    async def case_data(request: Request, s: Session, case_id: str) -> dict[str, Any]:
        up = api(request)
        case = await up.get("applications", f"/procurements/{quote(case_id, safe='')}", s.token)
        cid = quote(case["id"], safe="")
        timeline, explain = await asyncio.gather(
            up.get("applications", f"/procurements/{cid}/timeline", s.token),
            up.get("applications", f"/procurements/{cid}/explain", s.token))
        loans: list[dict[str, Any]] = []
        ledger: list[dict[str, Any]] = []
        notes: list[str] = []
        if case.get("loan"):
            try:
                loans = (await up.get("loan_disbursement", "/loans", s.token, case_id=case["id"]))["items"]
                for ms in sorted({ln["member_state"] for ln in loans}):
                    page = await up.get("loan_disbursement", f"/facilities/{ms}/ledger", s.token, limit=1000)
                    ledger += [e for e in page["items"] if e.get("case_id") == case["id"]]
            except UpstreamError as e:
                notes.append(e.message)
        return dict(case=case, timeline=timeline["items"], explain=explain, loans=loans, ledger=ledger, notes=notes,
                    final=views.is_final(case), products=views.end_products(case.get("proposal") or {}),
                    verification=views.verification_view(case.get("verification")),
                    actions=views.allowed_actions(explain, case["id"], s.principal))

    @app.get("/cases/{case_id}", response_class=HTMLResponse)
    async def case_page(request: Request, case_id: str) -> Response:
        s = need(request)
        data = await case_data(request, s, case_id)
        return render(request, "case.html", s, nav="cases", **data)

    @app.get("/cases/{case_id}/live", response_class=HTMLResponse)
    async def case_live(request: Request, case_id: str) -> Response:
        """The moving part of a case page (status, explain, verification, loan, timeline), polled by htmx
        until the case is final."""
        s = need(request)
        data = await case_data(request, s, case_id)
        return render(request, "_case_live.html", s, **data)

    @app.post("/cases/{case_id}/actions/{action}")
    async def case_action(request: Request, case_id: str, action: str) -> Response:
        s = need(request)
        form = await form_of(request, s)
        act = views.CASE_ACTIONS.get(action)
        if act is None:
            raise PageError(404, f"No action {action!r}.")
        reason = form.get("reason", "").strip()
        if not reason:
            raise PageError(422, "Give a reason: it is recorded in the audit trail.")
        if form.get("confirm") != "yes":
            raise PageError(422, "Tick the confirmation box to confirm the action.")
        await api(request).post("applications", f"/procurements/{quote(case_id, safe='')}/{action}", s.token,
                                {"reason": reason})
        s.flash.append(f"{act.label}: done.")
        return back(f"/cases/{quote(case_id, safe='')}")

    # --- dead letters ---------------------------------------------------------------------------------
    @app.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(request: Request, service: str = "", status: str = "open", cursor: str = "") -> Response:
        s = need(request)
        if service and service not in SERVICES:
            raise PageError(422, f"Unknown service {service!r}.")
        if status not in ("open", "replayed", "discarded", "all"):
            raise PageError(422, f"Unknown status {status!r}.")
        chosen = [service] if service else list(SERVICES)
        up = api(request)

        async def one(svc: str) -> tuple[str, dict[str, Any] | None, str | None]:
            try:
                page = await up.get(svc, "/dead-letters", s.token, status="" if status == "all" else status,
                                    limit=settings.page_size, cursor=cursor if service else "")
                return svc, page, None
            except UpstreamError as e:
                return svc, None, e.message

        results = await asyncio.gather(*(one(svc) for svc in chosen))
        items, errors, more = [], [], []
        for svc, page, err in results:
            if err:
                errors.append(err)
                continue
            assert page is not None
            items += [{**it, "service": svc} for it in page["items"]]
            if page.get("next_cursor"):
                more.append((svc, "/dead-letters?" + urlencode({"service": svc, "status": status,
                                                                "cursor": page["next_cursor"]})))
        items.sort(key=lambda it: str(it.get("last_failed_at")), reverse=True)
        return render(request, "dead_letters.html", s, nav="dead", items=items, errors=errors, more=more,
                      service=service, status=status, services=list(SERVICES))

    @app.get("/dead-letters/{service}/{dl_id}", response_class=HTMLResponse)
    async def dead_letter(request: Request, service: str, dl_id: int) -> Response:
        s = need(request)
        if service not in SERVICES:
            raise PageError(404, f"Unknown service {service!r}.")
        item = await api(request).get(service, f"/dead-letters/{dl_id}", s.token)
        return render(request, "dead_letter.html", s, nav="dead", item=item, service=service)

    @app.post("/dead-letters/{service}/{dl_id}/{verb}")
    async def dead_letter_action(request: Request, service: str, dl_id: int, verb: str) -> Response:
        s = need(request)
        form = await form_of(request, s)
        if service not in SERVICES or verb not in ("replay", "discard"):
            raise PageError(404, "No such action.")
        reason = form.get("reason", "").strip()
        if verb == "discard" and not reason:
            raise PageError(422, "Give a reason to discard a dead letter.")
        if form.get("confirm") != "yes":
            raise PageError(422, "Tick the confirmation box to confirm the action.")
        await api(request).post(service, f"/dead-letters/{dl_id}/{verb}", s.token, {"reason": reason or None}
                                if verb == "replay" else {"reason": reason})
        s.flash.append(f"Dead letter {dl_id} of {SERVICE_TITLES[service]}: {verb}ed.")
        return back(f"/dead-letters/{service}/{dl_id}")

    # --- facilities -----------------------------------------------------------------------------------
    @app.get("/facilities", response_class=HTMLResponse)
    async def facilities(request: Request) -> Response:
        s = need(request)
        items = (await api(request).get("loan_disbursement", "/facilities", s.token))["items"]
        ms = s.principal.member_state
        if ms is not None:  # a Member State sees its own facility only
            items = [f for f in items if f["member_state"] == ms]
        rows = views.facility_rows(items)
        return render(request, "facilities.html", s, nav="facilities", rows=rows, chart=views.envelope_chart(rows))

    @app.get("/facilities/{member_state}", response_class=HTMLResponse)
    async def facility(request: Request, member_state: str, cursor: str = "") -> Response:
        s = need(request)
        code = member_state.upper()
        if s.principal.member_state is not None and s.principal.member_state != code:
            raise PageError(403, f"Your role sees only the facility of {s.principal.member_state}.")
        up = api(request)
        fac, ledger = await asyncio.gather(
            up.get("loan_disbursement", f"/facilities/{quote(code, safe='')}", s.token),
            up.get("loan_disbursement", f"/facilities/{quote(code, safe='')}/ledger", s.token, limit=100,
                   cursor=cursor))
        row = views.facility_rows([fac])[0]
        next_url = f"/facilities/{code}?cursor={quote(ledger['next_cursor'])}" if ledger.get("next_cursor") else None
        return render(request, "facility.html", s, nav="facilities", f=fac, row=row, ledger=ledger["items"],
                      next_url=next_url)

    # --- partner registry -----------------------------------------------------------------------------
    @app.get("/registry", response_class=HTMLResponse)
    async def registry(request: Request, on: str = "", country: str = "") -> Response:
        s = need(request)
        try:
            day = date.fromisoformat(on) if on else datetime.now(UTC).date()
        except ValueError:
            raise PageError(422, "The date must be YYYY-MM-DD.") from None
        code = country.strip().upper()
        up = api(request)
        countries_, agreements, history = await asyncio.gather(
            up.get("partner_registry", "/countries", s.token, on=day.isoformat()),
            up.get("partner_registry", "/agreements", s.token, country=code),
            up.get("partner_registry", "/history", s.token, country=code, limit=50))
        if code:
            countries_ = [c for c in countries_ if c["code"] == code]
        return render(request, "registry.html", s, nav="registry", day=day.isoformat(), country=code,
                      countries=countries_, agreements=agreements, history=history["items"])

    @app.post("/registry/agreements")
    async def add_agreement(request: Request) -> Response:
        s = need(request)
        form = await form_of(request, s)
        body: dict[str, Any] = {
            "country": form.get("country", "").strip().upper(), "kind": "safe_participation",
            "effective_from": form.get("effective_from") or None, "effective_to": form.get("effective_to") or None,
            "content_counts_as_eligible": form.get("content_counts_as_eligible") == "yes",
            "max_content_share": form.get("max_content_share") or None,
            "entities_eligible": form.get("entities_eligible") == "yes",
            "source": form.get("source", "").strip(), "confidence": form.get("confidence") or "official",
        }
        if form.get("note"):
            body["note"] = form["note"]
        await api(request).post("partner_registry", "/agreements", s.token, body)
        s.flash.append(f"Agreement for {body['country']} recorded.")
        return back("/registry?" + urlencode({"country": body["country"]}))

    # --- system ---------------------------------------------------------------------------------------
    @app.get("/system", response_class=HTMLResponse)
    async def system(request: Request) -> Response:
        s = need(request)
        up = api(request)

        async def one(svc: str) -> views.ServiceHealth:
            ready: dict[str, Any] | None = None
            metrics: str | None = None
            error = None
            try:  # a 503 (not ready) still carries its checks
                ready = (await up.http.get(up.urls[svc] + "/health/ready")).json()
            except (httpx.HTTPError, ValueError):
                error = f"the {SERVICE_TITLES[svc]} service is not reachable"
            try:
                metrics = (await up.request(svc, "GET", "/metrics", None, raw=True)).text
            except UpstreamError as e:
                error = error or e.message
            return views.service_health(svc, ready, metrics, error)

        rows = await asyncio.gather(*(one(svc) for svc in SERVICES))
        return render(request, "system.html", s, nav="system", rows=rows)

    return app
