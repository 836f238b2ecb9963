"""The end-to-end flow runs twice: on SQLite files and on PostgreSQL databases (when PostgreSQL answers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from safe_procurement.services.launcher import SERVICES
from safe_procurement.services.testing.plugin import Stack, make_stack
from tests import dbs


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def safe_stack(request, tmp_path_factory) -> Iterator[Stack]:
    if request.param == "sqlite":
        stack = make_stack(tmp_path_factory.mktemp("stack-sqlite")).start()
        try:
            yield stack
        finally:
            stack.stop()
        return
    request.getfixturevalue("pg_admin_url")  # skips (or fails under SAFE_REQUIRE_PG=1) without PostgreSQL
    with dbs.pg_databases(SERVICES) as urls:
        stack = make_stack(tmp_path_factory.mktemp("stack-pg"), database_urls=urls).start()
        try:
            yield stack
        finally:
            stack.stop()
