"""Dead letters: the open (or replayed, discarded) dead letters of one service or all four, one dead letter,
and replay / discard (each confirmed; a discard needs a reason)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from safe_procurement.services.console.sessions import Session
from safe_procurement.services.console.upstream import SERVICE_TITLES, Upstream, UpstreamError
from safe_procurement.services.console.web import Console, PageError, back, confirmed
from safe_procurement.services.launcher import SERVICES

STATUSES = ("open", "replayed", "discarded", "all")
Answer = tuple[str, dict[str, Any] | None, str | None]  # (service, its page of dead letters | None, error | None)


def router(c: Console) -> APIRouter:
    r = APIRouter()

    @r.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(request: Request, service: str = "", status: str = "open", cursor: str = "") -> Response:
        s = c.need(request)
        if service and service not in SERVICES:
            raise PageError(422, f"Unknown service {service!r}.")
        if status not in STATUSES:
            raise PageError(422, f"Unknown status {status!r}.")
        chosen = [service] if service else list(SERVICES)
        pages = await asyncio.gather(*(one_service(c.upstream, s, svc, status, cursor if service else "",
                                                   c.settings.page_size) for svc in chosen))
        items, errors, more = merged(pages, status)
        return c.render(request, "dead_letters.html", s, nav="dead", items=items, errors=errors, more=more,
                        service=service, status=status, services=list(SERVICES))

    @r.get("/dead-letters/{service}/{dl_id}", response_class=HTMLResponse)
    async def dead_letter(request: Request, service: str, dl_id: int) -> Response:
        s = c.need(request)
        if service not in SERVICES:
            raise PageError(404, f"Unknown service {service!r}.")
        item = await c.upstream.get(service, f"/dead-letters/{dl_id}", s.token)
        return c.render(request, "dead_letter.html", s, nav="dead", item=item, service=service)

    @r.post("/dead-letters/{service}/{dl_id}/{verb}")
    async def dead_letter_action(request: Request, service: str, dl_id: int, verb: str) -> Response:
        s = c.need(request)
        form = await c.form_of(request, s)
        if service not in SERVICES or verb not in ("replay", "discard"):
            raise PageError(404, "No such action.")
        reason = form.get("reason", "").strip()
        if verb == "discard" and not reason:
            raise PageError(422, "Give a reason to discard a dead letter.")
        confirmed(form)
        await c.upstream.post(service, f"/dead-letters/{dl_id}/{verb}", s.token, {"reason": reason or None}
                              if verb == "replay" else {"reason": reason})
        s.flash.append(f"Dead letter {dl_id} of {SERVICE_TITLES[service]}: {verb}ed.")
        return back(f"/dead-letters/{service}/{dl_id}")

    return r


async def one_service(up: Upstream, s: Session, svc: str, status: str, cursor: str, limit: int) -> Answer:
    """One service's page of dead letters, or why it could not be read (the other services still show)."""
    try:
        page = await up.get(svc, "/dead-letters", s.token, status="" if status == "all" else status,
                            limit=limit, cursor=cursor)
        return svc, page, None
    except UpstreamError as e:
        return svc, None, e.message


def merged(pages: list[Answer], status: str) -> tuple[list[dict[str, Any]], list[str], list[tuple[str, str]]]:
    """The dead letters of every service that answered, newest failure first; the errors of those that did not;
    a link to each service's next page."""
    items: list[dict[str, Any]] = []
    errors: list[str] = []
    more: list[tuple[str, str]] = []
    for svc, page, err in pages:
        if err:
            errors.append(err)
            continue
        assert page is not None
        items += [{**it, "service": svc} for it in page["items"]]
        if page.get("next_cursor"):
            more.append((svc, "/dead-letters?" + urlencode({"service": svc, "status": status,
                                                            "cursor": page["next_cursor"]})))
    items.sort(key=lambda it: str(it.get("last_failed_at")), reverse=True)
    return items, errors, more
