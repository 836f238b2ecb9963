"""Recovery end to end (the four services as processes): Redis restarted with AOF in the middle of a run
loses nothing; Redis flushed, the services re-create their groups and keep serving; a replica killed with
SIGKILL in the middle of a handler has its in-flight entries taken over by the other replica (XAUTOCLAIM).

The Redis restart and flush happen on a private redis-server started here, never on the shared one."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from tests.chaos import run as chaos
from tests.redis_servers import free_port, wait_ping

pytestmark = pytest.mark.e2e


@dataclass
class PrivateRedis:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)

    def start(self) -> None:
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.dir), "--save", ""],
            stdout=log, stderr=log, start_new_session=True,
        )
        wait_ping(self.port, timeout=10, log=self.dir / "redis.log")

    def shutdown(self) -> None:
        """SHUTDOWN (the AOF is flushed to disk), then wait for the process to exit."""
        try:
            self.client().shutdown()
        except redis.ConnectionError:
            pass
        assert self.proc is not None
        self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on PATH")
    data = tmp_path / "redis-data"
    data.mkdir()
    server = PrivateRedis(port=free_port(), dir=data)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def _redis_seen_down(stack) -> bool:  # type: ignore[no-untyped-def]
    """Every service's readiness check finds Redis unreachable."""
    async with httpx.AsyncClient(timeout=10) as http:
        for url in stack.urls.values():
            try:
                r = await http.get(f"{url}/health/ready")
            except httpx.HTTPError:
                return False
            if r.json().get("checks", {}).get("redis") is not False:
                return False
    return True


async def _all_ready(stack) -> bool:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(timeout=2) as http:
        for url in stack.urls.values():
            try:
                if (await http.get(f"{url}/health/ready")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


async def test_redis_restarted_with_aof_in_the_middle_of_a_run_loses_nothing(safe_stack_factory, private_redis):
    stack = safe_stack_factory(redis_url=private_redis.url)
    run_id = uuid.uuid4().hex[:8]
    report = chaos.Report()
    async with stack.client() as client:
        submitted = await chaos.submit_batch(client, 15, run_id=run_id)
        private_redis.shutdown()  # while those cases are on their way through the streams
        down = await chaos.submit_batch(client, 5, run_id=run_id, start=15)  # intake keeps working: the outbox holds
        await wait_for(lambda: _redis_seen_down(stack), timeout=60, message="every service seeing Redis down")
        private_redis.start()
        more = await chaos.submit_batch(client, 10, run_id=run_id, start=20)
        every = submitted + down + more
        finals = await chaos.wait_all_final(client, every, time.monotonic() + 120)
        await chaos.check(stack, client, every, finals, report)
    assert len(finals) == 30, report.text()
    assert report.ok, report.text()


async def test_after_a_redis_flush_the_services_recreate_their_groups_and_new_cases_complete(
    safe_stack_factory, private_redis
):
    stack = safe_stack_factory(redis_url=private_redis.url)
    run_id = uuid.uuid4().hex[:8]
    report = chaos.Report()
    async with stack.client() as client:
        before = await chaos.submit_batch(client, 5, run_id=run_id)
        assert len(await chaos.wait_all_final(client, before, time.monotonic() + 60)) == 5
        private_redis.client().flushall()
        r = private_redis.client()
        group_of = {streams.PROCUREMENT_SUBMITTED: "origin_verification", streams.LOAN_REQUESTED: "loan_disbursement",
                    streams.ORIGIN_VERIFICATION_COMPLETED: "applications"}

        async def groups_back() -> bool:
            for stream, group in group_of.items():
                try:
                    names = {g["name"].decode() for g in r.xinfo_groups(stack.stream(stream))}
                except redis.ResponseError:
                    return False
                if group not in names:
                    return False
            return await _all_ready(stack)

        await wait_for(groups_back, timeout=30, interval=0.2, message="groups re-created and every service ready")
        after = await chaos.submit_batch(client, 10, run_id=run_id, start=5)
        every = before + after
        finals = await chaos.wait_all_final(client, every, time.monotonic() + 90)
        await chaos.check(stack, client, every, finals, report)
    assert len(finals) == 15, report.text()
    assert report.ok, report.text()
    for c in stack.children():  # recovered in place, not by dying and being restarted
        assert c["restarts"] == 0, c


async def test_a_replica_killed_in_the_middle_of_a_handler_has_its_entries_taken_over_by_the_other(
    safe_stack_factory,
):
    stack = safe_stack_factory(replicas={"loan_disbursement": 2},
                               extra_env={"LOAN_DISBURSEMENT_CLAIM_IDLE_MS": "1000"})
    first = stack.pid("loan_disbursement", 1)
    os.kill(first, signal.SIGSTOP)  # only replica 2 reads for now
    db = sqlite3.connect(stack.var_dir / "loan_disbursement.db", isolation_level=None, timeout=30)
    key = stack.stream(streams.LOAN_REQUESTED)
    r = redis.Redis.from_url(stack.redis_url)
    try:
        db.execute("BEGIN IMMEDIATE")  # replica 2's handler transaction now waits for the database: in flight
        async with stack.client() as client:
            [case] = await chaos.submit_batch(client, 1, run_id=uuid.uuid4().hex[:8])  # eligible, financed by PL

            async def held_by_replica_2() -> bool:
                return any(c["name"] == b"loan_disbursement-2" and c["pending"] == 1
                           for c in r.xinfo_consumers(key, "loan_disbursement"))

            await wait_for(held_by_replica_2, timeout=30, interval=0.1, message="the request in flight in replica 2")
            # hold the launcher so that replica 2 stays dead: its restart would finish its own pending entry
            os.kill(stack.proc.pid, signal.SIGSTOP)
            stack.kill("loan_disbursement", 2, signal.SIGKILL)
            db.execute("ROLLBACK")
            os.kill(first, signal.SIGCONT)
            done = await client.wait_for_status(case.case_id, timeout=60)
            assert done["status"] == "loan_approved", done
            loans = (await client.http.get(client.url("loan_disbursement", "/loans"),
                                           params={"case_id": case.case_id})).json()["items"]
            assert len(loans) == 1
            assert (await client.http.get(client.url("loan_disbursement", "/ledger/check"))).json()["ok"] is True
        # XAUTOCLAIM moved the entry away from a consumer that could not finish it. Usually replica 1 takes it
        # from the killed replica 2; a stopped process's blocked XREADGROUP can also have received it first,
        # and then replica 2 took it from replica 1 before being killed. Either way a takeover happened.
        logs = [(stack.var_dir / "logs" / f"loan_disbursement-{i}.log").read_text(errors="replace") for i in (1, 2)]
        assert any("reclaimed idle entries" in log for log in logs)
        assert r.xpending(key, "loan_disbursement")["pending"] == 0
    finally:
        os.kill(stack.proc.pid, signal.SIGCONT)
        try:
            os.kill(first, signal.SIGCONT)
        except ProcessLookupError:
            pass
        db.close()
        r.close()


async def test_sigterm_lets_a_service_stop_cleanly_and_its_work_continues_after_restart(safe_stack_factory):
    stack = safe_stack_factory()
    async with stack.client() as client:
        submitted = await chaos.submit_batch(client, 5, run_id=uuid.uuid4().hex[:8])
        old = stack.kill("origin_verification", sig=signal.SIGTERM)
        more = await chaos.submit_batch(client, 5, run_id=uuid.uuid4().hex[:8], start=5)
        await asyncio.to_thread(stack.wait_restarted, "origin_verification", old)
        every = submitted + more
        finals = await chaos.wait_all_final(client, every, time.monotonic() + 60)
        report = chaos.Report()
        await chaos.check(stack, client, every, finals, report)
    assert report.ok, report.text()
    log = (stack.var_dir / "logs" / "origin_verification-1.log").read_text(errors="replace")
    assert "service stopping" in log
