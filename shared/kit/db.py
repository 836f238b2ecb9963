"""Database engine and sessions (async SQLModel), for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite
from sqlalchemy import event, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.sql.base import Executable
from sqlmodel.ext.asyncio.session import AsyncSession


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


BUSY_WAIT_S = 60.0  # how long a writer waits for another process's write lock before giving up


class _RunNow:
    """Stands in for aiosqlite's queue to its worker thread: runs each call at once, on the caller's thread."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Any]) -> None:
        future, fn = item
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting caller, as aiosqlite's thread does
            if future is not None and not future.done():
                future.set_exception(e)
            return
        if future is not None and not future.done():
            future.set_result(result)


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def _begin_now(raw: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE straight on sqlite3; False if another process holds the write lock (nothing begun: the caller
    takes the path that waits for it asynchronously)."""
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if not _busy(e):
            raise
        return False
    return True


class InlineSQLite(aiosqlite.Connection):
    """aiosqlite's interface without its thread: each call runs on the event loop's thread.

    aiosqlite hands every statement to a worker thread and back (a queue put, a thread wake-up, a
    `call_soon_threadsafe` and GIL hand-offs); `make bench` measured that hop as the largest single cost of a
    consumed message. A local SQLite statement takes microseconds, so running it in place is cheaper than the
    hop. The one call that may wait long, taking the write lock while another process (a replica) holds it,
    does not block the loop: the busy timeout is 0 and the wait is an `asyncio.sleep` with backoff."""

    def __init__(self, path: str) -> None:
        super().__init__(lambda: sqlite3.connect(path, timeout=0, check_same_thread=False), 64)
        self._tx = _RunNow()  # type: ignore[assignment]
        # True while `transaction` holds a transaction it began on sqlite3: SQLAlchemy, beginning its own on this
        # connection (a session's first ORM statement, a savepoint), takes that one over instead of issuing BEGIN
        self.adopt = False

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._connect().__await__()  # no worker thread to start

    async def _execute(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        delay, deadline = 0.0005, time.monotonic() + BUSY_WAIT_S
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as e:
                # Only a statement that changed nothing may be retried: taking the lock (BEGIN IMMEDIATE, or a
                # read outside a transaction) or a COMMIT, which SQLite leaves open on SQLITE_BUSY.
                retry_safe = not self._connection.in_transaction or getattr(fn, "__name__", "") == "commit"
                if not _busy(e) or not retry_safe or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


class Checkpointer(threading.Thread):
    """Moves the WAL into the database file from its own thread and connection.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1 000 WAL pages, and a checkpoint
    fsyncs the database file. With statements on the event loop's thread (InlineSQLite), that stalled the
    whole service: `make bench` saw commits of 0.5 ms at the median and 13–66 ms at the 95th percentile,
    which became every queued message's latency. Here a PASSIVE checkpoint (it never waits for readers or
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
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        inline = _inline_sqlite() and path != ":memory:" and path != ""
        kwargs: dict[str, Any] = {}
        if inline:

            async def connect() -> InlineSQLite:
                return await InlineSQLite(path)

            kwargs["async_creator"] = connect
        # One connection per process: SQLite has a single writer anyway, and every transaction here takes
        # the write lock up front (BEGIN IMMEDIATE below). With several pooled connections, concurrent
        # sessions of the same process queue inside SQLite's busy handler, which sleeps in steps of up to
        # 100 ms; waiting for the one connection in the pool is an asyncio FIFO wait instead (measured by
        # `make bench`: p99 at half load 2.6 s → 0.2 s, saturation +29 %). Other processes on the same
        # file (replicas) still wait in the busy handler. `pool_timeout` matches `busy_timeout`.
        engine = create_async_engine(url, connect_args={"timeout": 60}, pool_size=1, max_overflow=0,
                                     pool_timeout=60, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # The driver must not open transactions itself: we issue BEGIN IMMEDIATE so that a writer
            # takes the write lock up front and concurrent replicas serialize instead of deadlocking.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            # inline: never block the event loop in SQLite's busy handler (InlineSQLite waits asynchronously)
            cur.execute("PRAGMA busy_timeout=0" if inline else "PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            if inline:  # checkpoints run on the Checkpointer's own thread and connection, never in a commit
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            raw = _sqlite_of(conn.connection)
            if raw is not None and raw.in_transaction and conn.connection.driver_connection.adopt:
                return  # begun by `transaction` on sqlite3: SQLAlchemy's transaction is that one
            # straight on sqlite3 (microseconds) rather than through a Core execute (~0.1 ms); only when another
            # process holds the write lock does it take the path that waits asynchronously
            if raw is None or not _begin_now(raw):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        if inline:
            checkpointer = Checkpointer(path, owner=engine.sync_engine)
            checkpointer.start()
            event.listen(engine.sync_engine, "engine_disposed", lambda _engine: checkpointer.stop())
        return engine
    # No pre-ping: it is a round trip before every transaction (measured: 0.49 → 0.88 ms of CPU for a small
    # transaction, nearly doubling the cost of a one-message batch). A connection that died (PostgreSQL
    # restarted) fails its transaction instead; SQLAlchemy then invalidates it, and the failed batch is retried by
    # the message kit (HTTP callers get a 5xx for that one request). `pool_recycle` retires connections before an
    # idle timeout of a proxy in between can cut them.
    return create_async_engine(url, pool_size=pool_size, max_overflow=20, pool_recycle=1800)


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


class Plan(NamedTuple):
    """A statement compiled for the direct path."""

    sql: str
    cols: list[tuple[str, Any, Any]]  # per positional parameter: its name, SQLAlchemy's bind processor, its literal
    binder: Callable[[dict[str, Any]], tuple[Any, ...]]  # a row of parameters → the positional values
    rows: Callable[[list[Any]], list[Any]] | None  # fetched rows → with SQLAlchemy's result processors applied


_PLANS: dict[tuple[Any, tuple[str, ...], tuple[int, ...]], Plan | None] = {}
# a read with a longer list goes through Core (plans are cached per list length: batch sizes, not arbitrary lists)
MAX_PLANNED_LIST = 256


def _sqlite_of(pooled: Any) -> sqlite3.Connection | None:
    """The sqlite3 connection under a pooled connection, if its driver is InlineSQLite (statements on this thread)."""
    driver = getattr(pooled, "driver_connection", None)
    return getattr(driver, "_connection", None) if isinstance(driver, InlineSQLite) else None


def _inline_connection(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `conn` if it is this process's inline SQLite connection inside a transaction."""
    raw = _sqlite_of(conn.sync_connection.connection) if conn.sync_connection is not None else None
    return raw if raw is not None and raw.in_transaction else None


def _plan(statement: Any, keys: tuple[str, ...], dialect: Any, params: dict[str, Any] | None = None) -> Plan | None:
    """The statement's SQL for `dialect`; per positional parameter, its name, SQLAlchemy's bind processor and the
    value it takes when a row does not name it (a literal bound in the statement); a function from a row naming
    exactly `keys` to its positional values, written for this statement and these keys (a generic loop over the
    parameters, a membership test, a processor test and a call each, cost twice as much per row); and one applying
    the result columns' processors to fetched rows, as a Core execute does, when any column has one.

    An expanding parameter (`IN :ids`) is expanded for the lengths of its lists in `params` (the plan is cached per
    lengths); a statement with other values rendered into its SQL at execution is not planned (None)."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    if compiled.positiontup is None or compiled.literal_execute_params:
        return None
    sql, names, procs = compiled.string, compiled.positiontup, dict(compiled._bind_processors)
    element_of: dict[str, tuple[str, int]] = {}
    if compiled.post_compile_params:
        if params is None or not all(b.expanding for b in compiled.post_compile_params):
            return None
        state = compiled.construct_expanded_state(params)
        sql, names = state.statement, state.positiontup or []
        procs.update(state.processors)
        element_of = {k: (name, i) for name, ks in state.parameter_expansion.items() for i, k in enumerate(ks)}
    cols = [(name, _faster(procs.get(name), compiled.binds.get(name), dialect),
             compiled.binds[name].effective_value if name in compiled.binds else None)
            for name in names]
    results = [rc.type._cached_result_processor(dialect, None) for rc in compiled._result_columns]
    return Plan(sql, cols, _row_binder(cols, keys, element_of), _rows_converter(results) if any(results) else None)


def _row_binder(cols: list[tuple[str, Any, Any]], keys: tuple[str, ...],
                element_of: dict[str, tuple[str, int]] | None = None) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """`lambda r: (p0(r['a']), r['b'], d2, p3(r['ids'][0]), …)` for these parameters: processed, passed as they are,
    the statement's literal, or an element of an expanding parameter's list. Built from the statement's own
    parameter names (never from values)."""
    env: dict[str, Any] = {}
    parts = []
    for i, (name, proc, default) in enumerate(cols):
        if element_of and name in element_of:
            source = f"r[{element_of[name][0]!r}][{element_of[name][1]}]"
        elif name in keys:
            source = f"r[{name!r}]"
        else:
            env[f"d{i}"] = default
            parts.append(f"d{i}")
            continue
        if proc is not None:
            env[f"p{i}"] = proc
            source = f"p{i}({source})"
        parts.append(source)
    return eval(f"lambda r: ({''.join(part + ', ' for part in parts)})", env)  # noqa: S307


def _rows_converter(procs: list[Any]) -> Callable[[list[Any]], list[Any]]:
    """`lambda rows: [(p0(t[0]), t[1], …) for t in rows]`: the result processors, where a column has one."""
    env = {f"p{i}": proc for i, proc in enumerate(procs) if proc is not None}
    parts = "".join(f"p{i}(t[{i}]), " if proc is not None else f"t[{i}], " for i, proc in enumerate(procs))
    return eval(f"lambda rows: [({parts}) for t in rows]", env)  # noqa: S307


_SQLITE_DATETIME_FORMAT = sqlite_dialect.DATETIME._storage_format


def _faster(proc: Any, bind: Any, dialect: Any) -> Any:
    """SQLite's DATETIME bind processor fills a %-format from a dict of the value's fields (~2 µs, a few per row);
    `isoformat` writes the same text in C. Only for SQLAlchemy's own DATETIME with its default storage format
    (what `TS` is), and only for exact `datetime` values; anything else goes through the original processor."""
    if proc is None or bind is None or dialect.name != "sqlite":
        return proc
    impl = bind.type.dialect_impl(dialect)
    if type(impl) is not sqlite_dialect.DATETIME or impl._storage_format != _SQLITE_DATETIME_FORMAT:
        return proc

    def process(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is datetime:  # "YYYY-MM-DD HH:MM:SS.ffffff", the offset (ignored by SQLAlchemy too) cut off
            return value.isoformat(" ", "microseconds")[:26]
        return proc(value)

    return process


def _cached_plan(conn: AsyncConnection, statement: Any, params: dict[str, Any], *, expand: bool = False
                 ) -> Plan | None:
    """The plan of `statement` for parameters named as `params`; with `expand`, for lists of these lengths."""
    keys = tuple(params)
    sizes = tuple(len(v) for v in params.values() if type(v) is list) if expand else ()
    if sizes and max(sizes) > MAX_PLANNED_LIST:
        return None
    key = (statement, keys, sizes)
    if key not in _PLANS:
        _PLANS[key] = _plan(statement, keys, conn.dialect, params if expand else None)
    return _PLANS[key]


def _bound(sql: str, binder: Callable[[dict[str, Any]], tuple[Any, ...]], rows: list[dict[str, Any]]
           ) -> list[tuple[Any, ...]]:
    """Each row's positional values, converted by the bind processors (a refused value raised as Core does)."""
    try:
        return [binder(r) for r in rows]
    except Exception as e:  # a bind processor refused a value (e.g. a float for money), as Core reports it
        raise sa_exc.StatementError(str(e), sql, None, e) from e


@contextmanager
def _as_core_errors(sql: str, params: Any) -> Iterator[None]:
    """sqlite3's errors as SQLAlchemy's, as a Core execute raises them."""
    try:
        yield
    except sqlite3.IntegrityError as e:
        raise sa_exc.IntegrityError(sql, params, e) from e
    except sqlite3.Error as e:
        raise sa_exc.OperationalError(sql, params, e) from e


async def executemany(conn: AsyncConnection, statement: Any, rows: list[dict[str, Any]]) -> None:
    """Run `statement` once per row (an executemany of INSERTs or UPDATEs; nothing returned).

    On this process's inline SQLite connection the statement is compiled once and sqlite3 runs it directly, the
    values converted by SQLAlchemy's own bind processors (the same text a Core execute writes): the async
    adaptation layers of a Core execute (greenlet hops, the aiosqlite cursor, the execution context) cost
    ~0.3 ms per statement, several times the statement itself, and a batch runs several. Constraint violations
    are raised as SQLAlchemy's IntegrityError, as a Core execute would. Elsewhere (PostgreSQL, the threaded
    SQLite driver) it is a Core execute. Statement-level SQLAlchemy events do not see the direct path."""
    raw = _inline_connection(conn) if rows else None
    if raw is not None:
        keys = tuple(rows[0])
        plan = _cached_plan(conn, statement, rows[0])
        if plan is not None and all(tuple(r) == keys for r in rows):  # else Core reports a missing value
            params = _bound(plan.sql, plan.binder, rows)
            with _as_core_errors(plan.sql, params[0]):
                raw.executemany(plan.sql, params)
            return
    await conn.execute(statement, rows)


def fetch_inline(conn: AsyncConnection, statement: Any, params: dict[str, Any]) -> list[Any] | None:
    """Run `statement` straight on this process's inline SQLite connection, inside its transaction, and return its
    rows as tuples, each column converted by its type's result processor as a Core execute does; None when `conn`
    is not that (PostgreSQL, the threaded driver, no transaction), and the caller runs it through SQLAlchemy.
    An expanding parameter (`IN :ids`) takes a list.

    Compiled once per statement, parameter names and list lengths, the values converted by SQLAlchemy's bind
    processors, as in `executemany`: for a small statement run once per batch, SQLAlchemy's execution path
    (greenlet hops, the execution context, the cursor adaptation, the result's row objects) costs several times
    the statement itself."""
    raw = _inline_connection(conn)
    if raw is None:
        return None
    plan = _cached_plan(conn, statement, params, expand=True)
    if plan is None:
        return None
    [values] = _bound(plan.sql, plan.binder, [params])
    with _as_core_errors(plan.sql, values):
        rows = raw.execute(plan.sql, values).fetchall()
    return rows if plan.rows is None else plan.rows(rows)


async def fetch_all(conn: AsyncConnection, statement: Any, params: dict[str, Any]) -> list[Any]:
    """The rows of `statement` (tuples on the direct path, SQLAlchemy's rows elsewhere: unpack or index them):
    `fetch_inline` where it applies, a Core execute otherwise."""
    rows = fetch_inline(conn, statement, params)
    return rows if rows is not None else list((await conn.execute(statement, params)).all())


@asynccontextmanager
async def short_transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    """`conn.begin()` for a few Core statements; on this process's inline SQLite connection, BEGIN IMMEDIATE and
    COMMIT (or ROLLBACK) straight on sqlite3: SQLAlchemy's transaction around them (greenlet hops, its events)
    costs more than they do. Inside, run statements with `executemany` / `fetch_inline`, which take the direct path
    too: SQLAlchemy does not know of this transaction, and a Core execute would try to begin its own. When
    another process holds the write lock, it takes SQLAlchemy's path, which waits for it asynchronously."""
    driver = _begin_inline(conn)
    if driver is None:
        async with conn.begin():
            yield
        return
    async with _begun_on_sqlite3(driver):
        yield


def _begin_inline(connection: AsyncConnection | None) -> InlineSQLite | None:
    """The InlineSQLite driver under `connection`, with BEGIN IMMEDIATE just run on its sqlite3 connection; None if
    it is not that driver, SQLAlchemy or sqlite3 already has a transaction open on it, or another process holds the
    write lock (the caller then takes SQLAlchemy's path, which waits for it asynchronously)."""
    if connection is None or connection.sync_connection is None or connection.in_transaction():
        return None
    driver = connection.sync_connection.connection.driver_connection
    raw = driver._connection if isinstance(driver, InlineSQLite) else None
    if raw is None or raw.in_transaction or not _begin_now(raw):
        return None
    return driver


@asynccontextmanager
async def _begun_on_sqlite3(driver: InlineSQLite) -> AsyncIterator[None]:
    """The body of a transaction begun straight on the driver's sqlite3 connection: COMMIT after it (unless the body
    ended the transaction itself), on this thread, a busy COMMIT waited for; ROLLBACK if the body or the COMMIT
    fails (a failed COMMIT leaves the transaction open), so the connection takes the next one."""
    raw = driver._connection
    assert raw is not None
    try:
        yield
        if raw.in_transaction:
            with _as_core_errors("COMMIT", ()):
                await driver.commit()
    except BaseException:
        if raw.in_transaction:
            raw.rollback()
        raise


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
        _INSERTS[key] = insert(getattr(key, "__table__", key))
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
        await executemany(conn, key if isinstance(key, Executable) else insert_of(key), rows)


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
        """The rows; on this process's inline SQLite connection straight on sqlite3 (as `fetch_inline`)."""
        conn = await connection_of(session)
        sql = self.sql(conn.dialect)
        raw = _inline_connection(conn)
        if raw is not None:
            with _as_core_errors(sql, ()):
                return raw.execute(sql).fetchall()
        return list((await conn.exec_driver_sql(sql)).all())


_RAW_TX = "safe.raw_transaction"


class RawTransaction:
    """A `transaction` begun and ended straight on sqlite3 (see there); the scope of per-transaction state."""

    __slots__ = ("conn", "is_active")

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.is_active = True


async def connection_of(session: AsyncSession) -> AsyncConnection:
    """The connection of the session's transaction: for statements run with `executemany`, `fetch_inline`,
    `fetch_all` or Core. Inside a `transaction` begun on sqlite3 it is that transaction's connection, without
    making SQLAlchemy begin one of its own (which `session.connection()` would: ~0.1 ms)."""
    tx = session.info.get(_RAW_TX)
    if tx is not None and tx.is_active:
        return tx.conn  # type: ignore[no-any-return]
    return await session.connection()


def transaction_scope(session: AsyncSession) -> Any:
    """What identifies the session's innermost transaction (a savepoint, the transaction `transaction` began on
    sqlite3, or SQLAlchemy's), with `is_active`: for state kept per transaction, such as what a batch decided."""
    sync = session.sync_session
    nested = sync.get_nested_transaction()
    if nested is not None:
        return nested
    tx = session.info.get(_RAW_TX)
    return tx if tx is not None and tx.is_active else sync.get_transaction()


@asynccontextmanager
async def transaction(
    factory: async_sessionmaker[AsyncSession], *, connection: AsyncConnection | None = None
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on error (rows queued by `add_row` go in first).
    With `connection`, the transaction runs on that checked-out connection, which stays checked out after it.

    With a `connection` of this process's inline SQLite driver (the message kit's batches, the intake's group
    commit), BEGIN IMMEDIATE and COMMIT go straight to sqlite3, and the session only takes part if it is used: an
    ORM statement, a flush or a savepoint makes SQLAlchemy begin its transaction, which takes over the one begun
    (the engine's begin event), and the end is then SQLAlchemy's commit or rollback. A batch whose statements all
    ran with `executemany` / `fetch_inline` / `FixedQuery` on `connection_of(session)` never enters SQLAlchemy's
    transaction machinery, whose begin, commit and close cost ~0.3 ms, several times what such a batch's own
    statements cost. When another process holds the write lock, it takes SQLAlchemy's path, which waits for it
    asynchronously."""
    driver = _begin_inline(connection)
    if driver is None:
        session_of = factory() if connection is None else factory(bind=connection)
        async with session_of as session, session.begin():
            yield session
            await flush_deferred(session)
        return
    assert connection is not None
    session = factory(bind=connection)
    tx = session.info[_RAW_TX] = RawTransaction(connection)
    driver.adopt = True
    used = False  # whether SQLAlchemy's session took part (it then commits or rolls back, and is closed)
    try:
        async with _begun_on_sqlite3(driver):  # commits what SQLAlchemy did not
            try:
                yield session
                await flush_deferred(session)
                used = session.in_transaction() or bool(session.new or session.dirty or session.deleted)
                if used:
                    await session.commit()  # flushes what is pending, then commits the transaction it took over
            except BaseException:
                if session.in_transaction():
                    used = True
                    await session.rollback()
                raise
    finally:
        tx.is_active = False
        driver.adopt = False
        if used:
            await session.close()


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
