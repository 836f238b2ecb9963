"""The baseline a user would compare the platform against: a plain redis-py asyncio chain.

`hops` stage processes, each reading its input stream through a consumer group in batches (XREADGROUP
COUNT 100), forwarding every entry to the next stream and acknowledging the batch in one pipeline (XADD…
XACK). No framework, no database, no JSON work: what Redis and redis-py allow on this machine."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from safe_procurement.shared.kit import wire

GROUP = "bench"


async def _stage(url: str, src: str, dst: str, batch: int) -> None:
    r = aioredis.Redis.from_url(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        try:
            await r.xgroup_create(src, GROUP, id="0", mkstream=True)
        except aioredis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        print("ready", flush=True)
        while not stop.is_set():
            resp = await r.xreadgroup(GROUP, "c1", {src: ">"}, count=batch, block=100)
            if not resp:
                continue
            entries = resp[0][1]
            pipe = r.pipeline(transaction=False)
            for _mid, fields in entries:
                pipe.xadd(dst, fields)
            pipe.xack(src, GROUP, *[mid for mid, _ in entries])
            await pipe.execute()
    finally:
        await r.aclose()


async def run_baseline(redis_url: str, *, messages: int, payload: bytes, hops: int = 4, batch: int = 100) -> dict[str, Any]:
    """Push `messages` entries through `hops` stage processes; messages/s end to end."""
    prefix = f"benchbase{uuid.uuid4().hex[:8]}:"
    names = [f"{prefix}s{i}" for i in range(hops + 1)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.baseline", redis_url, names[i], names[i + 1], str(batch),
        stdout=asyncio.subprocess.PIPE, env=env, cwd=root) for i in range(hops)]
    r = aioredis.Redis.from_url(redis_url)
    try:
        for p in procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), timeout=60)
            if line.strip() != b"ready":
                raise RuntimeError(f"baseline stage did not start (exit {p.returncode})")
        last = "0-0"  # the stream is new: everything on it is ours
        received = 0
        t0 = time.perf_counter()
        for start in range(0, messages, 1000):
            pipe = r.pipeline(transaction=False)
            for _ in range(min(1000, messages - start)):
                pipe.xadd(names[0], {wire.DATA: payload})
            await pipe.execute()
        sent_s = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while received < messages:
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline: {received}/{messages} arrived")
            resp = await r.xread({names[-1]: last}, count=1000, block=200)
            if resp:
                entries = resp[0][1]
                received += len(entries)
                last = entries[-1][0]
        elapsed = time.perf_counter() - t0
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), timeout=5)
            except TimeoutError:
                p.kill()
                await p.wait()
        await r.delete(*names)
        await r.aclose()
    return {"messages": messages, "hops": hops, "batch": batch, "payload_bytes": len(payload),
            "seconds": round(elapsed, 3), "producer_seconds": round(sent_s, 3),
            "messages_per_s": round(messages / elapsed, 1)}


if __name__ == "__main__":
    asyncio.run(_stage(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
