"""`python -m tests.chaos.run`: submit proposals at a steady rate while every service in turn is killed
with SIGKILL (the launcher restarts it), wait until every case is final, then check that nothing was lost
and nothing doubled. Prints the figures; exits 1 on any violation.

    python -m tests.chaos.run --cases 300 --rate 20 --kill-interval 4
    python -m tests.chaos.run --pg                  # PostgreSQL, two replicas of every service

With replicas, each round kills the next replica of each service (replica 1 in the first round, 2 in the
second, …) while the others keep working, and submissions go to the applications replicas in turn (a refused
or failed post is retried on the next one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from safe_procurement.services.client import PlatformClient, is_final
from safe_procurement.services.launcher import SERVICES
from safe_procurement.services.testing.plugin import Stack, make_stack
from tests import builders, dbs

KILL_ORDER = ("applications", "origin_verification", "loan_disbursement", "partner_registry")


def proposal(kind: str, run_id: str, i: int) -> tuple[dict[str, Any], str]:
    """A unique proposal of one kind and the final status it must reach."""
    body = builders.proposal(f"CHAOS-{run_id}-{i:05d}", title=f"chaos {kind} {i}")
    if kind == "approved_lt":  # eligible, financed by Lithuania
        body.update(lead_member_state="LT", participants=["LT", "PL"],
                    financing=[{"member_state": "LT", "amount_eur": "125000.50"}])
        return body, "loan_approved"
    if kind == "approved":  # the demo: eligible, financed by Poland
        return body, "loan_approved"
    if kind == "ineligible":  # 79 % of the component cost from the US: over the 35 % cap
        body["end_products"][0]["components"][0]["origin_country"] = "US"
        return body, "origin_rejected"
    if kind == "no_financing":
        del body["financing"]
        return body, "origin_verified"
    if kind == "germany":  # Germany has no SAFE facility: L-1
        body.update(lead_member_state="DE", participants=["DE", "FR"],
                    financing=[{"member_state": "DE", "amount_eur": "1000000.00"}])
        return body, "loan_rejected"
    raise ValueError(kind)


KINDS = ("approved", "ineligible", "germany", "approved_lt", "no_financing")


@dataclass
class Submitted:
    reference: str
    kind: str
    expected: str
    case_id: str
    accepted_at: float
    attempts: int


@dataclass
class Report:
    cases: int = 0
    kills: int = 0
    restarts: int = 0
    submit_seconds: float = 0.0
    drain_seconds: float = 0.0
    max_time_to_final_s: float = 0.0
    submit_retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kills_per_service: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def text(self) -> str:
        lines = [
            f"cases                 {self.cases}",
            f"statuses              {dict(sorted(self.statuses.items()))}",
            f"kills (SIGKILL)       {self.kills} {dict(sorted(self.kills_per_service.items()))}",
            f"restarts (launcher)   {self.restarts}",
            f"submit retries        {self.submit_retries}",
            f"seconds submitting    {self.submit_seconds:.1f}",
            f"seconds to drain      {self.drain_seconds:.1f}",
            f"max time-to-final     {self.max_time_to_final_s:.1f} s",
            f"violations            {len(self.violations)}",
        ]
        lines += [f"  ✗ {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  … {len(self.violations) - 50} more")
        lines.append("RESULT: " + ("OK — nothing lost, nothing doubled" if self.ok else "FAILED"))
        return "\n".join(lines)


class Intake:
    """The applications replicas' intake URLs, used in turn: each attempt goes to the next one."""

    def __init__(self, clients: list[PlatformClient]) -> None:
        self.clients = clients
        self._n = 0

    async def submit(self, body: dict[str, Any]) -> httpx.Response:
        self._n += 1
        return await self.clients[self._n % len(self.clients)].submit(body)


def intake_clients(stack: Stack) -> list[PlatformClient]:
    """One client per applications replica (each listens 100 ports above the previous one)."""
    base = SERVICES["applications"] + stack.port_offset
    return [PlatformClient({**stack.urls, "applications": f"http://127.0.0.1:{base + 100 * r}"})
            for r in range(stack.replicas.get("applications", 1))]


async def submit(client: PlatformClient | Intake, body: dict[str, Any], deadline: float) -> tuple[str, int]:
    """Post until accepted: while applications is down the client retries; the reference keeps it idempotent."""
    attempts = 0
    while True:
        attempts += 1
        try:
            r = await client.submit(body)
            if r.status_code in (200, 201):
                return r.json()["id"], attempts
            if r.status_code not in (500, 502, 503):
                raise RuntimeError(f"submit {body['reference']} answered {r.status_code}: {r.text[:300]}")
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"submit {body['reference']} not accepted after {attempts} attempts")
        await asyncio.sleep(0.2)


async def submit_batch(client: PlatformClient, n: int, *, run_id: str, start: int = 0,
                       timeout: float = 60.0) -> list[Submitted]:
    """Submit `n` proposals of the mixed kinds (retrying while applications is unreachable)."""
    deadline = time.monotonic() + timeout

    async def one(i: int) -> Submitted:
        kind = KINDS[i % len(KINDS)]
        body, expected = proposal(kind, run_id, i)
        case_id, attempts = await submit(client, body, deadline)
        return Submitted(body["reference"], kind, expected, case_id, time.monotonic(), attempts)

    return list(await asyncio.gather(*(one(i) for i in range(start, start + n))))


async def _killer(stack: Stack, stop: asyncio.Event, interval: float, kills_per_service: int,
                  report: Report, say: Any) -> None:
    """Kill each service in turn (the next replica of it each round); the next kill only once the launcher has
    the previous one back."""
    rounds = 0
    while True:
        for service in KILL_ORDER:
            replica = rounds % stack.replicas.get(service, 1) + 1
            if stop.is_set() and rounds >= kills_per_service:
                return
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
            old = stack.kill(service, replica, sig=signal.SIGKILL)
            report.kills += 1
            report.kills_per_service[service] += 1
            t0 = time.monotonic()
            await asyncio.to_thread(stack.wait_restarted, service, old, replica, 90.0)
            say(f"  killed {service}#{replica} (pid {old}); back in {time.monotonic() - t0:.1f} s")
        rounds += 1


async def run(stack: Stack, *, cases: int, rate: float, kill_interval: float, kills_per_service: int = 1,
              timeout: float = 300.0, say: Any = print) -> Report:
    """Drive a started stack: load + kills, wait for every case to be final, check the invariants."""
    report = Report()
    run_id = uuid.uuid4().hex[:8]
    plan = [(i, KINDS[i % len(KINDS)]) for i in range(cases)]
    submitted: list[Submitted] = []
    deadline = time.monotonic() + timeout
    stop_killing = asyncio.Event()
    intake = Intake(intake_clients(stack))
    async with stack.client() as client:
        killer = asyncio.create_task(_killer(stack, stop_killing, kill_interval, kills_per_service, report, say))
        t_start = time.monotonic()
        sem = asyncio.Semaphore(16)

        async def one(i: int, kind: str) -> None:
            body, expected = proposal(kind, run_id, i)
            async with sem:
                case_id, attempts = await submit(intake, body, deadline)
            submitted.append(Submitted(body["reference"], kind, expected, case_id, time.monotonic(), attempts))

        tasks = []
        for i, kind in plan:
            tasks.append(asyncio.create_task(one(i, kind)))
            await asyncio.sleep(1 / rate)
            if killer.done():
                break
        await asyncio.gather(*tasks)
        report.submit_seconds = time.monotonic() - t_start
        t_drain = time.monotonic()
        stop_killing.set()
        await killer  # the last killed service is back (and every service was killed at least once)
        report.cases = len(submitted)
        report.submit_retries = sum(s.attempts - 1 for s in submitted)

        finals = await wait_all_final(client, submitted, deadline)
        report.drain_seconds = time.monotonic() - t_drain
        await check(stack, client, submitted, finals, report)
    for c in intake.clients:
        await c.aclose()
    report.restarts = sum(int(c.get("restarts") or 0) for c in stack.children())
    return report


async def wait_all_final(client: PlatformClient, submitted: list[Submitted], deadline: float) -> dict[str, dict[str, Any]]:
    finals: dict[str, dict[str, Any]] = {}
    sem = asyncio.Semaphore(16)

    async def probe(s: Submitted) -> None:
        async with sem:
            try:
                case = await client.case(s.case_id)
            except httpx.HTTPError:
                return
            if is_final(case):
                finals[s.case_id] = case

    while time.monotonic() < deadline:
        todo = [s for s in submitted if s.case_id not in finals]
        if not todo:
            break
        await asyncio.gather(*(probe(s) for s in todo))
        if len(finals) < len(submitted):
            await asyncio.sleep(0.5)
    return finals


async def _get(client: PlatformClient, service: str, path: str, **params: Any) -> Any:
    r = await client.http.get(client.url(service, path), params=params)
    r.raise_for_status()
    return r.json()


async def check(stack: Stack, client: PlatformClient, submitted: list[Submitted],
                 finals: dict[str, dict[str, Any]], report: Report) -> None:
    v = report.violations
    approved_per_ms: dict[str, Decimal] = defaultdict(Decimal)
    refs = Counter(s.reference for s in submitted)
    v += [f"reference {r} became {n} cases" for r, n in refs.items() if n > 1]
    sem = asyncio.Semaphore(16)

    async def check_case(s: Submitted) -> None:
        case = finals.get(s.case_id)
        if case is None:
            try:
                now = await client.case(s.case_id)
                v.append(f"{s.reference} ({s.kind}) never reached a final status: {now['status']}")
            except httpx.HTTPError as e:
                v.append(f"{s.reference} ({s.kind}) could not be read: {e}")
            return
        report.statuses[case["status"]] += 1
        if case["status"] != s.expected:
            v.append(f"{s.reference} ({s.kind}) is {case['status']}, expected {s.expected}")
        created = datetime.fromisoformat(case["created_at"])
        updated = datetime.fromisoformat(case["updated_at"])
        report.max_time_to_final_s = max(report.max_time_to_final_s, (updated - created).total_seconds())
        async with sem:
            timeline = await client.timeline(s.case_id)
            types = Counter(t["type"] for t in timeline)
            requests = types["ProcurementSubmitted"] + types["ReverificationRequested"]
            if types["OriginVerificationCompleted"] != requests:
                v.append(f"{s.reference}: {types['OriginVerificationCompleted']} OriginVerificationCompleted "
                         f"for {requests} verification request(s)")
            decisions = types["LoanApproved"] + types["LoanRejected"]
            if decisions > 1:
                v.append(f"{s.reference}: {decisions} loan decisions")
            if types["LoanRequested"] > 1:
                v.append(f"{s.reference}: {types['LoanRequested']} loan requests")
            ids = [t["event_id"] for t in timeline if t.get("event_id")]
            if len(ids) != len(set(ids)):
                v.append(f"{s.reference}: an event appears twice in the timeline")
            if case["status"] == "loan_approved":
                loans = (await _get(client, "loan_disbursement", "/loans", case_id=s.case_id))["items"]
                if len(loans) != 1:
                    v.append(f"{s.reference}: {len(loans)} loans for an approved case, expected 1")
                for loan in loans:
                    approved_per_ms[loan["member_state"]] += Decimal(loan["amount_eur"])
                requested = case["proposal"]["financing"][0]
                if loans and Decimal(loans[0]["amount_eur"]) != Decimal(str(requested["amount_eur"])):
                    v.append(f"{s.reference}: loan of {loans[0]['amount_eur']}, requested {requested['amount_eur']}")
            elif case["status"] in ("loan_rejected", "origin_rejected", "origin_verified"):
                loans = (await _get(client, "loan_disbursement", "/loans", case_id=s.case_id))["items"]
                if loans:
                    v.append(f"{s.reference}: {case['status']} but {len(loans)} loan(s) exist")

    await asyncio.gather(*(check_case(s) for s in submitted))

    ledger = await _get(client, "loan_disbursement", "/ledger/check")
    if not ledger.get("ok"):
        v.append(f"ledger does not reconcile: {json.dumps(ledger.get('differences'))[:1000]}")
    for ms, total in sorted(approved_per_ms.items()):
        facility = await _get(client, "loan_disbursement", f"/facilities/{ms}")
        if Decimal(facility["approved_eur"]) != total:
            v.append(f"facility {ms}: approved_eur {facility['approved_eur']} ≠ Σ approved loans {total}")
    for service in SERVICES:
        open_letters = await client.dead_letters(service, status="open", limit=500)
        for dl in open_letters:
            v.append(f"open dead letter in {service}: {dl['stream']} {dl['entry_id']}: {dl['error'][:200]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", "-n", type=int, default=300, help="proposals to submit (default 300)")
    p.add_argument("--rate", type=float, default=20.0, help="submissions per second (default 20)")
    p.add_argument("--kill-interval", type=float, default=4.0,
                   help="seconds between one service being back and the next kill (default 4)")
    p.add_argument("--kills-per-service", type=int, default=None,
                   help="at least this many kills of each service (default: its replicas, so each replica is killed "
                        "once; more if the load lasts longer)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds (default 600)")
    p.add_argument("--redis-url", default=None, help="Redis to use (default REDIS_URL); streams get a unique prefix")
    p.add_argument("--var", default=None, help="state directory (default: a temporary one)")
    p.add_argument("--pg", action="store_true",
                   help="PostgreSQL (a fresh database per service, dropped afterwards; SAFE_TEST_PG_URL) with two "
                        "replicas of every service unless --replicas says otherwise")
    p.add_argument("--replicas", action="append", default=[], metavar="SERVICE=N",
                   help="run N replicas of a service (repeatable; all=N for every service)")
    args = p.parse_args(argv)
    replicas: dict[str, int] = {s: 2 for s in SERVICES} if args.pg and not args.replicas else {}
    for svc, n in (spec.split("=", 1) for spec in args.replicas):
        if svc not in (*SERVICES, "all"):
            p.error(f"--replicas: unknown service {svc!r}")
        replicas |= {s: int(n) for s in SERVICES} if svc == "all" else {svc: int(n)}
    if args.kills_per_service is None:
        args.kills_per_service = max(replicas.values(), default=1)
    var = Path(args.var) if args.var else Path(tempfile.mkdtemp(prefix="safe-chaos-"))
    with contextlib.ExitStack() as resources:
        urls = resources.enter_context(dbs.pg_databases(SERVICES, label="chaos")) if args.pg else None
        stack = make_stack(var, redis_url=args.redis_url, replicas=replicas, database_urls=urls)
        where = ("PostgreSQL" if args.pg else "SQLite") + (f", replicas {replicas}" if replicas else "")
        print(f"chaos: {args.cases} cases at {args.rate}/s, a kill every {args.kill_interval}s ({where}); state in {var}",
              flush=True)
        stack.start()
        try:
            report = asyncio.run(run(stack, cases=args.cases, rate=args.rate, kill_interval=args.kill_interval,
                                     kills_per_service=args.kills_per_service, timeout=args.timeout,
                                     say=lambda s: print(s, flush=True)))
        finally:
            stack.stop()
    print(report.text(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
