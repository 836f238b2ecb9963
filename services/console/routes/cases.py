"""Cases: the list (by status and Member State, or a reference search), one case with its live part, and the
operator actions on a case (each with a reason and a confirmation)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from safe_procurement.services.console import views
from safe_procurement.services.console.sessions import Session
from safe_procurement.services.console.upstream import Upstream, UpstreamError
from safe_procurement.services.console.web import Console, PageError, back, confirmed


def router(c: Console) -> APIRouter:
    r = APIRouter()

    @r.get("/cases", response_class=HTMLResponse)
    async def cases(request: Request, status: str = "", member_state: str = "", q: str = "",
                    cursor: str = "") -> Response:
        s = c.need(request)
        ms = member_state.strip().upper()
        if status and status not in views.STATUSES:
            raise PageError(422, f"Unknown status {status!r}.")
        counts, page = await case_list(c, s, status, ms, q.strip(), cursor)
        rows = views.case_rows(page["items"], datetime.now(UTC))
        base = {"status": status, "member_state": ms}
        next_url = ("/cases?" + urlencode({**base, "cursor": page["next_cursor"]})) if page.get("next_cursor") else None
        return c.render(request, "cases.html", s, nav="cases", rows=rows, counts=views.status_counts(counts["counts"]),
                        total=counts["total"], status=status, member_state=ms, q=q, next_url=next_url,
                        first_url=("/cases?" + urlencode(base)) if cursor else None)

    @r.get("/cases/{case_id}", response_class=HTMLResponse)
    async def case_page(request: Request, case_id: str) -> Response:
        s = c.need(request)
        data = await case_data(c.upstream, s, case_id)
        return c.render(request, "case.html", s, nav="cases", **data)

    @r.get("/cases/{case_id}/live", response_class=HTMLResponse)
    async def case_live(request: Request, case_id: str) -> Response:
        """The moving part of a case page (status, explain, verification, loan, timeline), polled by htmx
        until the case is final."""
        s = c.need(request)
        data = await case_data(c.upstream, s, case_id)
        return c.render(request, "_case_live.html", s, **data)

    @r.post("/cases/{case_id}/actions/{action}")
    async def case_action(request: Request, case_id: str, action: str) -> Response:
        s = c.need(request)
        form = await c.form_of(request, s)
        act = views.CASE_ACTIONS.get(action)
        if act is None:
            raise PageError(404, f"No action {action!r}.")
        reason = form.get("reason", "").strip()
        if not reason:
            raise PageError(422, "Give a reason: it is recorded in the audit trail.")
        confirmed(form)
        await c.upstream.post("applications", f"/procurements/{quote(case_id, safe='')}/{action}", s.token,
                              {"reason": reason})
        s.flash.append(f"{act.label}: done.")
        return back(f"/cases/{quote(case_id, safe='')}")

    return r


async def case_list(c: Console, s: Session, status: str, ms: str, q: str,
                    cursor: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The counts per status and one page of cases: a reference search (then filtered by status) when `q` is
    given, else the cases in `status` of Member State `ms`."""
    up = c.upstream
    counts_call = up.get("applications", "/procurement-counts", s.token, member_state=ms)
    if q:
        page_call = up.get("applications", "/procurement-search", s.token, reference=q, limit=c.settings.page_size)
    else:
        page_call = up.get("applications", "/procurements", s.token, status=status, member_state=ms,
                           limit=c.settings.page_size, cursor=cursor)
    counts, page = await asyncio.gather(counts_call, page_call)
    if q:
        page = {**page, "items": [it for it in page["items"] if (not status or it["status"] == status)]}
    return counts, page


async def case_data(up: Upstream, s: Session, case_id: str) -> dict[str, Any]:
    """Everything a case page shows: the case, its timeline and explain, its loans and their ledger entries."""
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
