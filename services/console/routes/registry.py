"""The partner registry: countries on a day, agreements and their history; an operator records an agreement."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from safe_procurement.services.console.web import Console, PageError, back


def router(c: Console) -> APIRouter:
    r = APIRouter()

    @r.get("/registry", response_class=HTMLResponse)
    async def registry(request: Request, on: str = "", country: str = "") -> Response:
        s = c.need(request)
        try:
            day = date.fromisoformat(on) if on else datetime.now(UTC).date()
        except ValueError:
            raise PageError(422, "The date must be YYYY-MM-DD.") from None
        code = country.strip().upper()
        up = c.upstream
        countries_, agreements, history = await asyncio.gather(
            up.get("partner_registry", "/countries", s.token, on=day.isoformat()),
            up.get("partner_registry", "/agreements", s.token, country=code),
            up.get("partner_registry", "/history", s.token, country=code, limit=50))
        if code:
            countries_ = [x for x in countries_ if x["code"] == code]
        return c.render(request, "registry.html", s, nav="registry", day=day.isoformat(), country=code,
                        countries=countries_, agreements=agreements, history=history["items"])

    @r.post("/registry/agreements")
    async def add_agreement(request: Request) -> Response:
        s = c.need(request)
        body = agreement(await c.form_of(request, s))
        await c.upstream.post("partner_registry", "/agreements", s.token, body)
        s.flash.append(f"Agreement for {body['country']} recorded.")
        return back("/registry?" + urlencode({"country": body["country"]}))

    return r


def agreement(form: dict[str, str]) -> dict[str, Any]:
    """The registry's agreement body from the console's form (empty fields: not given)."""
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
    return body
