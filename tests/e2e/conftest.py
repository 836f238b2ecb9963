"""The end-to-end flow runs twice: on SQLite files and on PostgreSQL databases (when PostgreSQL answers)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from services.launcher import SERVICES
from services.testing.plugin import Stack, make_stack


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def safe_stack(request, tmp_path_factory) -> Iterator[Stack]:
    if request.param == "sqlite":
        stack = make_stack(tmp_path_factory.mktemp("stack-sqlite")).start()
        try:
            yield stack
        finally:
            stack.stop()
        return
    admin = request.getfixturevalue("pg_admin_url")  # skips (or fails under SAFE_REQUIRE_PG=1) without PostgreSQL
    names = {svc: f"safe_e2e_{svc}_{uuid.uuid4().hex[:8]}" for svc in SERVICES}

    async def run(statements: list[str]) -> None:
        conn = await asyncpg.connect(admin)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run([f'CREATE DATABASE "{n}"' for n in names.values()]))
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    stack = make_stack(tmp_path_factory.mktemp("stack-pg"),
                       database_urls={svc: f"{base}/{n}" for svc, n in names.items()}).start()
    try:
        yield stack
    finally:
        stack.stop()
        asyncio.run(run([f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names.values()]))
