"""Sign-in and sign-out. The sign-in form carries a double-submit CSRF token (no session exists yet); the
session cookie is HttpOnly, SameSite=Strict and Secure over TLS."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from safe_procurement.services.console.sessions import COOKIE, PRE_COOKIE
from safe_procurement.services.console.web import Console, PageError, back, posted


def local(target: str) -> str:
    """Where to go after sign-in: a path on this console only (never another site), else the case list."""
    return target if target.startswith("/") and not target.startswith("//") else "/cases"


def router(c: Console) -> APIRouter:
    r = APIRouter()

    @r.get("/", response_class=HTMLResponse)
    async def home(request: Request, next: str = "/cases") -> Response:
        if c.current(request) is not None:
            return back("/cases")
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
        resp = c.render(request, "signin.html", None, pre=pre, next=local(next))
        resp.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict", secure=c.secure(request), path="/")
        return resp

    @r.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        form = await posted(request)
        pre = request.cookies.get(PRE_COOKIE)
        if not pre or not secrets.compare_digest(pre.encode(), form.get("csrf", "").encode()):
            raise PageError(403, "The sign-in form expired or did not come from this console (CSRF check failed). "
                                 "Open the sign-in page again.")
        who = c.tokens.lookup(form.get("token", "").strip())
        if who is None:
            return c.render(request, "signin.html", None, code=401, pre=pre, next=form.get("next", "/cases"),
                            error="That token is not known. Check it and try again.")
        sid, _s = c.sessions.create(form["token"].strip(), who)
        resp = back(local(form.get("next", "/cases")))
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=c.secure(request), path="/",
                        max_age=c.settings.session_idle_minutes * 60)
        resp.delete_cookie(PRE_COOKIE, path="/")
        return resp

    @r.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        s = c.need(request)
        form = await posted(request)
        if not s.csrf_ok(form.get("csrf")):
            raise PageError(403, "CSRF check failed; reload the page and sign out again.")
        c.sessions.drop(request.cookies.get(COOKIE))
        resp = back("/")
        resp.delete_cookie(COOKIE, path="/")
        return resp

    return r
