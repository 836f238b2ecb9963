"""`db.executemany` of a plain INSERT: on PostgreSQL the rows of one table go in as one statement (one array per
column); what is stored is exactly what one INSERT per row stores, and a batch whose rows cannot go that way
(a left-out column with a Python-side default) still goes in row by row."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, select, text

from safe_procurement.services.loan_disbursement import main as loans_main
from safe_procurement.services.loan_disbursement.adapters.tables import FacilityRow, LedgerEntry
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.tables import OutboxRow
from tests import dbs


@pytest.fixture
async def engine(tmp_path):
    url = dbs.url(tmp_path, "bulk")
    await db.migrate(url, db.migrations_dir(loans_main.__file__))
    engine = db.make_engine(url)
    yield engine
    await engine.dispose()


def _statements(engine: Any) -> list[tuple[str, bool]]:
    """Every statement the engine sends from now on, with whether it went as an executemany."""
    seen: list[tuple[str, bool]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def record(_conn, _cursor, statement, _params, _context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, executemany))

    return seen


def _outbox_rows(n: int, at: datetime) -> list[dict[str, Any]]:
    return [dict(event_id=f"e{i}", stream="s", event_type="T", correlation_id=f"c{i}", payload=f'{{"n": {i}}}',
                 created_at=at, published_at=None if i % 2 else at) for i in range(n)]


async def test_the_rows_of_a_plain_insert_are_stored_as_one_insert_per_row_stores_them(engine):
    at = datetime(2026, 12, 6, 5, 0, 0, 123456, tzinfo=UTC)
    seen = _statements(engine)
    async with engine.begin() as conn:
        await db.executemany(conn, db.insert_of(OutboxRow), _outbox_rows(5, at))
    inserts = [s for s in seen if s[0].startswith("INSERT INTO outbox")]
    if dbs.on_postgres():  # (on SQLite the kit hands the rows to the driver's executemany, which events do not see)
        assert len(inserts) == 1 and not inserts[0][1] and "unnest" in inserts[0][0]
    async with engine.connect() as conn:
        t = OutboxRow.__table__  # type: ignore[attr-defined]
        stored = (await conn.execute(select(t.c.event_id, t.c.correlation_id, t.c.payload, t.c.created_at,
                                            t.c.published_at).order_by(t.c.id))).all()
    def naive(v: Any) -> Any:  # SQLite returns the UTC time without its zone
        return v.replace(tzinfo=None) if isinstance(v, datetime) else v

    assert [tuple(map(naive, r)) for r in stored] == [tuple(map(naive, r)) for r in [
        (f"e{i}", f"c{i}", f'{{"n": {i}}}', at, None if i % 2 else at) for i in range(5)]]


async def test_money_goes_in_exact_and_a_float_is_still_refused(engine):
    async with db.session_factory(engine)() as s:
        s.add(FacilityRow(member_state="PL", max_eur=Decimal("1000000000.00")))
        await s.commit()
    async with engine.begin() as conn:
        amounts = [Decimal("0.01"), Decimal("12345678901234.99"), Decimal("5.10")]
        rows = [dict(member_state="PL", case_id=f"c{i}", loan_id=None, kind="reservation", amount=a, at=datetime.now(UTC),
                     reason="", requested_on=None, actor="t", event_id=None) for i, a in enumerate(amounts)]
        await db.executemany(conn, db.insert_of(LedgerEntry), rows)
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT amount FROM ledger_entries ORDER BY id"))).scalars().all()
    assert [Decimal(a) / 100 if isinstance(a, int) else a for a in stored] == amounts  # SQLite keeps cents
    with pytest.raises(Exception, match="never float"):
        async with engine.begin() as conn:
            await db.executemany(conn, db.insert_of(LedgerEntry), [
                {**rows[0], "amount": Decimal("1.00")}, {**rows[1], "amount": 1.5}])


@pytest.mark.skipif(not dbs.on_postgres(), reason="the one-statement form is PostgreSQL's")
async def test_a_left_out_column_with_a_python_default_keeps_the_row_by_row_insert(engine):
    """`id` is the server's; a column with a Python-side default (SQLAlchemy `default=`) left out of the rows
    would be filled per row by the row-by-row INSERT and cannot be by the one-statement form."""
    from sqlalchemy import Column, Integer, MetaData, String, Table

    md = MetaData()
    t = Table("with_default", md, Column("id", Integer, primary_key=True), Column("name", String),
              Column("kind", String, default="plain"))
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    seen = _statements(engine)
    async with engine.begin() as conn:
        await db.executemany(conn, db.insert_of(t), [{"name": "a"}, {"name": "b"}])
    assert not any("unnest" in s for s, _ in seen)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT kind FROM with_default"))).scalars().all() == ["plain", "plain"]
