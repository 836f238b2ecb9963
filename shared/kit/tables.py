"""SQLModel mappings of the kit's tables (created by `migrations.create_kit_tables`)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


TS = sa.DateTime(timezone=True)


class OutboxRow(SQLModel, table=True):
    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    event_id: str
    stream: str
    event_type: str
    correlation_id: str
    payload: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    published_at: datetime | None = Field(default=None, sa_type=TS)


class InboxRow(SQLModel, table=True):
    __tablename__ = "inbox"
    event_id: str = Field(primary_key=True)
    stream: str
    entry_id: str
    processed_at: datetime = Field(default_factory=utcnow, sa_type=TS)


class MessageFailure(SQLModel, table=True):
    __tablename__ = "message_failures"
    stream: str = Field(primary_key=True)
    entry_id: str = Field(primary_key=True)
    attempts: int
    error: str
    first_failed_at: datetime = Field(sa_type=TS)
    last_failed_at: datetime = Field(sa_type=TS)


class DeadLetter(SQLModel, table=True):
    __tablename__ = "dead_letters"
    id: int | None = Field(default=None, primary_key=True)
    stream: str
    group_name: str
    entry_id: str
    event_id: str | None = None
    correlation_id: str | None = None
    payload: str
    error: str
    error_kind: str
    attempts: int
    first_failed_at: datetime = Field(sa_type=TS)
    last_failed_at: datetime = Field(sa_type=TS)
    status: str = "open"
    resolved_at: datetime | None = Field(default=None, sa_type=TS)
    resolved_by: str | None = None
    resolution: str | None = None
    replay_entry_id: str | None = None


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=TS)
    actor: str
    action: str
    target: str
    correlation_id: str | None = None
    reason: str | None = None
    details: str | None = None
    # the tamper-evident chain (safe_procurement.shared.kit.audit_chain fills these in as the entry is inserted)
    seq: int | None = Field(default=None, unique=True)
    prev_hash: str | None = None
    hash: str | None = None


from safe_procurement.shared.kit import audit_chain  # noqa: E402,F401  (registers the chaining of AuditEntry inserts)
