"""`add_row`: append-only rows of a batch transaction go in with one INSERT per table, and only if it commits."""

from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import select

from safe_procurement.services.applications import main as applications_main
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.kit import db, wire
from safe_procurement.shared.kit.tables import InboxRow, OutboxRow
from tests import dbs


@pytest.fixture
def factory(kit_factory):
    return kit_factory


async def _count(factory, model) -> int:
    async with factory() as s:
        return (await s.exec(select(func.count()).select_from(model))).one()


async def test_a_batch_transaction_inserts_its_queued_rows_in_order_at_commit(factory):
    async with db.transaction(factory) as s:
        s.info[db.BATCH] = True
        for i in range(5):
            db.add_row(s, OutboxRow, event_id=f"e{i}", stream="x", event_type="T", correlation_id="c", payload="{}")
            db.add_row(s, InboxRow, event_id=f"in{i}", stream="y", entry_id=f"1-{i}")
        assert await _count(factory, OutboxRow) == 0  # nothing written before the commit
    async with factory() as s:
        rows = (await s.exec(select(OutboxRow).order_by(OutboxRow.id))).all()
    assert [r.event_id for r in rows] == [f"e{i}" for i in range(5)]
    assert all(r.created_at is not None and r.published_at is None for r in rows)
    assert await _count(factory, InboxRow) == 5


async def test_queued_rows_of_a_failed_transaction_are_never_written(factory):
    with pytest.raises(RuntimeError):
        async with db.transaction(factory) as s:
            s.info[db.BATCH] = True
            db.add_row(s, OutboxRow, event_id="lost", stream="x", event_type="T", correlation_id="c", payload="{}")
            raise RuntimeError("handler failed")
    assert await _count(factory, OutboxRow) == 0


async def test_a_duplicate_inbox_key_fails_the_whole_batch_commit(factory):
    """What makes the kit redo a batch one message at a time: the duplicate is found at commit."""
    async with db.transaction(factory) as s:
        s.info[db.BATCH] = True
        db.add_row(s, InboxRow, event_id="dup", stream="y", entry_id="1-1")
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        async with db.transaction(factory) as s:
            s.info[db.BATCH] = True
            db.add_row(s, OutboxRow, event_id="e", stream="x", event_type="T", correlation_id="c", payload="{}")
            db.add_row(s, InboxRow, event_id="dup", stream="y", entry_id="1-2")
    assert await _count(factory, OutboxRow) == 0


async def test_outside_a_batch_rows_are_plain_orm_objects(factory):
    async with db.transaction(factory) as s:
        db.add_row(s, InboxRow, event_id="orm", stream="y", entry_id="1-1")
        assert len(s.new) == 1
    assert await _count(factory, InboxRow) == 1


def test_a_missing_required_value_is_refused_at_once():
    class FakeSession:
        info = {db.BATCH: True}

    with pytest.raises(TypeError, match="payload"):
        db.add_row(FakeSession(), OutboxRow, event_id="e", stream="x", event_type="T", correlation_id="c")  # type: ignore[arg-type]


async def test_sqlite_checkpoints_happen_beside_the_service_connection_not_in_its_commits(tmp_path):
    """The service connection never checkpoints (wal_autocheckpoint=0); the Checkpointer thread moves the WAL
    into the database file, so the WAL does not grow without bound and no commit pays for an fsync."""
    import os

    if dbs.on_postgres():
        pytest.skip("SQLite only")
    url = f"sqlite+aiosqlite:///{tmp_path}/ckpt.db"
    await db.migrate(url, db.migrations_dir(applications_main.__file__))
    engine = db.make_engine(url)
    factory = db.session_factory(engine)
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar() == 0
    main_file = tmp_path / "ckpt.db"
    before = os.path.getsize(main_file)
    for i in range(40):
        async with db.transaction(factory) as s:
            s.info[db.BATCH] = True
            for j in range(20):
                db.add_row(s, OutboxRow, event_id=f"c{i}-{j}", stream="x", event_type="T", correlation_id="c",
                           payload="p" * 2000)

    async def checkpointed() -> bool:  # the checkpointer runs every 0.5 s
        return os.path.getsize(main_file) > before + 800 * 2000

    await wait_for(checkpointed, timeout=6.0, message="the WAL checkpointed into the database file")
    await engine.dispose()


async def test_a_redelivered_event_in_an_optimistic_batch_is_acknowledged_as_a_duplicate_and_handled_once(
    factory, redis_client, prefix
):
    """The optimistic batch does not look its events up in the inbox: an event processed before collides with its
    inbox row at the commit, and the batch is redone one message at a time, where the duplicate is found before its
    handler runs. The fresh event of the same batch is handled, once."""
    from pydantic import BaseModel

    from safe_procurement.shared.kit.messaging import Entry, Messaging

    class Ping(BaseModel):
        event_id: str

    calls: list[str] = []
    m = Messaging(service="kit-test", factory=factory, redis=redis_client, consumer_name="t", prefix=prefix)

    @m.subscribe("kit.pings", Ping)
    async def on_ping(event: Ping, uow) -> None:  # type: ignore[no-untyped-def]
        calls.append(event.event_id)
        db.add_row(uow.session, OutboxRow, event_id=f"out-{event.event_id}", stream="x", event_type="T",
                   correlation_id="c", payload="{}")

    sub = m.subscriptions["kit.pings"]

    def entry(entry_id: str, event_id: str) -> Entry:
        return Entry(entry_id, {wire.DATA_KEY: Ping(event_id=event_id).model_dump_json().encode()})

    await m.process(sub, [entry("1-1", "a")])
    await m.process(sub, [entry("2-1", "a"), entry("2-2", "b")])  # "a" redelivered beside a fresh "b"

    assert sub.duplicates == 1 and sub.processed == 3
    async with factory() as s:
        outbox = sorted((await s.exec(select(OutboxRow.event_id))).all())
        inbox = sorted((await s.exec(select(InboxRow.event_id))).all())
    assert outbox == ["out-a", "out-b"]  # the rolled-back optimistic attempt left nothing behind
    assert inbox == ["a", "b"]
    assert calls.count("b") == 2 and calls.count("a") == 2  # a: first delivery + the optimistic attempt, never after


async def test_executemany_on_sqlite_stores_what_a_core_execute_stores(tmp_path):
    """The direct sqlite3 path of `executemany` converts values with SQLAlchemy's own bind processors (for SQLite's
    DATETIME, the kit's faster equivalent): the stored text is the same as a Core execute's, for dates, exact money, booleans and NULLs, and constraint violations
    and refused values surface as SQLAlchemy's errors."""
    import sqlite3
    from datetime import UTC, datetime, timedelta, timezone
    from decimal import Decimal

    import sqlalchemy as sa

    from safe_procurement.services.loan_disbursement.adapters.types import Money
    from safe_procurement.shared.kit.tables import TS

    meta = sa.MetaData()

    def table(name: str) -> sa.Table:
        return sa.Table(name, meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("k", sa.String, unique=True),
                        sa.Column("at", TS), sa.Column("amount", Money()), sa.Column("flag", sa.Boolean),
                        sa.Column("note", sa.String, nullable=True))

    direct, core = table("direct"), table("core")
    ats = [datetime(2026, 11, 28, 13, 0, 7, 123456, tzinfo=UTC), datetime(2026, 11, 28, 13, 1, 7),  # no microseconds
           datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5)))]  # a short year, another offset
    rows = [{"k": f"r{i}", "at": ats[i], "amount": Decimal(a),
             "flag": i % 2 == 0, "note": None if i % 2 else "x"} for i, a in enumerate(["0.10", "46796822.00", "9.99"])]
    path = tmp_path / "exact.db"
    engine = db.make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(meta.create_all)
        async with engine.begin() as conn:
            assert db._driver_in_transaction(conn) is not None  # the direct path is the one under test
            await db.executemany(conn, direct.insert(), rows)
            await conn.execute(core.insert(), rows)
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as conn:
                await db.executemany(conn, direct.insert(), rows[:1])
        with pytest.raises(sa.exc.StatementError, match="never float"):
            async with engine.begin() as conn:
                await db.executemany(conn, direct.insert(), [{**rows[0], "k": "f", "amount": 0.1}])
        async with engine.connect() as conn:
            back = (await conn.execute(sa.select(direct).order_by(direct.c.id))).all()
    finally:
        await engine.dispose()
    con = sqlite3.connect(path)
    try:
        stored = {name: con.execute(f"SELECT k, at, amount, flag, note FROM {name} ORDER BY id").fetchall()
                  for name in ("direct", "core")}
    finally:
        con.close()
    assert stored["direct"] == stored["core"] and len(stored["direct"]) == 3
    assert [(r.k, r.at, r.amount, r.flag, r.note) for r in back] == [
        (r["k"], r["at"].replace(tzinfo=None), r["amount"], r["flag"], r["note"]) for r in rows]


async def test_fetch_all_reads_what_a_core_execute_reads(tmp_path):
    """The direct path of `fetch_all` (straight to the driver connection) returns the same values as a Core execute:
    each column through its type's result processor (exact money from integer cents, booleans, dates), expanding
    `IN` lists of any length (one plan per length, the empty list included), text statements, a bound literal; with
    a list of another length it never reuses a plan; outside a transaction or for a list longer than it plans for
    it goes through Core."""
    from datetime import UTC, datetime
    from decimal import Decimal

    import sqlalchemy as sa

    from safe_procurement.services.loan_disbursement.adapters.types import Money
    from safe_procurement.shared.kit.tables import TS

    meta = sa.MetaData()
    t = sa.Table("t", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("k", sa.String),
                 sa.Column("at", TS), sa.Column("amount", Money()), sa.Column("flag", sa.Boolean),
                 sa.Column("note", sa.String, nullable=True))
    rows = [{"id": i, "k": f"k{i}", "at": datetime(2026, 11, 28, 13, i, 7, 1000 * i, tzinfo=UTC),
             "amount": Decimal(f"{i}46796822.{i:02d}"), "flag": i % 2 == 0, "note": None if i % 2 else "x"}
            for i in range(1, 6)]
    by_keys = sa.select(t).where(t.c.k.in_(sa.bindparam("ks", expanding=True)), t.c.id > 1).order_by(t.c.id)
    cents = sa.select(t.c.k, t.c.amount + sa.bindparam("plus", type_=Money())).where(
        t.c.id.in_(sa.bindparam("ids", expanding=True))).order_by(t.c.id)
    text = sa.text("SELECT k, note FROM t WHERE id IN :ids ORDER BY id").bindparams(sa.bindparam("ids", expanding=True))
    reads = [(by_keys, {"ks": ["k1", "k2", "k4"]}), (by_keys, {"ks": ["k5"]}), (by_keys, {"ks": []}),
             (by_keys, {"ks": ["k2", "k3", "k4", "k5"]}), (cents, {"ids": [2, 3], "plus": Decimal("0.01")}),
             (text, {"ids": [1, 2, 3]}), (text, {"ids": [4]})]
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'reads.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(meta.create_all)
            await conn.execute(t.insert(), rows)
        async with engine.connect() as conn:
            assert db._driver_in_transaction(conn) is None  # no transaction: Core's turn
            assert [tuple(r) for r in await db.fetch_all(conn, by_keys, {"ks": ["k4"]})] == [
                tuple(rows[3].values())[:2] + (rows[3]["at"].replace(tzinfo=None),) + tuple(rows[3].values())[3:]]
        async with engine.begin() as conn:
            assert db._driver_in_transaction(conn) is not None  # the direct path is the one under test
            for statement, params in reads:
                assert db._cached_plan(conn, statement, params) is not None, (statement, params)
                direct = await db.fetch_all(conn, statement, params)
                core = [tuple(r) for r in (await conn.execute(statement, params)).all()]
                assert direct == core, (statement, params)
            assert [r[1] for r in await db.fetch_all(conn, by_keys, {"ks": ["k2", "k3", "k4", "k5"]})] == [
                "k2", "k3", "k4", "k5"]
            assert await db.fetch_all(conn, cents, {"ids": [1], "plus": Decimal("0.01")}) == [
                ("k1", Decimal("146796822.02"))]
            assert type((await db.fetch_all(conn, by_keys, {"ks": ["k2"]}))[0][4]) is bool
            many = {"ks": [f"k{i}" for i in range(db.MAX_PLANNED_LIST + 1)]}
            assert db._cached_plan(conn, by_keys, many) is None  # not planned (a plan per length): through Core
            assert [r[1] for r in await db.fetch_all(conn, by_keys, many)] == ["k2", "k3", "k4", "k5"]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("kind", ["engine", "short_transaction", "kit_transaction"])
async def test_a_transaction_waits_for_another_process_holding_the_sqlite_write_lock(tmp_path, kind):
    """When another connection (a replica) holds the write lock, BEGIN IMMEDIATE waits for it in SQLite's busy handler
    on aiosqlite's thread, so the event loop runs on, and goes through once the lock is released: for
    `engine.begin()`, `short_transaction` and the kit's `transaction` on a checked-out connection alike."""
    import asyncio
    import sqlite3

    import sqlalchemy as sa

    path = tmp_path / "lock.db"
    engine = db.make_engine(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        other.execute("BEGIN IMMEDIATE")  # a replica's transaction holds the lock

        async def write() -> None:
            if kind == "short_transaction":
                async with engine.connect() as conn, db.short_transaction(conn):  # direct statements only
                    await db.executemany(conn, sa.text("INSERT INTO t VALUES (:x)"), [{"x": 1}])
            elif kind == "kit_transaction":
                async with engine.connect() as conn, db.transaction(db.session_factory(engine), connection=conn) as s:
                    await (await db.connection_of(s)).exec_driver_sql("INSERT INTO t VALUES (1)")
            else:
                async with engine.begin() as conn:
                    await conn.exec_driver_sql("INSERT INTO t VALUES (1)")

        task = asyncio.create_task(write())
        done, _ = await asyncio.wait({task}, timeout=0.1)  # the event loop runs on while the writer waits
        assert not done
        other.execute("COMMIT")
        await asyncio.wait_for(task, timeout=10)
    finally:
        other.close()
        await engine.dispose()
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)
    con.close()


async def test_a_short_transaction_commits_what_ran_in_it_and_rolls_back_on_error(factory, kit_engine):
    """`short_transaction`: statements run in it with `executemany` / `fetch_all` (on SQLite the driver
    connection's own transaction, SQLAlchemy's connection idle) commit together, or not at all."""
    from sqlalchemy import bindparam, update

    from safe_procurement.shared.kit.tables import TS, utcnow

    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    mark = update(outbox).where(outbox.c.event_id == bindparam("e")).values(published_at=bindparam("at", type_=TS))
    async with db.transaction(factory) as s:
        for i in range(3):
            s.add(OutboxRow(event_id=f"s{i}", stream="x", event_type="T", correlation_id="c", payload="{}"))
    engine = kit_engine
    async with engine.connect() as conn:
        async with db.short_transaction(conn):
            await db.executemany(conn, mark, [{"e": "s0", "at": utcnow()}, {"e": "s1", "at": utcnow()}])
        with pytest.raises(RuntimeError):
            async with db.short_transaction(conn):
                await db.executemany(conn, mark, [{"e": "s2", "at": utcnow()}])
                raise RuntimeError("the round failed")
        async with db.short_transaction(conn):  # the connection is usable after a rollback
            pass
    async with factory() as s:
        sent = (await s.exec(select(OutboxRow.event_id).where(OutboxRow.published_at.is_not(None)))).all()  # type: ignore[union-attr]
    assert sorted(sent) == ["s0", "s1"]


@pytest.mark.parametrize("kind", ["short_transaction", "kit_transaction"])
async def test_a_transaction_whose_commit_fails_is_rolled_back_and_the_connection_works_on(tmp_path, kind):
    """A deferred foreign key is checked at COMMIT: the commit fails, as SQLAlchemy's IntegrityError, nothing of the
    transaction stays, and the connection takes the next one (`short_transaction`, and the kit's `transaction` on a
    checked-out connection; SQLite keeps a transaction whose COMMIT failed open)."""
    from contextlib import asynccontextmanager

    import sqlalchemy as sa

    meta = sa.MetaData()
    parent = sa.Table("parent", meta, sa.Column("id", sa.Integer, primary_key=True))
    child = sa.Table("child", meta, sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("pid", sa.Integer, sa.ForeignKey("parent.id", deferrable=True, initially="DEFERRED")))
    engine = db.make_engine(dbs.url(tmp_path, "commitfails"))

    @asynccontextmanager
    async def begun(conn):  # noqa: ANN001, ANN202
        if kind == "short_transaction":
            async with db.short_transaction(conn):
                yield
        else:
            async with db.transaction(db.session_factory(engine), connection=conn) as session:
                assert await db.connection_of(session) is conn  # (on PostgreSQL the session's transaction begins)
                yield

    try:
        async with engine.begin() as conn:
            await conn.run_sync(meta.create_all)
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.IntegrityError):
                async with begun(conn):
                    await db.executemany(conn, child.insert(), [{"id": 1, "pid": 99}])  # no parent 99
            assert not conn.in_transaction()
            async with begun(conn):
                await db.executemany(conn, parent.insert(), [{"id": 99}])
                await db.executemany(conn, child.insert(), [{"id": 2, "pid": 99}])
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(child.c.id))).scalars().all() == [2]
    finally:
        await engine.dispose()


async def test_direct_statements_and_orm_rows_of_one_transaction_commit_or_roll_back_together(tmp_path):
    """`transaction(factory, connection=conn)`: rows written with the kit's direct statements (`executemany`, queued
    rows) and ORM rows are one transaction: committed together, or on an error rolled back together, and the
    connection takes the next transaction. A savepoint is its own per-transaction scope."""
    from safe_procurement.shared.kit.tables import utcnow

    engine = db.make_engine(dbs.url(tmp_path, "together"))
    factory = db.session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(OutboxRow.metadata.create_all, tables=[OutboxRow.__table__, InboxRow.__table__])

        def out(event_id: str) -> dict:
            return {"event_id": event_id, "stream": "x", "event_type": "T", "correlation_id": "c", "payload": "{}"}

        async with engine.connect() as conn:
            async with db.transaction(factory, connection=conn) as s:
                s.info[db.BATCH] = True
                db.add_row(s, OutboxRow, **out("raw-1"))
                scope = db.transaction_scope(s)
                s.add(InboxRow(event_id="orm-1", stream="y", entry_id="1-0"))
                await s.flush()
                assert db.transaction_scope(s) is scope
                async with s.begin_nested():
                    assert db.transaction_scope(s) is not scope  # a savepoint is its own scope
                    s.add(InboxRow(event_id="orm-2", stream="y", entry_id="2-0"))
                assert db.transaction_scope(s) is scope
            with pytest.raises(RuntimeError):
                async with db.transaction(factory, connection=conn) as s:
                    s.info[db.BATCH] = True
                    await db.executemany(await db.connection_of(s), db.insert_of(OutboxRow), [
                        {**out("raw-2"), "created_at": utcnow(), "published_at": None}])
                    s.add(InboxRow(event_id="orm-3", stream="y", entry_id="3-0"))
                    await s.flush()
                    raise RuntimeError("the batch failed")
            assert not conn.in_transaction()
        async with factory() as s:
            outbox = sorted((await s.exec(select(OutboxRow.event_id))).all())
            inbox = sorted((await s.exec(select(InboxRow.event_id))).all())
        assert outbox == ["raw-1"] and inbox == ["orm-1", "orm-2"]
    finally:
        await engine.dispose()
