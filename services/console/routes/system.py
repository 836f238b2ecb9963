"""System: each service's readiness, stream lag, dead letters and unsent outbox, from its health and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from safe_procurement.services.console import views
from safe_procurement.services.console.upstream import SERVICE_TITLES, Upstream, UpstreamError
from safe_procurement.services.console.web import Console
from safe_procurement.services.launcher import SERVICES


def router(c: Console) -> APIRouter:
    r = APIRouter()

    @r.get("/system", response_class=HTMLResponse)
    async def system(request: Request) -> Response:
        s = c.need(request)
        rows = await asyncio.gather(*(service_health(c.upstream, svc) for svc in SERVICES))
        return c.render(request, "system.html", s, nav="system", rows=rows)

    return r


async def service_health(up: Upstream, svc: str) -> views.ServiceHealth:
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

