"""What one consumed batch costs each service, in process: CPU per batch of 1 and of 50 messages.

A batch pays a fixed cost (its transactions, its inbox and outbox statements, the publish right after the
commit, its XACK) once, whatever its size, and a cost per message. Under light load every batch holds one
message, so the fixed cost is what a case pays at each hop; under heavy load it is shared. The saturation figures
of `make bench` hide the first, which is why they are measured here on their own: each service's real message
path (`Messaging.process`, the handler, a real SQLite file and a real Redis), driven directly, without the
stream read, on a warm process with nothing else running, timed with the thread's CPU clock.

    python -m tests.bench.batchcost [--batches 200]

`--instructions` counts instructions instead, under valgrind's callgrind, only inside the timed loops (toggled
with callgrind_control) and only on the event loop's thread: on this shared VM CPU times of the same build swing by
tens of per cent between runs; two instruction counts of one build agreed within 1 % on eight of ten figures (the
applications service's one-message verification result and loan decision varied by up to 18 %: something of that
process sometimes runs inside the loop), so a change of a few per cent can be seen.
Slow (~50× under valgrind): use fewer batches, e.g. `--instructions --batches 30`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from safe_procurement.services.runner import tune_gc
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import wire
from safe_procurement.shared.kit.messaging import Entry
from tests import builders

QUIET = dict(log_level="WARNING", relay_interval_ms=1000, poll_interval_ms=100, claim_idle_ms=600_000, reclaim_interval_ms=60_000)
# under callgrind, the idle polls of the stream readers and the relay would count between the measured batches
UNDER_CALLGRIND = os.environ.get("SAFE_BATCHCOST_CALLGRIND") == "1"
if UNDER_CALLGRIND:
    QUIET.update(relay_interval_ms=600_000, poll_interval_ms=600_000)
    tune_gc()  # the collector as in a service process (fewer collections; what is alive at start-up frozen)
SIZES = (1, 50)
_ids = iter(range(1, 10**9))


def entry(event: Any) -> Entry:
    return Entry(f"{next(_ids)}-0", {wire.DATA_KEY: event.model_dump_json().encode()})


async def measure(rt: Any, stream: str, make: Callable[[int], Awaitable[list[Entry]]], batches: int) -> dict[str, Any]:
    """CPU per batch of each size in SIZES; `make(n)` returns n fresh entries."""
    sub = rt.messaging.subscriptions[stream]
    for _ in range(20):  # warm-up: compiled statements, pools, caches
        await rt.messaging.process(sub, await make(1))
    out: dict[str, Any] = {}
    for size in SIZES:
        rounds = batches if size == 1 else max(5, batches // size)
        work = [await make(size) for _ in range(rounds)]
        cpu = []
        processed, duplicates = sub.processed, sub.duplicates
        if UNDER_CALLGRIND:  # a full collection inside a loop would add tens of millions of instructions to it
            gc.collect()
        _callgrind("-i", "on")
        for entries in work:
            t = time.thread_time()
            await rt.messaging.process(sub, entries)
            cpu.append((time.thread_time() - t) * 1000)
        _callgrind("-i", "off")
        _callgrind("-d", f"{stream} size={size} rounds={rounds}")
        # every message went through its handler and was committed: no failure, retry or duplicate
        handled = sub.processed - processed
        if handled != rounds * size or sub.duplicates != duplicates:
            raise RuntimeError(f"{stream}: {handled} of {rounds * size} messages handled, "
                               f"{sub.duplicates - duplicates} duplicates")
        out[f"batch_of_{size}_ms"] = round(statistics.median(cpu), 3)
    big = SIZES[-1]
    per_message = (out[f"batch_of_{big}_ms"] - out["batch_of_1_ms"]) / (big - 1)
    out["per_message_ms"] = round(per_message, 3)
    out["fixed_ms"] = round(out["batch_of_1_ms"] - per_message, 3)
    return out


def _callgrind(*args: str) -> None:
    if UNDER_CALLGRIND:
        subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def instructions(batches: int) -> dict[str, dict[int, float]]:
    """This module's measurement under callgrind: millions of instructions per batch, by stream and batch size."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                        f"--callgrind-out-file={tmp}/cg.%p", sys.executable, "-m", "tests.bench.batchcost",
                        "--batches", str(batches)],
                       check=True, env={**os.environ, "SAFE_BATCHCOST_CALLGRIND": "1"}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return read_dumps(Path(tmp))


def read_dumps(directory: Path) -> dict[str, dict[int, float]]:
    """Millions of instructions per batch from the dumps `measure` asked for, main thread only (not the
    checkpointer's): each dump holds what ran since the one before, and only the timed loops were instrumented."""
    out: dict[str, dict[int, float]] = {}
    for f in sorted(directory.glob("cg.*-01")):
        text = f.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: dump (\S+) size=(\d+) rounds=(\d+)$", text, re.M)
        total = re.search(r"^totals: (\d+)", text, re.M)
        if label and total:
            stream, size, rounds = label.group(1), int(label.group(2)), int(label.group(3))
            out.setdefault(stream, {})[size] = int(total.group(1)) / rounds / 1e6
    return out


def build(service: str, work: Path, redis_url: str, prefix: str) -> Any:
    """The service's app (safe_procurement.services.<service>.main.build_app) on a SQLite file in `work`, quiet background loops."""
    config = importlib.import_module(f"safe_procurement.services.{service}.config")
    main = importlib.import_module(f"safe_procurement.services.{service}.main")
    return main.build_app(config.Settings(database_url=f"sqlite+aiosqlite:///{work}/{service}.db", stream_prefix=prefix,
                                          consumer_name="batchcost", **{"REDIS_URL": redis_url}, **QUIET))


async def loan_disbursement(work: Path, redis_url: str, prefix: str, batches: int) -> dict[str, Any]:


    async def make(n: int) -> list[Entry]:
        return [entry(builders.loan_requested(("PL", "1000.00"), participants=["LT", "PL"], signed_on=date(2026, 9, 1)))
                for _ in range(n)]

    async with running(build("loan_disbursement", work, redis_url, prefix)) as (_, rt):
        return {"LoanRequested": await measure(rt, streams.LOAN_REQUESTED, make, batches)}


async def origin_verification(work: Path, redis_url: str, prefix: str, batches: int) -> dict[str, Any]:
    from tests.unit.origin_verification.seed import seed_events


    async def make(n: int) -> list[Entry]:
        out = []
        for _ in range(n):
            out.append(entry(builders.submitted(builders.proposal_model(tag="BC"))))
        return out

    async with running(build("origin_verification", work, redis_url, prefix)) as (client, rt):
        r = aioredis.Redis.from_url(redis_url)
        countries, agreements, published = seed_events()
        for stream, events in ((streams.REFERENCE_DATA_PUBLISHED, [published]), (streams.COUNTRY_STATUS_CHANGED, countries),
                               (streams.PARTNER_AGREEMENT_RECORDED, agreements)):
            for ev in events:
                await r.xadd(f"{prefix}{stream}", {wire.DATA: ev.model_dump_json()})
        await r.aclose()
        async def ready() -> bool:
            return bool((await client.get("/replica")).json().get("ready"))

        await wait_for(ready, timeout=15, message="the origin verification replica")
        return {"ProcurementSubmitted": await measure(rt, streams.PROCUREMENT_SUBMITTED, make, batches)}


async def applications(work: Path, redis_url: str, prefix: str, batches: int) -> dict[str, Any]:

    r = aioredis.Redis.from_url(redis_url)
    now = datetime.now(UTC)

    async with running(build("applications", work, redis_url, prefix)) as (client, rt):
        async def cases(n: int) -> list[tuple[str, str]]:
            """n new cases, each with the event id of its ProcurementSubmitted (published by the relay)."""
            ids = []
            for _ in range(n):
                resp = await client.post("/procurements", content=builders.proposal_model(tag="BC").model_dump_json(),
                                         headers={"content-type": "application/json"})
                ids.append(resp.json()["id"])
            await rt.relay.publish_once()
            wanted, found = set(ids), {}
            for _, fields in await r.xrange(f"{prefix}{streams.PROCUREMENT_SUBMITTED}"):
                ev = wire.decoded(fields)
                if ev["case_id"] in wanted:
                    found[ev["case_id"]] = ev["event_id"]
            return [(c, found[c]) for c in ids]

        async def verified(n: int) -> list[Entry]:
            return [entry(builders.verification_completed(c, e, checked_at=now)) for c, e in await cases(n)]

        approvable: list[str] = []

        async def vc_and_keep(n: int) -> list[Entry]:
            out = await verified(n)
            approvable.extend(wire.decoded(e.fields)["case_id"] for e in out)
            return out

        async def approved(n: int) -> list[Entry]:
            out = []
            for _ in range(n):
                c = approvable.pop()
                out.append(entry(contracts.LoanApproved(correlation_id=c, case_id=c, loans=[
                    contracts.ApprovedLoan(loan_id=str(uuid.uuid4()), member_state="PL",
                                           amount_eur=Decimal("950000.00"))])))
            return out

        async def submissions(n: int) -> list[Entry]:
            return [entry(builders.proposal_model(tag="BC")) for _ in range(n)]

        res = {"SubmitProcurement": await measure(rt, streams.SUBMIT_PROCUREMENT, submissions, batches)}
        res["OriginVerificationCompleted"] = await measure(rt, streams.ORIGIN_VERIFICATION_COMPLETED, vc_and_keep,
                                                           batches)
        res["LoanApproved"] = await measure(rt, streams.LOAN_APPROVED, approved, batches)
    await r.aclose()
    return res


async def run(redis_url: str, batches: int = 200) -> dict[str, Any]:
    prefix = f"batchcost-{uuid.uuid4().hex[:8]}:"
    out: dict[str, Any] = {}
    r = aioredis.Redis.from_url(redis_url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, fn in (("applications", applications), ("origin_verification", origin_verification),
                             ("loan_disbursement", loan_disbursement)):
                work = Path(tmp) / name
                work.mkdir()
                # a prefix of its own: origin verification must not consume the cases applications submitted
                out[name] = await fn(work, redis_url, f"{prefix}{name}:", batches)
    finally:
        keys = [k async for k in r.scan_iter(f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.batchcost", description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--instructions", action="store_true", help="count instructions under callgrind (slow)")
    opts = ap.parse_args()
    if opts.instructions:
        print(f"{'stream consumed':52s} millions of instructions per batch (the event loop's thread)")
        for stream, sizes in instructions(opts.batches).items():
            print(f"{stream:52s} " + "   ".join(f"batch of {n}: {m:8.3f}" for n, m in sorted(sizes.items())))
        return
    res = asyncio.run(run(os.environ.get("REDIS_URL", "redis://localhost:6379/0"), opts.batches))
    for service, handlers in res.items():
        for handler, f in handlers.items():
            print(f"{service:20s} {handler:28s} batch of 1: {f['batch_of_1_ms']:6.2f} ms   batch of {SIZES[-1]}: "
                  f"{f[f'batch_of_{SIZES[-1]}_ms']:6.2f} ms   fixed {f['fixed_ms']:5.2f} + {f['per_message_ms']:5.3f} per message",
                  file=sys.stdout)


if __name__ == "__main__":
    main()
