"""The console's plumbing: one typed object every page works through (settings, tokens, sessions, templates,
the services' API), the refusals every page shares (signed out, CSRF, a reader's POST), the error pages and
the security headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from safe_procurement.services.console import views
from safe_procurement.services.console.config import ConsoleSettings
from safe_procurement.services.console.sessions import COOKIE, Session, SessionStore
from safe_procurement.services.console.upstream import SERVICE_TITLES, Upstream, UpstreamError
from safe_procurement.shared.kit.auth import TokenStore

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


def csp() -> str:
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def page_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(money=views.money, billions=views.billions, percent=views.percent, htmx=HTMX,
                                 titles=SERVICE_TITLES, statuses=views.STATUSES, pretty=views.pretty_json)
    templates.env.filters["urlq"] = lambda v: quote(str(v), safe="")
    return templates


def back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def posted(request: Request) -> dict[str, str]:
    """The posted form as plain strings, unchecked."""
    return {k: str(v) for k, v in (await request.form()).items()}


def confirmed(form: dict[str, str]) -> None:
    if form.get("confirm") != "yes":
        raise PageError(422, "Tick the confirmation box to confirm the action.")


class Console:
    """What every page needs; built once by `build_app`, handed to each area's router."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.tokens = TokenStore(settings.safe_tokens, dev=settings.is_dev)
        self.sessions = SessionStore(idle_seconds=settings.session_idle_minutes * 60)
        self.templates = page_templates()
        self._upstream: Upstream | None = None

    @property
    def upstream(self) -> Upstream:
        """The four services' APIs: open while the app's lifespan runs."""
        if self._upstream is None:
            raise RuntimeError("the console's upstream opens with the app's lifespan")
        return self._upstream

    @asynccontextmanager
    async def serving(self, upstream: Upstream | None) -> AsyncIterator[None]:
        """Open the services' APIs (the given upstream, else one on the configured URLs) and close them after."""
        self._upstream = upstream or Upstream(self.settings.service_urls(), timeout=self.settings.request_timeout_s)
        try:
            yield
        finally:
            await self._upstream.aclose()

    def secure(self, request: Request) -> bool:
        if self.settings.cookie_secure == "always":
            return True
        if self.settings.cookie_secure == "never":
            return False
        return request.url.scheme == "https"

    def current(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def need(self, request: Request) -> Session:
        s = self.current(request)
        if s is None:
            raise SignInRequired()
        return s

    async def form_of(self, request: Request, s: Session) -> dict[str, str]:
        """The posted form, after the CSRF check (a form without this session's token is refused) and the
        role check (a reader's POST is refused: the console never forwards it)."""
        form = await posted(request)
        if not s.csrf_ok(form.get("csrf") or request.headers.get("x-csrf-token")):
            raise PageError(403, "This form did not come from your console session (CSRF check failed). "
                                 "Reload the page and try again.")
        if not s.principal.can_write:
            raise PageError(403, f"Your role ({s.principal.role}) can read but not change anything.")
        return form

    def render(self, request: Request, name: str, s: Session | None, code: int = 200, **ctx: Any) -> HTMLResponse:
        flash = list(s.flash) if s else []
        if s:
            s.flash.clear()
        ctx.update(request=request, s=s, who=s.principal if s else None, flash=flash, nav=ctx.get("nav", ""),
                   poll_ms=self.settings.poll_interval_ms)
        return self.templates.TemplateResponse(request, name, ctx, status_code=code)


async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", csp())
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if not request.url.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


ErrorPage = Callable[[Request, Any], Awaitable[Response]]


def error_pages(c: Console) -> dict[type[Exception], ErrorPage]:
    """Every error as a page in words: signed out (a GET is sent to sign in), refused, upstream, not found, crash."""

    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        if request.method != "GET":
            return c.render(request, "error.html", None, code=401, title="Signed out",
                            message="You are not signed in (or your session expired). Sign in and try again.")
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/"})
        return back("/?" + urlencode({"next": request.url.path}))

    async def page_error(request: Request, exc: PageError) -> Response:
        return c.render(request, "error.html", c.current(request), code=exc.status, title="Not possible",
                        message=exc.message)

    async def upstream_error(request: Request, exc: UpstreamError) -> Response:
        return c.render(request, "error.html", c.current(request), code=exc.status, title="The service said no"
                        if exc.status < 500 else "A service is unavailable", message=exc.message)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return c.render(request, "error.html", c.current(request), code=exc.status_code, title="Not found"
                        if exc.status_code == 404 else "Not possible", message=str(exc.detail))

    async def crash(request: Request, exc: Exception) -> Response:
        log.error("page failed: %s %s", request.method, request.url.path, exc_info=exc)
        return c.render(request, "error.html", c.current(request), code=500, title="Something went wrong",
                        message="The console could not show this page. The error is in the console's log.")

    return {SignInRequired: sign_in, PageError: page_error, UpstreamError: upstream_error,
            StarletteHTTPException: http_error, Exception: crash}
