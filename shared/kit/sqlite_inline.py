"""SQLite for SQLAlchemy's asyncio extension without a thread: each statement runs on the event loop's thread.

aiosqlite hands every call to a worker thread and back (a queue put, a thread wake-up, a `call_soon_threadsafe`),
and SQLAlchemy's adapted cursor makes three or four such calls per statement (cursor, execute, fetch, close). A
local SQLite statement takes microseconds, less than one such hop; on a loaded machine each hop also waits for
the worker thread to be scheduled: the largest single cost and latency of a consumed message
(docs/performance-history.md). Here the statement runs in place.

Built as SQLAlchemy builds its own asyncio dialects, without reaching into its internals: SQLAlchemy's pysqlite
dialect declared `is_async` and registered with `sqlalchemy.dialects.registry` (how third-party dialects plug
in), and SQLAlchemy's adapter for asyncio drivers (`sqlalchemy.connectors.asyncio.AsyncAdapt_dbapi_connection`,
what its aiosqlite and asyncpg dialects and third-party ones build on), used as it is, around a driver whose async
calls run `sqlite3` in place (`InlineSQLite`, the same interface as aiosqlite's for what the adapter calls). The
one call that may wait long, taking the write lock while another process (a replica) holds it, does
not block the event loop: SQLite's busy timeout is 0 and the wait is an `asyncio.sleep` with backoff."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import pool
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

DRIVER = "safeinline"
BUSY_WAIT_S = 60.0  # how long a call waits for another process's write lock before giving up


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


class InlineSQLite:
    """The driver connection: a `sqlite3.Connection` with aiosqlite's async interface for what the kit uses
    (`execute`, `executemany`, `execute_fetchall`, `commit`, `rollback`, `in_transaction`,
    `set_trace_callback`), each call run in place."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, waited for asynchronously while another process holds the write lock, where a retry is safe:
        a statement outside a transaction (BEGIN IMMEDIATE, a read) or a COMMIT (which SQLite leaves open when
        busy). Inside a transaction this connection already holds the lock."""
        delay, deadline = 0.0005, time.monotonic() + BUSY_WAIT_S
        while True:
            retry_safe = not self.connection.in_transaction or fn == self.connection.commit
            try:
                return fn(*args)
            except sqlite3.OperationalError as e:
                if not _busy(e) or not retry_safe or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        return await self.call(self.connection.execute, sql, parameters)  # type: ignore[no-any-return]

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> None:
        await self.call(self.connection.executemany, sql, parameters)

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return await self.call(lambda: self.connection.execute(sql, parameters).fetchall())  # type: ignore[no-any-return]

    async def commit(self) -> None:
        await self.call(self.connection.commit)

    async def set_trace_callback(self, fn: Callable[[str], Any] | None) -> None:
        self.connection.set_trace_callback(fn)

    async def rollback(self) -> None:
        self.connection.rollback()

    async def close(self) -> None:
        self.connection.close()

    def cursor(self) -> _Cursor:
        return _Cursor(self)


class _Cursor:
    """sqlite3's cursor with the async interface of an asyncio driver's cursor, each call run in place."""

    def __init__(self, driver: InlineSQLite) -> None:
        self.driver = driver
        self.cursor = driver.connection.cursor()

    async def __aenter__(self) -> _Cursor:
        return self

    @property
    def description(self) -> Any:
        return self.cursor.description

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self.cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self.cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self.cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> Any:
        return await self.driver.call(self.cursor.execute, sql, parameters)

    async def executemany(self, sql: str, parameters: Any) -> Any:
        return await self.driver.call(self.cursor.executemany, sql, parameters)

    async def fetchone(self) -> Any:
        return self.cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self.cursor.fetchmany(self.cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self.cursor.fetchall()

    async def close(self) -> None:
        self.cursor.close()


def _connect(*args: Any, **kwargs: Any) -> AsyncAdapt_dbapi_connection:
    kwargs["check_same_thread"] = False  # the pool may close it from the garbage collector's thread
    kwargs["timeout"] = 0  # never wait in SQLite's busy handler, which would block the event loop
    kwargs["isolation_level"] = None  # sqlite3 opens no transaction itself: SQLAlchemy's begin event does
    return AsyncAdapt_dbapi_connection(_dbapi, InlineSQLite(sqlite3.connect(*args, **kwargs)))


# sqlite3's module (its exceptions, constants, version) with `connect` giving the adapted connection
_dbapi = types.ModuleType(f"sqlite3_{DRIVER}")
_dbapi.__dict__.update({k: v for k, v in vars(sqlite3).items() if not k.startswith("__")})
_dbapi.connect = _connect  # type: ignore[attr-defined]


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    """SQLAlchemy's pysqlite dialect, usable by the asyncio extension (`sqlite+safeinline://`)."""

    driver = DRIVER
    is_async = True
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return _dbapi

    @classmethod
    def get_pool_class(cls, url: Any) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool

    def get_driver_connection(self, connection: Any) -> Any:
        return connection.driver_connection

    def on_connect(self) -> Any:
        register = super().on_connect()  # SQL functions (regexp, floor) registered on the sqlite3 connection
        return lambda adapted: register(adapted.driver_connection.connection)


registry.register(f"sqlite.{DRIVER}", __name__, "InlineSQLiteDialect")
