"""Run a service app in this process (lifespan included) and talk to it over an ASGI httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from safe_procurement.shared.kit.app import Runtime

OPERATOR = {"Authorization": "Bearer dev-operator"}


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """Start the app's lifespan (migrations, broker, consumers, relay) and yield a client and its runtime."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=OPERATOR) as client:
            yield client, app.state.runtime
