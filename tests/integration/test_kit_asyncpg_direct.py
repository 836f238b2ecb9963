"""The kit's direct path on PostgreSQL: `db.executemany` and `db.fetch_all` send a statement compiled once straight
to the asyncpg connection inside SQLAlchemy's transaction, and must store, read and fail as a Core execute does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from services.loan_disbursement.adapters.types import Money
from shared.kit import db
from shared.kit.tables import TS

meta = sa.MetaData()


def _table(name: str) -> sa.Table:
    return sa.Table(name, meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("k", sa.String, unique=True),
                    sa.Column("at", TS), sa.Column("amount", Money()), sa.Column("flag", sa.Boolean),
                    sa.Column("note", sa.String, nullable=True))


DIRECT, CORE = _table("direct"), _table("core")
ROWS = [{"k": f"r{i}", "at": at, "amount": Decimal(a), "flag": i % 2 == 0, "note": None if i % 2 else "x"}
        for i, (at, a) in enumerate([(datetime(2026, 11, 28, 13, 0, 7, 123456, tzinfo=UTC), "0.10"),
                                     (datetime(2026, 11, 28, 13, 1, 7, tzinfo=UTC), "46796822.00"),
                                     (datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5))), "9.99")])]


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[Any]:
    engine = db.make_engine(pg_url.replace("postgresql://", "postgresql+asyncpg://"))
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    yield engine
    await engine.dispose()


@contextmanager
def _core_statements(engine: Any) -> Iterator[list[str]]:
    """The statements that went through SQLAlchemy (the direct path's do not)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _all(engine: Any, table: sa.Table) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(sa.select(table).order_by(table.c.id))).all()]


async def test_executemany_stores_what_a_core_execute_stores_and_fails_as_it_does(engine):
    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT 1"))  # SQLAlchemy's transaction begun on the driver
        with _core_statements(engine) as core:
            await db.executemany(conn, DIRECT.insert(), ROWS)
        assert core == []  # the direct path is the one under test
        await conn.execute(CORE.insert(), ROWS)
    assert await _all(engine, DIRECT) == await _all(engine, CORE)
    assert [r[1:] for r in await _all(engine, DIRECT)] == [tuple(r.values()) for r in ROWS]
    with pytest.raises(sa.exc.IntegrityError, match="direct_k_key"):
        async with engine.begin() as conn:
            await conn.execute(sa.text("SELECT 1"))
            await db.executemany(conn, DIRECT.insert(), ROWS[:1])
    with pytest.raises(sa.exc.StatementError, match="never float"):
        async with engine.begin() as conn:
            await conn.execute(sa.text("SELECT 1"))
            await db.executemany(conn, DIRECT.insert(), [{**ROWS[0], "k": "f", "amount": 0.1}])
    assert len(await _all(engine, DIRECT)) == 3  # the failed transactions rolled back, the pool's connection works


async def test_before_the_driver_transaction_began_a_statement_goes_through_core_and_so_rolls_back(engine):
    """SQLAlchemy's asyncpg adapter sends BEGIN with the transaction's first statement: sent straight to asyncpg
    before that, an INSERT would have committed on its own and outlived the rollback."""
    async with engine.connect() as conn:
        await conn.begin()
        with _core_statements(engine) as core:
            await db.executemany(conn, DIRECT.insert(), ROWS[:1])  # first: through Core, which begins
            await db.executemany(conn, DIRECT.insert(), ROWS[1:2])  # then straight to asyncpg, inside it
        assert len(core) == 1
        await conn.rollback()
    assert await _all(engine, DIRECT) == []


async def test_fetch_all_reads_what_a_core_execute_reads(engine):
    async with engine.begin() as conn:
        await conn.execute(DIRECT.insert(), ROWS)
    by_keys = sa.select(DIRECT.c.id, DIRECT.c.k, DIRECT.c.at, DIRECT.c.flag, DIRECT.c.note).where(
        DIRECT.c.k.in_(sa.bindparam("ks", expanding=True))).order_by(DIRECT.c.id)
    mark = (sa.update(DIRECT).where(DIRECT.c.k.in_(sa.bindparam("ks", expanding=True)))
            .values(note=sa.bindparam("note")).returning(DIRECT.c.k, DIRECT.c.note))
    money = sa.select(DIRECT.c.k, DIRECT.c.amount).where(DIRECT.c.k.in_(sa.bindparam("ks", expanding=True)))
    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT 1"))
        for params in ({"ks": ["r0", "r2"]}, {"ks": ["r1"]}, {"ks": []}):
            with _core_statements(engine) as core:
                direct = await db.fetch_all(conn, by_keys, params)
            assert core == []
            assert direct == [tuple(r) for r in (await conn.execute(by_keys, params)).all()]
        rows = await db.fetch_all(conn, by_keys, {"ks": ["r0"]})
        assert rows == [(1, "r0", ROWS[0]["at"], True, "x")] and rows[0][2].tzinfo is not None
        with _core_statements(engine) as core:
            assert sorted(await db.fetch_all(conn, mark, {"ks": ["r1", "r2"], "note": "m"})) == [("r1", "m"), ("r2", "m")]
        assert core == []
        # NUMERIC: asyncpg's result processor needs the column's type from the driver, so Core reads it
        with _core_statements(engine) as core:
            assert await db.fetch_all(conn, money, {"ks": ["r1"]}) == [("r1", Decimal("46796822.00"))]
        assert len(core) == 1


async def test_one_statement_is_planned_per_dialect(engine, tmp_path):
    """A process that reaches both databases (this test suite does) plans a statement once for each: SQLite's `?`
    SQL sent to PostgreSQL is a syntax error."""
    statement = DIRECT.insert()
    lite = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'lite.db'}")
    try:
        async with lite.begin() as conn:
            await conn.run_sync(meta.create_all)
        async with lite.begin() as conn:
            assert db._inline_connection(conn) is not None
            await db.executemany(conn, statement, ROWS[:1])
        async with engine.begin() as conn:
            await conn.execute(sa.text("SELECT 1"))
            with _core_statements(engine) as core:
                await db.executemany(conn, statement, ROWS[:1])
            assert core == []
        assert [r[1] for r in await _all(lite, DIRECT)] == [r[1] for r in await _all(engine, DIRECT)] == ["r0"]
    finally:
        await lite.dispose()
