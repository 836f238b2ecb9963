"""Alembic glue shared by every service's `migrations/env.py`, and the kit's own tables."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.engine import Connection

from safe_procurement.shared.kit.db import is_sqlite, make_engine


def run_env() -> None:
    """Body of each service's env.py: online migrations over the async engine."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url") or ""

    def do_run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            # Two replicas starting together must not both migrate.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        context.configure(connection=connection, target_metadata=None, render_as_batch=is_sqlite(url))
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = make_engine(url, pool_size=1)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
            await connection.commit()
        await engine.dispose()

    asyncio.run(main())


def create_kit_tables() -> None:
    """Outbox, inbox, failures, dead letters and audit: the reliability tables every service has."""
    ts = sa.DateTime(timezone=True)
    _create_outbox_and_inbox(ts)
    _create_failures_and_dead_letters(ts)
    _create_audit_log(ts)


def _create_outbox_and_inbox(ts: sa.DateTime) -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("correlation_id", sa.String(100), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("published_at", ts, nullable=True),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("entry_id", sa.String(40), nullable=False),
        sa.Column("processed_at", ts, nullable=False),
    )


def _create_failures_and_dead_letters(ts: sa.DateTime) -> None:
    op.create_table(
        "message_failures",
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("entry_id", sa.String(40), primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("first_failed_at", ts, nullable=False),
        sa.Column("last_failed_at", ts, nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("group_name", sa.String(100), nullable=False),
        sa.Column("entry_id", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=True),
        sa.Column("correlation_id", sa.String(100), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("error_kind", sa.String(40), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_failed_at", ts, nullable=False),
        sa.Column("last_failed_at", ts, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("resolved_at", ts, nullable=True),
        sa.Column("resolved_by", sa.String(100), nullable=True),
        sa.Column("resolution", sa.Text, nullable=True),
        sa.Column("replay_entry_id", sa.String(40), nullable=True),
        sa.UniqueConstraint("stream", "group_name", "entry_id", name="uq_dead_letter_entry"),
    )
    op.create_index("ix_dead_letters_status", "dead_letters", ["status", "id"])
    op.create_index("ix_dead_letters_correlation", "dead_letters", ["correlation_id"])


def _create_audit_log(ts: sa.DateTime) -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", ts, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("correlation_id", sa.String(100), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("details", sa.Text, nullable=True),
    )
    op.create_index("ix_audit_correlation", "audit_log", ["correlation_id"])
