"""The console's web app: sign-in, cases, a case, dead letters, facilities, partner registry, system.

Every page is rendered from the four services' public APIs, called with the signed-in user's token, so the
services' own role and Member State checks apply; the console adds its own refusals on top (a reader's POST,
a form without the session's CSRF token, another Member State's facility). `web.py` holds what every page
shares; `routes/` holds one router per area."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from safe_procurement.services.console.config import ConsoleSettings
from safe_procurement.services.console.routes import (
    cases,
    dead_letters,
    facilities,
    health,
    registry,
    signin,
    system,
)
from safe_procurement.services.console.upstream import Upstream
from safe_procurement.services.console.web import HERE, Console, error_pages, security_headers

AREAS = (health, signin, cases, dead_letters, facilities, registry, system)


def build_app(settings: ConsoleSettings | None = None, upstream: Upstream | None = None) -> FastAPI:
    console = Console(settings or ConsoleSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with console.serving(upstream):
            yield

    app = FastAPI(title="SAFE operator console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
                  exception_handlers=error_pages(console))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.middleware("http")(security_headers)
    for area in AREAS:
        app.include_router(area.router(console))
    return app
