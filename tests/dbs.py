"""Test databases: SQLite files by default; fresh PostgreSQL databases with SAFE_TEST_DB=postgres.

`make test` runs the database-backed layers a second time with SAFE_TEST_DB=postgres when PostgreSQL
answers, so every integration test runs on both (migrations applied from empty each time)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

PG_ADMIN_URL = os.environ.get("SAFE_TEST_PG_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
_created: dict[tuple[str, str], str] = {}


def on_postgres() -> bool:
    return os.environ.get("SAFE_TEST_DB") == "postgres"


def _admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
        return
    # called from inside a running loop (an async fixture or test): do it on a helper thread
    import threading

    error: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as e:  # pragma: no cover - re-raised below
            error.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if error:
        raise error[0]


def url(tmp_path: Path, name: str) -> str:
    """The database URL for database `name` of this test (the same name gives the same database)."""
    if not on_postgres():
        return f"sqlite+aiosqlite:///{tmp_path}/{name}.db"
    key = (str(tmp_path), name)
    if key not in _created:
        db = f"safe_t_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{db}"')
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        _created[key] = f"{base}/{db}"
    return _created[key]


def drop_all() -> None:
    for full in list(_created.values()):
        _admin(f'DROP DATABASE IF EXISTS "{full.rsplit("/", 1)[1]}" WITH (FORCE)')
    _created.clear()


@contextmanager
def pg_databases(services: Iterable[str], label: str = "e2e") -> Iterator[dict[str, str]]:
    """One fresh PostgreSQL database per service (name → URL), dropped afterwards."""
    names = {svc: f"safe_{label}_{svc}_{uuid.uuid4().hex[:8]}" for svc in services}
    for name in names.values():
        _admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield {svc: f"{base}/{name}" for svc, name in names.items()}
    finally:
        for name in names.values():
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
