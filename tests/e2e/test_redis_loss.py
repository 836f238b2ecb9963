"""Redis loses acknowledged writes — FLUSHALL, a restart without persistence — while cases wait in a stream for a
paused service: every case still reaches its final status without an operator, because each service's Redis guard
(safe_procurement.shared.kit.recovery) notices the loss and re-publishes from its outbox what its consumers had not handled.

The four services run as processes on a redis-server this test starts on a private port (no AOF, no RDB); the
flush and the restart happen there, never on the shared Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from tests.chaos import run as chaos
from tests.redis_servers import Servers, started_servers

pytestmark = pytest.mark.e2e


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    with started_servers(tmp_path / "redis") as s:
        yield s


async def _explain(client, case_id: str) -> dict:  # type: ignore[no-untyped-def]
    r = await client.http.get(client.url("applications", f"/procurements/{case_id}/explain"))
    r.raise_for_status()
    return r.json()


async def _lose_writes_while_paused(stack, server, client, *, paused: str, stream: str, status: str,  # type: ignore[no-untyped-def]
                                    lose, n: int = 15) -> tuple[float, dict]:
    """Stop `paused`, submit `n` cases, wait until every case that gets that far waits in `status` with its
    message on `stream`, `lose` the writes, restart it; returns (seconds from the loss to every case final, the
    /explain of a waiting case once the loss was repaired)."""
    run_id = uuid.uuid4().hex[:8]
    r = server.client()
    key = stack.stream(stream)
    # "paused": the launcher held, the service killed — so no blocked read of the stopped process receives the
    # entries into its socket buffer, to handle them once resumed whatever Redis lost meanwhile
    os.kill(stack.proc.pid, signal.SIGSTOP)
    replicas = range(1, stack.replicas.get(paused, 1) + 1)
    old = {i: stack.kill(paused, i, signal.SIGKILL) for i in replicas}
    try:
        submitted = await chaos.submit_batch(client, n, run_id=run_id)
        waiting = submitted if status == "verifying" else [
            s for s in submitted if s.expected in ("loan_approved", "loan_rejected")]

        async def all_waiting_on_the_stream() -> bool:
            cases = [await client.case(s.case_id) for s in waiting]
            return all(c["status"] == status for c in cases) and r.xlen(key) >= len(waiting)

        await wait_for(all_waiting_on_the_stream, timeout=60, interval=0.2,
                       message=f"{len(waiting)} cases in {status}, their messages on {key}")
        # the paused service's group has them all undelivered: lost with the stream, nobody would ever re-send
        [group] = [g for g in r.xinfo_groups(key) if g["name"] == paused.encode()]
        assert group["lag"] == len(waiting) and group["pending"] == 0, group
        lost_at = time.monotonic()
        lose()
        probe = waiting[0].case_id

        async def republished() -> dict | None:
            explained = await _explain(client, probe)
            rec = explained.get("redis_recovery") or {}
            return explained if "re-published" in (rec.get("note") or "") else None

        # repaired while the consumer is still paused: its messages are back on the stream
        explained = await wait_for(republished, timeout=30, interval=0.2, message="the outbox re-published")
        await wait_for(lambda: _async(r.xlen(key) >= len(waiting)), timeout=10, message="the messages back")
    finally:
        os.kill(stack.proc.pid, signal.SIGCONT)
    for i in replicas:
        await asyncio.to_thread(stack.wait_restarted, paused, old[i], i)
    finals = await chaos.wait_all_final(client, submitted, time.monotonic() + 90)
    recovery = time.monotonic() - lost_at
    report = chaos.Report(cases=len(submitted))
    await chaos.check(stack, client, submitted, finals, report)
    assert len(finals) == len(submitted), report.text()
    assert report.ok, report.text()
    return recovery, explained


async def _async(value: bool) -> bool:
    return value


async def test_after_flushall_cases_waiting_for_origin_verification_reach_their_final_status(
    safe_stack_factory, servers
):
    server = servers.start("flush")
    stack = safe_stack_factory(redis_url=server.url)
    async with stack.client() as client:
        seconds, explained = await _lose_writes_while_paused(
            stack, server, client, paused="origin_verification", stream=streams.PROCUREMENT_SUBMITTED,
            status="verifying", lose=lambda: server.client().flushall())
    rec = explained["redis_recovery"]
    assert rec["resets_detected"] >= 1 and "flushed" in rec["last_reason"], rec
    print(f"\nFLUSHALL with origin verification paused: every case final {seconds:.1f} s after the flush "
          f"(outbox re-published {rec['last_republished']} events in {rec['last_recovery_ms']} ms)")


async def test_after_a_restart_without_persistence_cases_waiting_for_a_loan_decision_reach_their_final_status(
    safe_stack_factory, servers
):
    server = servers.start("restart")
    stack = safe_stack_factory(redis_url=server.url)

    def restart_empty() -> None:
        server.kill()
        server.start()  # same port, no AOF/RDB: empty

    async with stack.client() as client:
        seconds, explained = await _lose_writes_while_paused(
            stack, server, client, paused="loan_disbursement", stream=streams.LOAN_REQUESTED,
            status="loan_requested", lose=restart_empty)
    rec = explained["redis_recovery"]
    assert rec["resets_detected"] >= 1 and "restarted" in rec["last_reason"], rec
    print(f"\nrestart without persistence with loan disbursement paused: every case final {seconds:.1f} s after "
          f"the restart (outbox re-published {rec['last_republished']} events in {rec['last_recovery_ms']} ms)")
