"""Facilities: every Member State's loan facility against the envelope, and one facility with its ledger.
A Member State's user sees its own facility only."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from safe_procurement.services.console import views
from safe_procurement.services.console.web import Console, PageError


def router(c: Console) -> APIRouter:
    r = APIRouter()

    @r.get("/facilities", response_class=HTMLResponse)
    async def facilities(request: Request) -> Response:
        s = c.need(request)
        items = (await c.upstream.get("loan_disbursement", "/facilities", s.token))["items"]
        ms = s.principal.member_state
        if ms is not None:  # a Member State sees its own facility only
            items = [f for f in items if f["member_state"] == ms]
        rows = views.facility_rows(items)
        return c.render(request, "facilities.html", s, nav="facilities", rows=rows, chart=views.envelope_chart(rows))

    @r.get("/facilities/{member_state}", response_class=HTMLResponse)
    async def facility(request: Request, member_state: str, cursor: str = "") -> Response:
        s = c.need(request)
        code = member_state.upper()
        if s.principal.member_state is not None and s.principal.member_state != code:
            raise PageError(403, f"Your role sees only the facility of {s.principal.member_state}.")
        up = c.upstream
        fac, ledger = await asyncio.gather(
            up.get("loan_disbursement", f"/facilities/{quote(code, safe='')}", s.token),
            up.get("loan_disbursement", f"/facilities/{quote(code, safe='')}/ledger", s.token, limit=100,
                   cursor=cursor))
        row = views.facility_rows([fac])[0]
        next_url = f"/facilities/{code}?cursor={quote(ledger['next_cursor'])}" if ledger.get("next_cursor") else None
        return c.render(request, "facility.html", s, nav="facilities", f=fac, row=row, ledger=ledger["items"],
                        next_url=next_url)

    return r
