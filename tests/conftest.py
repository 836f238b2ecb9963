"""Fixtures shared by every test layer: a real Redis, isolated stream prefixes, fresh databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from tests import dbs

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
PG_ADMIN_URL = dbs.PG_ADMIN_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis (`make test` starts one when none answers)."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as e:  # pragma: no cover - environment problem, said loudly
        pytest.fail(f"no Redis at {REDIS_URL}: {e}. `make test` starts one; or set REDIS_URL.")
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    """A stream-name prefix unique to the test, so tests sharing one Redis never see each other's entries."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def redis_client(redis_url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """The test's database: a SQLite file, or a fresh PostgreSQL database under SAFE_TEST_DB=postgres."""
    return dbs.url(tmp_path, "db")


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    if dbs.on_postgres():
        dbs.drop_all()


def _pg_available() -> bool:
    import asyncio

    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
            await conn.close()
            return True
        except Exception:
            return False

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    if not _pg_available():
        if os.environ.get("SAFE_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {PG_ADMIN_URL}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    with dbs.pg_databases(["db"], label="test") as urls:
        yield urls["db"]
