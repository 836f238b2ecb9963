"""Database engine and sessions (async SQLModel), for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Insert, bindparam, event, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.kit import sqlite_inline


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


BUSY_WAIT_S = sqlite_inline.BUSY_WAIT_S  # how long a writer waits for another process's write lock before giving up
# the drivers whose connection takes the kit's direct statements (`executemany`, `fetch_all`, `FixedQuery`)
_DIRECT_DRIVERS = (sqlite_inline.DRIVER, "aiosqlite")


class Checkpointer(threading.Thread):
    """Moves the WAL into the database file from its own thread and connection.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1 000 WAL pages, and a checkpoint
    fsyncs the database file. With statements on the event loop's thread (safe_procurement.shared.kit.sqlite_inline), that would
    stall the whole service, and the stall would become every queued message's latency. Here a PASSIVE checkpoint (it never waits for readers or
    writers) runs every `interval_s` beside the service's connection, which commits without fsync
    (WAL, synchronous=NORMAL: durable against a process crash, as before)."""

    def __init__(self, path: str, interval_s: float = 0.5, owner: Any = None) -> None:
        super().__init__(name=f"sqlite-checkpoint:{Path(path).name}", daemon=True)
        self.path = path
        # ends with its engine: disposed (stop) or gone (an engine a test never disposed)
        self._owner = weakref.ref(owner) if owner is not None else None
        self.interval_s = interval_s
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        con: sqlite3.Connection | None = None
        try:
            while not self._stopped.wait(self.interval_s):
                if not os.path.exists(self.path) or (self._owner is not None and self._owner() is None):
                    return  # the database was removed (a test's temporary directory), or its engine is gone
                try:
                    if con is None:
                        con = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy or not there yet: next round
        finally:
            if con is not None:
                con.close()


def _inline_sqlite() -> bool:
    return os.environ.get("SAFE_SQLITE_DRIVER", "inline") != "thread"


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if is_sqlite(url):
        return _sqlite_engine(url)
    # No pre-ping: it is a round trip before every transaction (it would nearly double the cost of a
    # one-message batch; docs/performance-history.md). A connection that died (PostgreSQL
    # restarted) fails its transaction instead; SQLAlchemy then invalidates it, and the failed batch is retried by
    # the message kit (HTTP callers get a 5xx for that one request). `pool_recycle` retires connections before an
    # idle timeout of a proxy in between can cut them.
    return create_async_engine(url, pool_size=pool_size, max_overflow=20, pool_recycle=1800)


def _sqlite_engine(url: str) -> AsyncEngine:
    path = url.split("///", 1)[-1]
    on_file = bool(path) and path != ":memory:"
    if on_file:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    inline = on_file and _inline_sqlite()
    if inline:  # statements on the event loop's thread; SAFE_SQLITE_DRIVER=thread keeps aiosqlite's worker thread
        url = make_url(url).set(drivername=f"sqlite+{sqlite_inline.DRIVER}").render_as_string(hide_password=False)
    # One connection per process: SQLite has a single writer anyway, and every transaction here takes
    # the write lock up front (BEGIN IMMEDIATE below). With several pooled connections, concurrent
    # sessions of the same process queue inside SQLite's busy handler, which sleeps in steps of up to
    # 100 ms; waiting for the one connection in the pool is an asyncio FIFO wait instead, fair and
    # without sleeps (docs/performance-history.md has the figures). Other processes on the same
    # file (replicas): the inline driver waits for them with an asyncio sleep, aiosqlite in the busy handler on
    # its thread; neither blocks the event loop.
    engine = create_async_engine(url, connect_args={"timeout": BUSY_WAIT_S}, pool_size=1, max_overflow=0,
                                 pool_timeout=BUSY_WAIT_S)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # The driver must not open transactions itself: we issue BEGIN IMMEDIATE so that a writer
        # takes the write lock up front and concurrent replicas serialize instead of deadlocking.
        if not inline:  # (the inline driver's connections are made so)
            dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=0" if inline else f"PRAGMA busy_timeout={int(BUSY_WAIT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        if on_file:  # checkpoints run on the Checkpointer's own thread and connection, never in a commit
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # SQLAlchemy's documented recipe for pysqlite (BEGIN from the begin event), taking the write lock up front;
        # on the DBAPI cursor rather than through `exec_driver_sql`, whose execution context costs more than BEGIN
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        finally:
            cursor.close()

    if on_file:
        checkpointer = Checkpointer(path, owner=engine.sync_engine)
        checkpointer.start()
        event.listen(engine.sync_engine, "engine_disposed", lambda _engine: checkpointer.stop())
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


# `session.info[BATCH]` is True while many messages (or HTTP submissions) run together in one optimistic
# transaction that is redone one by one, each in its own savepoint, if anything in it fails. Such a transaction
# may skip per-message savepoints and flushes, and queues its append-only rows (outbox, inbox, timeline) for
# one executemany INSERT per table just before the commit (`add_row`), instead of one ORM object each.
BATCH = "safe.batch"
_DEFERRED = "safe.deferred_rows"
_AT_COMMIT = "safe.at_commit"
_COLUMNS: dict[type, tuple[list[str], list[tuple[str, Any]]]] = {}


def _columns_of(model: type) -> tuple[list[str], list[tuple[str, Any]]]:
    """The columns an INSERT of `model` names (all but an autoincrement key), and the model's defaults."""
    if model not in _COLUMNS:
        table = model.__table__  # type: ignore[attr-defined]
        auto = table.autoincrement_column
        names = [c.name for c in table.columns if auto is None or c.name != auto.name]
        defaults = []
        for name in names:
            f = model.model_fields.get(name)  # type: ignore[attr-defined]
            if f is not None and f.default_factory is not None:
                defaults.append((name, f.default_factory))
            elif f is not None and not f.is_required():
                defaults.append((name, (lambda v: lambda: v)(f.default)))
        _COLUMNS[model] = (names, defaults)
    return _COLUMNS[model]


def add_row(session: AsyncSession, model: type, **values: Any) -> None:
    """Add an append-only row: queued for a bulk INSERT in a BATCH transaction, an ORM object otherwise."""
    if not session.info.get(BATCH):
        session.add(model(**values))
        return
    names, defaults = _columns_of(model)
    for name, factory in defaults:
        if name not in values:
            values[name] = factory()
    if len(values) != len(names):
        missing = sorted(set(names) - set(values))
        raise TypeError(f"{model.__name__}: no value for {missing}")
    session.info.setdefault(_DEFERRED, {}).setdefault(model, []).append(values)


def defer_rows(session: AsyncSession, table: Any, rows: list[dict[str, Any]]) -> None:
    """Queue complete rows (every column but an autoincrement key) of a Core `table` for the batch's bulk INSERT
    (or parameter sets of an INSERT statement, e.g. an INSERT … SELECT, run as one executemany).
    Tables are inserted in the order they were first queued, so queue a parent table's rows before its
    children's. Only in a BATCH transaction (callers outside one execute their INSERT at once)."""
    assert session.info.get(BATCH), "defer_rows outside a batch transaction"
    session.info.setdefault(_DEFERRED, {}).setdefault(table, []).extend(rows)


def at_commit(session: AsyncSession, key: str, fn: Callable[[AsyncConnection], Awaitable[None]]) -> None:
    """Run `fn(connection)` once just before the BATCH transaction commits (before the queued INSERTs), however
    often it is registered under `key`: a batch's queued UPDATEs, say, as one executemany."""
    assert session.info.get(BATCH), "at_commit outside a batch transaction"
    session.info.setdefault(_AT_COMMIT, {}).setdefault(key, fn)


_INSERTS: dict[Any, Any] = {}
_PLAIN_INSERTS: dict[Any, Any] = {}  # an INSERT of insert_of → its table
_UNNEST: dict[tuple[Any, tuple[str, ...]], Any] = {}  # (INSERT, columns) → its one-statement form, or None


class _Plan(NamedTuple):
    """A statement compiled for the driver connection: its SQL, how to draw its positional values from a row of
    parameters, and the result columns' processors (None where a column needs none)."""

    sql: str
    binder: Callable[[dict[str, Any]], tuple[Any, ...]]
    results: list[Any] | None


_PLANS: dict[tuple[Any, str, tuple[str, ...], tuple[int, ...]], _Plan | None] = {}
# a read with a longer list goes through Core (plans are kept per list length: batch sizes, not arbitrary lists)
MAX_PLANNED_LIST = 256


def _driver_in_transaction(conn: AsyncConnection) -> Any | None:
    """The driver connection under `conn` (its public async interface: `executemany`, `execute_fetchall`) when it
    is SQLite inside a transaction; None otherwise, and the caller executes through SQLAlchemy.

    A statement sent to it directly skips SQLAlchemy's execution path (the execution context, the adapted cursor,
    the result's row objects), which costs several times a small local statement; on aiosqlite it is also one call
    to its thread where the adapted cursor makes three or four (cursor, execute, fetch, close)."""
    if conn.dialect.driver not in _DIRECT_DRIVERS or conn.sync_connection is None:
        return None
    driver = conn.sync_connection.connection.driver_connection
    # SQLAlchemy's transaction, or the driver's own one of `short_transaction`
    return driver if conn.in_transaction() or driver.in_transaction else None


def _plan(statement: Any, keys: tuple[str, ...], dialect: Any, params: dict[str, Any]) -> _Plan | None:
    """The statement's SQL for `dialect` (expanding parameters, `IN :ids`, expanded for the lengths of the lists
    in `params`), per positional parameter where its value comes from (a key of the row, an element of one of its
    lists, or the literal bound in the statement) and its bind processor, and the result columns' processors.
    Built from SQLAlchemy's public compiled state (`positiontup`, `binds`, `construct_expanded_state`) and the
    types' own processors (`dialect_impl(dialect).bind_processor`, `.result_processor`); None for
    a statement with values rendered into its SQL at execution (it goes through Core)."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    if compiled.positiontup is None or compiled.literal_execute_params:
        return None
    if compiled.post_compile_params and not all(b.expanding for b in compiled.post_compile_params):
        return None
    state = compiled.construct_expanded_state(params)
    element_of = {k: (name, i) for name, ks in state.parameter_expansion.items() for i, k in enumerate(ks)}
    sources: list[tuple[str | None, int | None, Any, Any]] = []  # (key, list index, literal, processor)
    for name in state.positiontup or ():
        bind = compiled.binds.get(name)
        proc = state.processors.get(name) if bind is None else bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name in element_of:
            sources.append((*element_of[name], None, proc))
        elif name in keys:
            sources.append((name, None, None, proc))
        else:
            sources.append((None, None, compiled.binds[name].effective_value, proc))
    # a SELECT's columns, a DML statement's RETURNING columns; a plain text statement has no typed columns
    columns = getattr(statement, "selected_columns", None)
    if columns is None:
        columns = getattr(statement, "exported_columns", ())
    results = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
    return _Plan(state.statement, _binder(sources), results if any(results) else None)


def _binder(sources: list[tuple[str | None, int | None, Any, Any]]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    def bind(row: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for key, index, literal, proc in sources:
            value = literal if key is None else row[key] if index is None else row[key][index]
            out.append(value if proc is None else proc(value))
        return tuple(out)

    return bind


def _cached_plan(conn: AsyncConnection, statement: Any, params: dict[str, Any]) -> _Plan | None:
    sizes = tuple(len(v) for v in params.values() if type(v) is list)
    if sizes and max(sizes) > MAX_PLANNED_LIST:
        return None
    key = (statement, conn.dialect.name, tuple(params), sizes)
    if key not in _PLANS:
        _PLANS[key] = _plan(statement, key[2], conn.dialect, params)
    return _PLANS[key]


def _bound(plan: _Plan, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each row's positional values (a value a bind processor refuses raised as Core raises it)."""
    try:
        return [plan.binder(r) for r in rows]
    except Exception as e:
        raise sa_exc.StatementError(str(e), plan.sql, None, e) from e


def _as_core_error(e: sqlite3.Error, sql: str, params: Any) -> sa_exc.DBAPIError:
    """sqlite3's error as SQLAlchemy's, as a Core execute raises it."""
    kind = sa_exc.IntegrityError if isinstance(e, sqlite3.IntegrityError) else sa_exc.OperationalError
    return kind(sql, params, e)


async def executemany(conn: AsyncConnection, statement: Any, rows: list[dict[str, Any]]) -> None:
    """Run `statement` once per row (an executemany of INSERTs or UPDATEs; nothing returned).

    On SQLite inside a transaction, sent straight to the driver connection (see `_driver_in_transaction`),
    the values converted by SQLAlchemy's bind processors; a constraint violation is raised as SQLAlchemy's
    IntegrityError, as a Core execute raises it. Elsewhere a Core execute. Statement-level SQLAlchemy events do not
    see the direct call."""
    if not rows:
        return
    raw = _driver_in_transaction(conn)
    if raw is not None:
        keys = tuple(rows[0])
        plan = _cached_plan(conn, statement, rows[0])
        if plan is not None and all(tuple(r) == keys for r in rows):  # else Core reports a missing value
            params = _bound(plan, rows)
            try:
                await raw.executemany(plan.sql, params)
            except sqlite3.Error as e:
                raise _as_core_error(e, plan.sql, params[0]) from e
            return
    if len(rows) > 1 and conn.dialect.name == "postgresql":
        bulk = _unnest_insert(statement, rows)
        if bulk is not None:
            insert_rows, keys = bulk
            await conn.execute(insert_rows, {f"u_{i}": [r[k] for r in rows] for i, k in enumerate(keys)})
            return
    await conn.execute(statement, rows)


def _unnest_insert(statement: Any, rows: list[dict[str, Any]]) -> tuple[Any, tuple[str, ...]] | None:
    """For a plain INSERT of `insert_of` whose rows all name the same columns: one statement that inserts them all
    from one array per column (`INSERT … SELECT unnest($1::T[]), unnest($2::U[]), …`), so PostgreSQL parses, plans
    and executes once per batch instead of once per row. None where that would change what is inserted: a
    column left out that has a Python-side default (the per-row INSERT applies it; this one could not)."""
    table = _PLAIN_INSERTS.get(statement)
    if table is None:
        return None
    first = rows[0].keys()
    if any(r.keys() != first for r in rows):  # as the row-by-row INSERT requires (it refuses them otherwise)
        return None
    keys = tuple(first)
    key = (statement, keys)
    if key not in _UNNEST:
        if any(c.default is not None for c in table.columns if c.name not in keys) or any(k not in table.c for k in keys):
            _UNNEST[key] = None
        else:
            cols = [table.c[k] for k in keys]
            arrays = select(*[func.unnest(bindparam(f"u_{i}", type_=ARRAY(c.type))) for i, c in enumerate(cols)])
            _UNNEST[key] = insert(table).from_select(cols, arrays, include_defaults=False)
    bulk = _UNNEST[key]
    return None if bulk is None else (bulk, keys)


async def fetch_all(conn: AsyncConnection, statement: Any, params: dict[str, Any]) -> list[Any]:
    """The rows of `statement`: unpack or index them (tuples on SQLite inside a transaction, sent as one call to
    the driver connection and converted by the result columns' processors; SQLAlchemy's rows elsewhere). An
    expanding parameter (`IN :ids`) takes a list."""
    raw = _driver_in_transaction(conn)
    plan = _cached_plan(conn, statement, params) if raw is not None else None
    if plan is None:
        return list((await conn.execute(statement, params)).all())
    [values] = _bound(plan, [params])
    try:
        rows = await raw.execute_fetchall(plan.sql, values)
    except sqlite3.Error as e:
        raise _as_core_error(e, plan.sql, values) from e
    if plan.results is None:
        return list(rows)
    procs = plan.results
    return [tuple(v if p is None else p(v) for p, v in zip(procs, row, strict=True)) for row in rows]


@asynccontextmanager
async def short_transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    """A transaction of a few statements on `conn`, run with `executemany` / `fetch_all` only: committed after the
    body, rolled back if it or the commit fails (the connection then takes the next transaction).

    On SQLite, with SQLAlchemy's connection idle, it is the driver connection's own short transaction (BEGIN
    IMMEDIATE, COMMIT or ROLLBACK through the driver's public interface), begun and ended here while SQLAlchemy
    holds no transaction on the connection: SQLAlchemy's transaction around a few direct statements (its begin,
    commit and events) costs more than they do, once per relay round. A Core statement inside would make
    SQLAlchemy begin a transaction of its own, which SQLite refuses: use the direct statements. Elsewhere it is
    `conn.begin()`."""
    driver = _idle_driver(conn)
    if driver is None:
        try:
            async with conn.begin():
                yield
        except BaseException:
            await _end_failed_commit(conn)
            raise
        return
    await driver.execute("BEGIN IMMEDIATE")
    try:
        yield
        if driver.in_transaction:
            try:
                await driver.commit()
            except sqlite3.Error as e:
                raise _as_core_error(e, "COMMIT", ()) from e
    except BaseException:
        if driver.in_transaction:
            await driver.rollback()
        raise


def _idle_driver(conn: AsyncConnection) -> Any | None:
    """The SQLite driver connection under `conn` when neither SQLAlchemy nor the driver has a transaction open."""
    if conn.dialect.driver not in _DIRECT_DRIVERS or conn.sync_connection is None or conn.in_transaction():
        return None
    driver = conn.sync_connection.connection.driver_connection
    return None if driver.in_transaction else driver


async def _end_failed_commit(conn: AsyncConnection) -> None:
    """Roll back what a failed COMMIT left open on a checked-out SQLite connection. SQLite keeps the transaction
    open when COMMIT fails (a deferred foreign key), while SQLAlchemy counts it as ended; left so, it would hold
    the write lock and refuse the connection's next BEGIN. (A connection returned to the pool is rolled back
    there.)"""
    if conn.dialect.driver not in _DIRECT_DRIVERS or conn.sync_connection is None or conn.in_transaction():
        return
    raw = conn.sync_connection.connection.driver_connection
    if raw.in_transaction:
        await raw.rollback()


async def read_beside(engine: AsyncEngine, factory: async_sessionmaker[AsyncSession], query: FixedQuery) -> list[Any]:
    """The rows of `query`; on a SQLite file read on a read-only connection of its own, in a worker thread, and
    elsewhere through a session of `factory`.

    For reads that scan (a metrics gauge over every case): on the service's one SQLite connection such a read holds
    up every batch and request queued for it (a GROUP BY over 100 000 cases: ~6 ms, longer as the table grows) and
    runs on the event loop. In WAL mode a reader beside the writer blocks neither."""
    path = engine.url.database
    if not is_sqlite(str(engine.url)) or not path or path == ":memory:":
        async with factory() as session:
            return await query.all(session)
    sql = query.sql(engine.dialect)

    def read() -> list[Any]:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_WAIT_S, check_same_thread=False)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    return await asyncio.to_thread(read)


def insert_of(key: Any) -> Any:
    """A model's or table's INSERT statement, built once (an executemany key for `executemany`)."""
    if key not in _INSERTS:
        table = getattr(key, "__table__", key)
        _INSERTS[key] = insert(table)
        _PLAIN_INSERTS[_INSERTS[key]] = table
    return _INSERTS[key]


async def flush_deferred(session: AsyncSession) -> None:
    """Run the `at_commit` callbacks, then insert the rows `add_row` / `defer_rows` queued, one executemany per
    table, in the order the tables were first used."""
    calls = session.info.pop(_AT_COMMIT, None)
    if calls:
        conn = await connection_of(session)
        for fn in calls.values():
            await fn(conn)
    queued = session.info.pop(_DEFERRED, None)
    if not queued:
        return
    conn = await connection_of(session)  # executemany, without the ORM session's per-statement work
    for key, rows in queued.items():
        await executemany(conn, key if isinstance(key, Insert) else insert_of(key), rows)


class FixedQuery:
    """A read without parameters, compiled once per dialect and run as its SQL text.

    SQLAlchemy builds, keys and looks up a statement's compiled form on every execution; for a statement of
    several subqueries that per-execution work cost more than the query itself on a one-message batch. Rows
    come back as the driver returns them (no result type processing): use it for counts, sums and plain
    columns."""

    def __init__(self, statement: Any) -> None:
        self._statement = statement
        self._sql: dict[str, str] = {}

    def sql(self, dialect: Any) -> str:
        sql = self._sql.get(dialect.name)
        if sql is None:
            sql = self._sql[dialect.name] = str(
                self._statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        return sql

    async def one(self, session: AsyncSession) -> Any:
        rows = await self.all(session)
        if len(rows) != 1:
            raise (sa_exc.NoResultFound if not rows else sa_exc.MultipleResultsFound)(
                f"{len(rows)} rows where exactly one was required")
        return rows[0]

    async def all(self, session: AsyncSession) -> list[Any]:
        conn = await connection_of(session)
        sql = self.sql(conn.dialect)
        raw = _driver_in_transaction(conn)
        if raw is None:
            return list((await conn.exec_driver_sql(sql)).all())
        try:
            return list(await raw.execute_fetchall(sql))
        except sqlite3.Error as e:
            raise _as_core_error(e, sql, ()) from e


async def connection_of(session: AsyncSession) -> AsyncConnection:
    """The connection of the session's transaction: for statements run with `executemany`, `fetch_all` or Core."""
    return await session.connection()


def transaction_scope(session: AsyncSession) -> Any:
    """What identifies the session's innermost transaction (a savepoint, or the session's transaction), with
    `is_active`: for state kept per transaction, such as what a batch decided."""
    sync = session.sync_session
    nested = sync.get_nested_transaction()
    return nested if nested is not None else sync.get_transaction()


@asynccontextmanager
async def transaction(
    factory: async_sessionmaker[AsyncSession], *, connection: AsyncConnection | None = None
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on error (rows queued by `add_row` go in first).
    With `connection`, the transaction runs on that checked-out connection, which stays checked out after it."""
    if connection is None:
        async with factory() as session, session.begin():
            yield session
            await flush_deferred(session)
        return
    try:
        async with factory(bind=connection) as session, session.begin():
            yield session
            await flush_deferred(session)
    except BaseException:
        await _end_failed_commit(connection)
        raise


def run_migrations(url: str, script_location: str) -> None:
    """Apply the service's Alembic migrations up to head (blocking; call from a thread)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


async def migrate(url: str, script_location: str) -> None:
    await asyncio.to_thread(run_migrations, url, script_location)


def migrations_dir(service_file: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(service_file)), "migrations")
