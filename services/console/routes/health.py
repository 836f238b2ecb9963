"""The console's own health: alive, and ready with its count of open sessions."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from safe_procurement.services.console.web import Console


def router(c: Console) -> APIRouter:
    r = APIRouter()

    @r.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive", "service": "console"}

    @r.get("/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready", "service": "console", "sessions": len(c.sessions)})

    return r
