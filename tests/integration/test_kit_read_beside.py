"""Reads beside the service's connection (db.read_beside): a scan for a metrics gauge must not queue behind, or
hold up, the service's one SQLite connection."""

from __future__ import annotations

import asyncio

from sqlalchemy import column, func, select, table

from safe_procurement.shared.kit import db

COUNT = db.FixedQuery(select(func.count()).select_from(table("t", column("x"))))


async def test_a_read_beside_answers_while_the_services_connection_holds_the_write_lock(tmp_path) -> None:
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path}/beside.db")
    factory = db.session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await conn.exec_driver_sql("INSERT INTO t VALUES (1), (2)")
        async with engine.connect() as conn, conn.begin():  # the pool's only connection, in a write transaction
            await conn.exec_driver_sql("INSERT INTO t VALUES (3)")
            # through the pool this would wait for the connection above: a deadlock, here a timeout
            rows = await asyncio.wait_for(db.read_beside(engine, factory, COUNT), timeout=5)
            assert rows == [(2,)]  # what is committed; the open transaction's row is not seen
        assert await db.read_beside(engine, factory, COUNT) == [(3,)]
    finally:
        await engine.dispose()


async def test_other_databases_are_read_through_a_session(pg_url) -> None:
    engine = db.make_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await conn.exec_driver_sql("INSERT INTO t VALUES (1), (2), (3)")
        assert [tuple(r) for r in await db.read_beside(engine, db.session_factory(engine), COUNT)] == [(3,)]
    finally:
        await engine.dispose()


async def test_a_fixed_query_inside_a_transaction_reads_straight_on_sqlite3(tmp_path) -> None:
    """`FixedQuery.one` / `.all` in a session's transaction on the inline SQLite connection run on sqlite3 itself
    (SQLAlchemy's cursor events see nothing), return the driver's rows as the Core path does, and `one` refuses
    zero or several rows as `Result.one` does."""
    import pytest
    import sqlalchemy as sa

    values = db.FixedQuery(select(column("x")).select_from(table("t", column("x"))).order_by(column("x")))
    none = db.FixedQuery(select(column("x")).select_from(table("t", column("x"))).where(column("x") > 99))
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path}/fixed.db")
    factory = db.session_factory(engine)
    seen: list[str] = []
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await conn.exec_driver_sql("INSERT INTO t VALUES (2), (1)")
        sa.event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
        async with db.transaction(factory) as session:
            assert await COUNT.one(session) == (2,)
            assert await values.all(session) == [(1,), (2,)]
            with pytest.raises(sa.exc.MultipleResultsFound):
                await values.one(session)
            with pytest.raises(sa.exc.NoResultFound):
                await none.one(session)
        assert seen == []  # BEGIN from the begin event on the DBAPI cursor, the reads straight to the driver
    finally:
        await engine.dispose()
