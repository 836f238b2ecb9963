"""The console's data-heavy pages with many cases stored: server time per page (target: under 200 ms at
100 000 cases). The applications service runs in this process on a fresh database filled in bulk; the
console calls it over ASGI with the operator's (or a Member State's) token.

    .venv/bin/python -m tests.bench.console_pages --cases 100000      # SAFE_TEST_DB=postgres for PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from safe_procurement.services.applications.adapters.tables import CaseParticipant, CaseRow
from safe_procurement.services.console.app import build_app as build_console
from safe_procurement.services.console.config import ConsoleSettings
from safe_procurement.services.console.upstream import Upstream
from safe_procurement.services.testing.inprocess import running
from tests import builders, dbs

TARGET_MS = 200.0
STATES = ["PL", "LT", "DK", "FR", "RO", "IT", "BE", "EE"]
STATUSES = ["loan_approved"] * 6 + ["origin_rejected", "loan_rejected", "withdrawn", "needs_review", "verifying"]
TOKENS = "operator:bench-op,member-state-DK:bench-dk"


async def _fill(engine: Any, n: int) -> str:
    """n cases (with their participants) in batches; returns one reference for the search page."""
    proposal = builders.demo_text()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rnd = random.Random(7)
    batch = 5000
    reference = ""
    async with engine.begin() as conn:
        for lo in range(0, n, batch):
            cases, parts = [], []
            for seq in range(lo + 1, min(n, lo + batch) + 1):
                lead, other = rnd.sample(STATES, 2)
                at = start + timedelta(seconds=seq * 30)
                reference = f"BENCH-{seq:07d}"
                cases.append(dict(seq=seq, id=str(uuid.UUID(int=seq)), reference=reference, status=rnd.choice(STATUSES),
                                  lead_member_state=lead, proposal_hash=f"h{seq}", proposal=proposal,
                                  financing_requested=True, status_since=at, created_at=at, updated_at=at))
                parts += [dict(case_seq=seq, country=lead), dict(case_seq=seq, country=other)]
            await conn.execute(insert(CaseRow), cases)
            await conn.execute(insert(CaseParticipant), parts)
    return reference[:-2]


async def measure(cases: int, repeat: int = 15, workdir: Path | None = None) -> dict[str, Any]:
    from safe_procurement.services.applications.config import Settings
    from safe_procurement.services.applications.main import build_app

    workdir = workdir or Path(tempfile.mkdtemp(prefix="console-bench-"))
    settings = Settings(database_url=dbs.url(workdir, "applications"), stream_prefix=f"cb{uuid.uuid4().hex[:8]}:",
                        consumer_name="bench", safe_tokens=TOKENS, safe_env="production",
                        safe_event_keys="applications:k1:bench-event-key-applications-0123456789")
    app = build_app(settings)
    report: dict[str, Any] = {"cases": cases, "target_ms": TARGET_MS, "pages": {}}
    async with running(app) as (_client, rt):
        t0 = time.perf_counter()
        prefix = await _fill(rt.engine, cases)
        report["fill_s"] = round(time.perf_counter() - t0, 1)
        upstream = Upstream({s: "http://applications" for s in
                             ("applications", "origin_verification", "partner_registry", "loan_disbursement")},
                            transport=httpx.ASGITransport(app=app))
        console = build_console(ConsoleSettings(safe_tokens=TOKENS, safe_env="production"), upstream=upstream)
        async with console.router.lifespan_context(console):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=console), base_url="http://c") as c:
                for role, token in (("operator", "bench-op"), ("member-state-DK", "bench-dk")):
                    c.cookies.clear()
                    pre = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/")).text).group(1)  # type: ignore[union-attr]
                    assert (await c.post("/sign-in", data={"csrf": pre, "token": token})).status_code == 303
                    first = await c.get("/cases")
                    cursor = re.search(r'cursor=([^"&]+)', first.text)
                    pages = {"/cases": "/cases", "/cases?status=needs_review": "/cases?status=needs_review",
                             "/cases?member_state=LT": "/cases?member_state=LT",
                             "/cases?status=verifying&member_state=EE": "/cases?status=verifying&member_state=EE",
                             "/cases?q=<reference prefix>": f"/cases?q={prefix}",
                             "/cases (second page)": f"/cases?cursor={cursor.group(1) if cursor else ''}",
                             "/cases/<id>": f"/cases/{uuid.UUID(int=cases // 2)}"}
                    for name, path in pages.items():
                        times = []
                        for _ in range(repeat):
                            t = time.perf_counter()
                            r = await c.get(path)
                            times.append((time.perf_counter() - t) * 1000)
                            assert r.status_code in (200, 404), (path, r.status_code, r.text[:300])
                        times.sort()
                        report["pages"][f"{role} {name}"] = {
                            "status": r.status_code, "median_ms": round(statistics.median(times), 1),
                            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
                            "rows": r.text.count("<tr>") - 1}
        await upstream.aclose()
    report["over_target"] = [p for p, v in report["pages"].items() if v["median_ms"] > TARGET_MS]
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    report = asyncio.run(measure(args.cases, args.repeat))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    raise SystemExit(1 if main()["over_target"] else 0)
