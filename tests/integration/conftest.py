"""Fixtures of the integration layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from safe_procurement.services.applications import main as applications_main
from safe_procurement.shared.kit import db
from tests import dbs


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A service's database, once on SQLite and once on PostgreSQL (skipped, or failed under
    SAFE_REQUIRE_PG=1, when PostgreSQL does not answer) in the same pass."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/service.db"
    return request.getfixturevalue("pg_url")  # type: ignore[no-any-return]


@pytest.fixture
async def kit_engine(tmp_path) -> AsyncIterator[Any]:
    """An engine on a fresh database (SQLite, or PostgreSQL in the PostgreSQL pass) with a service's tables, which
    include the kit's (outbox, inbox, dead letters…)."""
    url = dbs.url(tmp_path, "kit")
    await db.migrate(url, db.migrations_dir(applications_main.__file__))
    engine = db.make_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
def kit_factory(kit_engine) -> Any:
    """A session factory of `kit_engine`."""
    return db.session_factory(kit_engine)
