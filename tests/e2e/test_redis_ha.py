"""The four services on a real Redis Cluster and on a real Sentinel group, each losing its primary mid-run.

Each test starts its own Redis topology on free loopback ports (tests/redis_servers.py, no persistence) and the
services as processes with `REDIS_MODE=cluster` / `REDIS_MODE=sentinel`. Mid-run — cases waiting in a stream for
origin verification (paused), more arriving — the primary serving that stream is killed with SIGKILL, and its
replica is promoted (by the cluster, or by the sentinels). Whatever the failover dropped of the last acknowledged
writes, the Redis guard of each service (safe_procurement.shared.kit.recovery) re-publishes from its outbox. Then every case must
reach its expected final status, none doubled (events per case, loans per case), the ledger reconciled (over HTTP
and with `safe ledger check` on the loan database), no open dead letter. The seconds from the kill to the
promotion, to the re-publication and to every case final are printed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.crc import key_slot

from safe_procurement.services.testing.plugin import Stack, StackError, make_stack
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from tests.chaos import run as chaos
from tests.redis_servers import Cluster, SentinelGroup, Server, Servers, started_servers

pytestmark = pytest.mark.e2e

PAUSED = "origin_verification"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    with started_servers(tmp_path / "redis") as s:
        yield s


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start a stack whose services see `env_url` in `mode`; the test's own probes use `probe_url` (one node)."""
    started: list[Stack] = []

    def start(*, mode: str, env_url: str, probe_url: str, prefix: str | None = None) -> Stack:
        env = {"REDIS_MODE": mode, "REDIS_URL": env_url, **({"SAFE_STREAM_PREFIX": prefix} if prefix else {})}
        stack = make_stack(tmp_path / f"stack{len(started)}", redis_url=probe_url, extra_env=env, console=False)
        stack.redis_url = probe_url  # preflight's PING and the final key clean-up: one node, plain client
        started.append(stack)
        try:
            return stack.start(timeout=120)
        except StackError as e:
            pytest.fail(f"stack on REDIS_MODE={mode}: {e}", pytrace=False)

    yield start
    for s in started:
        s.stop()


@dataclass
class Failover:
    """How the test kills the primary and learns that the topology recovered; `stream_len` reads a stream."""

    kill: Callable[[], None]
    wait_promoted: Callable[[], None]
    stream_len: Callable[[str], int]
    groups: Callable[[str], list[dict[str, object]]]


def _groups_text(stack: Stack, failover: Failover) -> str:
    """Each flow stream's length and consumer groups (lag, pending, last delivered): whether what is missing was
    never delivered, or delivered and not handled."""
    lines = []
    for name in (*FLOW, streams.LOAN_APPROVED, streams.LOAN_REJECTED):
        key = stack.stream(name)
        try:
            groups = [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.items()
                       if k in ("name", "lag", "pending", "last-delivered-id", "entries-read")}
                      for g in failover.groups(key)]
            lines.append(f"  {name}: length {failover.stream_len(key)}, groups {groups}")
        except Exception as e:  # a diagnostic only
            lines.append(f"  {name}: {type(e).__name__}: {e}")
    return "\n".join(lines)


def _service_pids(stack: Stack, service: str) -> list[int]:
    return [int(c["pid"]) for c in stack.children() if c["service"] == service]


def _guard_noticed(stack: Stack) -> list[str]:
    """The services whose log says their Redis guard re-published from the outbox after a loss."""
    logs = stack.var_dir / "logs"
    return sorted(p.stem for p in logs.glob("*.log")
                  if "re-published from the outbox after a Redis loss" in p.read_text(errors="replace"))


async def _through_a_failover(stack: Stack, failover: Failover, *, label: str) -> None:
    run_id = uuid.uuid4().hex[:8]
    async with stack.client() as client:
        # the flow works in this mode before anything fails
        warm = await chaos.submit_batch(client, 10, run_id=run_id)
        finals = await chaos.wait_all_final(client, warm, time.monotonic() + 90)
        assert len(finals) == len(warm), f"{len(warm) - len(finals)} of {len(warm)} cases not final before the kill"

        # mid-run: origin verification paused, cases waiting on its stream in Redis
        paused = _service_pids(stack, PAUSED)
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        try:
            waiting = await chaos.submit_batch(client, 30, run_id=run_id, start=100)
            key = stack.stream(streams.PROCUREMENT_SUBMITTED)

            async def all_waiting() -> bool:
                cases = [await client.case(s.case_id) for s in waiting]
                return all(c["status"] == "verifying" for c in cases) and failover.stream_len(key) >= \
                    len(warm) + len(waiting)

            await wait_for(all_waiting, timeout=60, interval=0.2,
                           message=f"{len(waiting)} cases verifying, their messages on {key}")

            killed_at = time.monotonic()
            failover.kill()
            # more cases arrive during the failover (the client retries while applications answers 5xx)
            arriving = asyncio.create_task(chaos.submit_batch(client, 30, run_id=run_id, start=200, timeout=120))
            await asyncio.to_thread(failover.wait_promoted)
            promoted_s = time.monotonic() - killed_at

            async def republished() -> bool:
                explained = await client.http.get(
                    client.url("applications", f"/procurements/{waiting[0].case_id}/explain"))
                rec = (explained.json().get("redis_recovery") or {}) if explained.status_code == 200 else {}
                return "re-published" in (rec.get("note") or "")

            # applications saw the failover and published its events again while their consumer is still paused
            await wait_for(republished, timeout=60, interval=0.2, message="applications re-published its outbox")
            republished_s = time.monotonic() - killed_at
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
        later = await arriving
        submitted = warm + waiting + later
        finals = await chaos.wait_all_final(client, submitted, time.monotonic() + 180)
        recovered_s = time.monotonic() - killed_at
        report = chaos.Report(cases=len(submitted))
        await chaos.check(stack, client, submitted, finals, report)
    if len(finals) < len(submitted) or not report.ok:
        pytest.fail(f"{report.text()}\nstreams now:\n{await asyncio.to_thread(_groups_text, stack, failover)}\n"
                    f"(state and service logs in {stack.var_dir})", pytrace=False)

    ledger = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "safe_procurement.services.cli", "ledger", "check", "--database-url",
         f"sqlite+aiosqlite:///{stack.var_dir.resolve()}/loan_disbursement.db"],
        capture_output=True, text=True, timeout=120, env={**stack.env, "REDIS_MODE": "single"})
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr

    noticed = await wait_for(lambda: _async(_guard_noticed(stack) or None), timeout=30,
                             message="a service's guard logged its re-publication")
    print(f"\n{label}: {len(submitted)} cases ({len(waiting)} waiting in Redis at the kill, {len(later)} submitted "
          f"during the failover) — replica promoted {promoted_s:.1f} s after the SIGKILL, outbox re-publication under "
          f"way by {republished_s:.1f} s (guards: {', '.join(noticed)}), every case final {recovered_s:.1f} s after "
          f"the kill; {dict(sorted(report.statuses.items()))}; ledger check: "
          f"{ledger.stdout.strip().splitlines()[-1] if ledger.stdout.strip() else 'ok'}")


async def _async(value: object) -> object:
    return value


# the streams a case goes through that a service reads mid-flow: all served by the primary that is killed (so every
# consumer's blocked read there dies with it), each in a slot of its own. (A key's slot is a function of the 16-bit
# CRC state after the prefix, so not every set of streams can be placed on one primary; these three can.)
FLOW = (streams.PROCUREMENT_SUBMITTED, streams.ORIGIN_VERIFICATION_COMPLETED, streams.LOAN_REQUESTED)


def _prefix_on(ranges: list[tuple[int, int]]) -> str:
    """A stream prefix that puts every stream of FLOW in a different slot, all within `ranges`."""
    for _ in range(100_000):
        prefix = f"e2e{uuid.uuid4().hex[:8]}:"
        slots = {key_slot(streams.qualified(s, prefix).encode()) for s in FLOW}
        if len(slots) == len(FLOW) and all(any(a <= slot <= b for a, b in ranges) for slot in slots):
            return prefix
    raise AssertionError(f"no prefix puts the flow's streams in {ranges}")


async def test_a_redis_cluster_losing_a_primary_mid_run_loses_and_doubles_nothing(servers, stacks):
    cluster = Cluster(servers, masters=3, replicas=1)
    victim = cluster.primary_of("any")
    prefix = _prefix_on(cluster.slots_of(victim))
    stack = stacks(mode="cluster", env_url=cluster.url, probe_url=cluster.nodes[0].url, prefix=prefix)
    assert {cluster.primary_of(stack.stream(s)).port for s in FLOW} == {victim.port}
    replica = cluster.replica_of(victim)

    def stream_len(key: str) -> int:
        node = cluster.primary_of(key)
        c = node.client()
        try:
            return int(c.xlen(key))
        finally:
            c.close()

    def groups(key: str) -> list[dict[str, object]]:
        c = cluster.primary_of(key).client()
        try:
            return list(c.xinfo_groups(key))
        finally:
            c.close()

    def wait_promoted() -> None:
        cluster.wait_healthy(primaries=3, replicas=2)
        assert cluster.role(replica) == "master"

    await _through_a_failover(stack, Failover(kill=victim.kill, wait_promoted=wait_promoted, stream_len=stream_len,
                                                       groups=groups),
                              label=f"Redis Cluster 3+3, primary :{victim.port} killed, replica :{replica.port}")


async def test_a_sentinel_failover_mid_run_loses_and_doubles_nothing(servers, stacks):
    group = SentinelGroup(servers)
    stack = stacks(mode="sentinel", env_url=group.url, probe_url=group.primary.url)

    def primary() -> Server:
        return group.primary if group.current_primary_port() == group.primary.port else group.replica

    def stream_len(key: str) -> int:
        r = primary().client()
        try:
            return int(r.xlen(key))
        finally:
            r.close()

    def groups(key: str) -> list[dict[str, object]]:
        r = primary().client()
        try:
            return list(r.xinfo_groups(key))
        finally:
            r.close()

    await _through_a_failover(
        stack, Failover(kill=group.primary.kill, wait_promoted=group.wait_promoted, stream_len=stream_len,
                          groups=groups),
        label=f"Sentinel (3 sentinels), primary :{group.primary.port} killed, replica :{group.replica.port}")
