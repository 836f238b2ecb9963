"""The bench with stored data and over time: `--preload N` and `--soak SECONDS` of `python -m tests.bench.run`.

`--preload N` stores N cases in the applications database before the measured phases: copies of one real case
that went through the whole flow in this run (its row, participants, timeline, the outbox rows it emitted, the
inbox rows of the events it consumed), each with a new id, reference and event ids, written by one SQL statement
per table (`generate_series` on PostgreSQL, a recursive CTE on SQLite), then `VACUUM ANALYZE` (PostgreSQL) as a
database that has been running a while would be. Every copy is `loan_approved`, as its template.

`--soak SECONDS` offers one rate (half the HTTP saturation measured just before, or `--soak-rate`) for that long,
open loop, sampling every service process's resident memory (and CPU) every `--soak-sample` seconds; at the end
every case must be final, none lost or doubled. Writes `soak.json` and `soak.png` (RSS per process over time)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

SEED_PREFIX = "SEED-"  # the references of the stored copies

# the per-case rows of the applications database, copied from a template case: table → (columns, select list)
# over `t` (the template row) and `g` (1..N); `:salt` keeps this run's ids apart from any other's
_CASE_ID_PG = "md5(:salt || 'c' || g)::uuid::text"
_CASE_ID_SQLITE = ("lower(substr(hex(h),1,8)||'-'||substr(hex(h),9,4)||'-'||substr(hex(h),13,4)||'-'||"
                   "substr(hex(h),17,4)||'-'||substr(hex(h),21,12))")


def _pg_statements(n: int) -> list[str]:
    cid = _CASE_ID_PG
    return [
        f"""INSERT INTO cases (id, reference, status, lead_member_state, proposal_hash, proposal,
                financing_requested, verification, verification_request_id, loan, status_since, created_at, updated_at)
            SELECT {cid}, :seed || :salt || '-' || lpad(g::text, 7, '0'), t.status, t.lead_member_state,
                   t.proposal_hash, t.proposal, t.financing_requested, t.verification,
                   md5(:salt || 'v' || g)::uuid::text, t.loan,
                   t.status_since - make_interval(secs => g), t.created_at - make_interval(secs => g),
                   t.updated_at - make_interval(secs => g)
            FROM cases t, generate_series(1, {n}) g WHERE t.seq = :seq ORDER BY g""",
        """INSERT INTO case_participants (case_seq, country)
            SELECT c.seq, p.country FROM cases c JOIN case_participants p ON p.case_seq = :seq
            WHERE c.reference LIKE :seed || :salt || '-%'""",
        f"""INSERT INTO timeline (case_id, type, at, recorded_at, event_id, causation_id, service, summary)
            SELECT {cid}, tl.type, tl.at - make_interval(secs => g), tl.recorded_at - make_interval(secs => g),
                   CASE WHEN tl.event_id IS NULL THEN NULL ELSE md5(:salt || 'e' || g || '-' || tl.id)::uuid::text END,
                   tl.causation_id, tl.service, tl.summary
            FROM timeline tl, generate_series(1, {n}) g WHERE tl.case_id = :cid ORDER BY g, tl.id""",
        f"""INSERT INTO outbox (event_id, stream, event_type, correlation_id, payload, created_at, published_at)
            SELECT md5(:salt || 'o' || g || '-' || o.id)::uuid::text, o.stream, o.event_type, {cid},
                   replace(o.payload, :cid, {cid}), o.created_at - make_interval(secs => g),
                   o.published_at - make_interval(secs => g)
            FROM outbox o, generate_series(1, {n}) g WHERE o.correlation_id = :cid ORDER BY g, o.id""",
        f"""INSERT INTO inbox (event_id, stream, entry_id, processed_at)
            SELECT md5(:salt || 'i' || g || '-' || k)::uuid::text, :stream, g || '-' || k,
                   now() - make_interval(secs => g)
            FROM generate_series(1, {n}) g, generate_series(1, :inbox) k""",
    ]


def _sqlite_statements(n: int) -> list[str]:
    # SQLite has no generate_series by default: a recursive CTE counts; `h` is 16 bytes derived from the count
    gen = f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) "
    hashed = "(SELECT g, randomblob(16) AS h FROM s)"
    return [
        "CREATE TEMP TABLE seed_ids AS " + gen +
        f"SELECT g, {_CASE_ID_SQLITE} AS id FROM {hashed}",
        """INSERT INTO cases (id, reference, status, lead_member_state, proposal_hash, proposal,
                financing_requested, verification, verification_request_id, loan, status_since, created_at, updated_at)
            SELECT i.id, :seed || :salt || '-' || printf('%07d', i.g), t.status, t.lead_member_state,
                   t.proposal_hash, t.proposal, t.financing_requested, t.verification, lower(hex(randomblob(16))),
                   t.loan, t.status_since, t.created_at, t.updated_at
            FROM cases t, seed_ids i WHERE t.seq = :seq ORDER BY i.g""",
        """INSERT INTO case_participants (case_seq, country)
            SELECT c.seq, p.country FROM cases c JOIN case_participants p ON p.case_seq = :seq
            WHERE c.reference LIKE :seed || :salt || '-%'""",
        """INSERT INTO timeline (case_id, type, at, recorded_at, event_id, causation_id, service, summary)
            SELECT i.id, tl.type, tl.at, tl.recorded_at,
                   CASE WHEN tl.event_id IS NULL THEN NULL ELSE lower(hex(randomblob(16))) END,
                   tl.causation_id, tl.service, tl.summary
            FROM timeline tl, seed_ids i WHERE tl.case_id = :cid ORDER BY i.g, tl.id""",
        """INSERT INTO outbox (event_id, stream, event_type, correlation_id, payload, created_at, published_at)
            SELECT lower(hex(randomblob(16))), o.stream, o.event_type, i.id, replace(o.payload, :cid, i.id),
                   o.created_at, o.published_at
            FROM outbox o, seed_ids i WHERE o.correlation_id = :cid ORDER BY i.g, o.id""",
        """INSERT INTO inbox (event_id, stream, entry_id, processed_at)
            SELECT lower(hex(randomblob(16))), :stream, i.g || '-' || k.k, datetime('now')
            FROM seed_ids i, (SELECT 1 AS k UNION ALL SELECT 2) k""",
        "DROP TABLE seed_ids",
    ]


async def preload(database_url: str, template_case_id: str, n: int, inbox_stream: str) -> dict[str, Any]:
    """Store `n` copies of the case `template_case_id` (see the module's doc); returns rows per table and seconds."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    pg = database_url.startswith("postgresql")
    salt = uuid.uuid4().hex[:6]
    engine = create_async_engine(database_url)
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    try:
        async with engine.begin() as conn:
            seq = (await conn.execute(sa.text("SELECT seq FROM cases WHERE id = :cid"),
                                      {"cid": template_case_id})).scalar_one()
            # the template's own inbox rows are not findable by case: two per case (the verdict, the loan decision)
            params = {"seed": SEED_PREFIX, "salt": salt, "seq": seq, "cid": template_case_id, "stream": inbox_stream, "inbox": 2}
            for stmt in (_pg_statements(n) if pg else _sqlite_statements(n)):
                used = {k: v for k, v in params.items() if f":{k}" in stmt}
                res = await conn.execute(sa.text(stmt), used)
                table = stmt.split("INTO", 1)[1].split()[0] if "INSERT INTO" in stmt else None
                if table:
                    counts[table] = int(res.rowcount or 0)
            if pg:
                await conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('cases', 'seq'), "
                                           "(SELECT max(seq) FROM cases))"))
        load_s = time.perf_counter() - t0
        if pg:  # outside a transaction: what autovacuum would have done to tables that grew this much
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                for table in ("cases", "case_participants", "timeline", "outbox", "inbox"):
                    await conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
        else:
            async with engine.begin() as conn:
                await conn.execute(sa.text("ANALYZE"))
        async with engine.connect() as conn:
            if pg:
                size = (await conn.execute(sa.text("SELECT pg_database_size(current_database())"))).scalar_one()
            else:
                size = Path(database_url.split("///", 1)[1]).stat().st_size
    finally:
        await engine.dispose()
    return {"cases": n, "rows": counts, "load_s": round(load_s, 1), "total_s": round(time.perf_counter() - t0, 1),
            "database_mb": round(int(size) / 2**20, 1)}


class FinalCounter:
    """`--watch db`: the final cases, counted in the applications database: those stored up to now once, then at
    each poll only the newer ones (`seq` above the mark; the `(status, seq)` index), so a poll costs the same
    with 1 000 000 cases stored as with none. Cases stored before the mark are final (preloaded, or of the
    warm-up) and stay so."""

    def __init__(self, engine: Any, final: tuple[str, ...]) -> None:
        self._engine = engine
        self._final = final
        self._mark = 0
        self._before = 0

    @classmethod
    async def open(cls, database_url: str, final: tuple[str, ...]) -> FinalCounter:
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        self = cls(create_async_engine(database_url, pool_size=1) if database_url.startswith("postgresql")
                   else create_async_engine(database_url), final)
        async with self._engine.connect() as conn:
            self._mark = int((await conn.execute(sa.text("SELECT coalesce(max(seq), 0) FROM cases"))).scalar_one())
            self._before = int((await conn.execute(
                sa.text("SELECT count(*) FROM cases WHERE seq <= :mark AND status IN :final").bindparams(
                    sa.bindparam("final", expanding=True)), {"mark": self._mark, "final": list(final)})).scalar_one())
        return self

    async def count(self) -> int:
        import sqlalchemy as sa

        async with self._engine.connect() as conn:
            newer = (await conn.execute(
                sa.text("SELECT count(*) FROM cases WHERE seq > :mark AND status IN :final").bindparams(
                    sa.bindparam("final", expanding=True)), {"mark": self._mark, "final": list(self._final)})).scalar_one()
        return self._before + int(newer)

    async def close(self) -> None:
        await self._engine.dispose()


# --- the soak ---------------------------------------------------------------------------------------------


class MemoryCurve:
    """Resident memory (and CPU seconds) of every service process, sampled on a timer in a thread."""

    def __init__(self, pids: dict[str, list[int]], every_s: float) -> None:
        self.procs = {f"{s}#{i}": psutil.Process(p) for s, ps in pids.items() for i, p in enumerate(ps, 1)}
        self.every_s = every_s
        self.samples: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        row: dict[str, Any] = {"t_s": round(time.monotonic() - self._t0, 1), "rss_mb": {}, "cpu_s": {}}
        for name, p in self.procs.items():
            try:
                row["rss_mb"][name] = round(p.memory_info().rss / 2**20, 1)
                t = p.cpu_times()
                row["cpu_s"][name] = round(t.user + t.system, 2)
            except psutil.Error:
                pass
        self.samples.append(row)

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.every_s)

    def start(self) -> MemoryCurve:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._loop())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sample()


def growth(samples: list[dict[str, Any]], skip_s: float) -> dict[str, dict[str, float]]:
    """Per process: RSS at the first sample after `skip_s` (warm), at the end, the peak, and the slope of a
    least-squares line through the samples after `skip_s` (MB per minute)."""
    out: dict[str, dict[str, float]] = {}
    names = sorted({n for s in samples for n in s["rss_mb"]})
    for name in names:
        pts = [(s["t_s"], s["rss_mb"][name]) for s in samples if name in s["rss_mb"] and s["t_s"] >= skip_s]
        if len(pts) < 2:
            continue
        n = len(pts)
        mx = sum(t for t, _ in pts) / n
        my = sum(v for _, v in pts) / n
        var = sum((t - mx) ** 2 for t, _ in pts) or 1e-9
        slope = sum((t - mx) * (v - my) for t, v in pts) / var
        out[name] = {"warm_mb": pts[0][1], "end_mb": pts[-1][1], "peak_mb": max(v for _, v in pts),
                     "slope_mb_per_min": round(slope * 60, 3)}
    return out


def windows(latencies: list[tuple[float, float]], width_s: float) -> list[dict[str, float]]:
    """(due time relative to the start, latency ms) → p50/p99 per window of `width_s`."""
    from tests.bench.run import pct

    by: dict[int, list[float]] = {}
    for t, ms in latencies:
        by.setdefault(int(t // width_s), []).append(ms)
    return [{"from_s": k * width_s, "cases": len(v), "p50_ms": round(pct(v, 50), 1), "p99_ms": round(pct(v, 99), 1)}
            for k, v in sorted(by.items())]


def plot_soak(soak: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = soak["samples"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    names = sorted({n for s in samples for n in s["rss_mb"]})
    for name in names:
        pts = [(s["t_s"] / 60, s["rss_mb"][name]) for s in samples if name in s["rss_mb"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, linewidth=1.2)
    ax.set_ylabel("resident memory (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    w = soak.get("windows", [])
    ax2.plot([x["from_s"] / 60 for x in w], [x["p99_ms"] for x in w], "^-", label="p99", markersize=3)
    ax2.plot([x["from_s"] / 60 for x in w], [x["p50_ms"] for x in w], "o-", label="p50", markersize=3)
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel("minutes at the offered load")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
