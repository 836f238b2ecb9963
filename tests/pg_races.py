"""Helpers of the write-race tests: two real transactions on PostgreSQL, the second started while the first is
held open, and a condition to await instead of a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from safe_procurement.shared.kit import db
from tests import dbs


@asynccontextmanager
async def migrated_factory(tmp_path: Path, name: str, service_main: str) -> AsyncIterator[Any]:
    """A session factory on a fresh database with the tables of the service whose `main.py` is `service_main`."""
    url = dbs.url(tmp_path, name)
    await db.migrate(url, db.migrations_dir(service_main))
    engine = db.make_engine(url)
    try:
        yield db.session_factory(engine)
    finally:
        await engine.dispose()


async def blocked_or_done(factory: Any, task: asyncio.Task[Any]) -> bool:
    """True once `task` has finished or some transaction of this database waits on a lock (the one it runs)."""
    if task.done():
        return True
    async with factory() as s:
        n = (await s.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ))).scalar_one()
    return bool(n)
