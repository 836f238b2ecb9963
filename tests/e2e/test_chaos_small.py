"""The chaos run in small: 40 proposals while every service is killed with SIGKILL (tests/chaos/run.py is the big
one, `make chaos`; `make chaos CHAOS_ARGS=--pg` on PostgreSQL with two replicas of every service)."""

from __future__ import annotations

import pytest

from safe_procurement.services.launcher import SERVICES
from tests import dbs
from tests.chaos import run as chaos

pytestmark = pytest.mark.e2e


async def test_every_case_completes_once_while_each_service_is_killed_in_turn(safe_stack_factory):
    stack = safe_stack_factory()
    report = await chaos.run(stack, cases=40, rate=10, kill_interval=1.0, kills_per_service=1, timeout=150,
                             say=lambda _s: None)
    print(report.text())
    assert report.kills_per_service == {s: 1 for s in chaos.KILL_ORDER}
    assert report.cases == 40
    assert report.ok, report.text()


@pytest.fixture
def pg_databases(pg_admin_url):
    with dbs.pg_databases(SERVICES, label="chaos") as urls:
        yield urls


async def test_on_postgresql_with_two_replicas_each_replica_killed_once_nothing_lost_or_doubled(
        pg_databases, safe_stack_factory):
    # pg_databases first: its databases are dropped after the stack has stopped
    stack = safe_stack_factory(replicas={s: 2 for s in SERVICES}, database_urls=pg_databases)
    killed: list[str] = []
    report = await chaos.run(stack, cases=40, rate=10, kill_interval=1.0, kills_per_service=2, timeout=200,
                             say=killed.append)
    print(report.text())
    # two rounds: replica 1 of every service, then replica 2
    assert report.kills_per_service == {s: 2 for s in chaos.KILL_ORDER}
    assert {line.split()[1] for line in killed} == {f"{s}#{r}" for s in SERVICES for r in (1, 2)}
    assert report.cases == 40
    assert report.ok, report.text()
