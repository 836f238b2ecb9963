"""The tamper-evident audit chain: every `audit_log` entry carries the SHA-256 of the entry before it.

Each entry gets, as it is inserted, a gap-free `seq`, the previous entry's `hash` as `prev_hash`, and its own
`hash` = SHA-256 over a canonical JSON form of its fields and `prev_hash`. Editing an entry breaks its hash,
deleting one leaves a gap in `seq`, moving one breaks the `prev_hash` link. Whoever rewrites a whole chain
consistently is caught by the anchors: each service publishes its chain head to `audit.anchors` and the other
services keep what they receive (`AuditAnchor` rows), so an old head that no longer matches shows the rewrite.

Two writers must never fork the chain: the head is read under a lock held until the transaction ends
(PostgreSQL: a transaction-level advisory lock per schema; SQLite: the kit begins every write transaction with
BEGIN IMMEDIATE, so the writer already holds the database's write lock), and `seq` is unique as a last guard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, object_session
from sqlmodel import Field, SQLModel

from safe_procurement.shared.kit.tables import TS, AuditEntry, utcnow

GENESIS = "0" * 64
_HEAD = "safe.audit_chain.head"
_VERIFY_CHUNK = 1000


class AuditAnchor(SQLModel, table=True):
    """A chain head another service published on `audit.anchors`, kept here as a witness."""

    __tablename__ = "audit_anchors"
    id: int | None = Field(default=None, primary_key=True)
    service: str = Field(index=True)
    seq: int
    hash: str
    published_at: datetime = Field(sa_type=TS)
    received_at: datetime = Field(default_factory=utcnow, sa_type=TS)
    event_id: str = Field(unique=True)


def _utc_text(at: datetime | str) -> str:
    # SQLite hands timestamps back naive (or as text to a raw query): they were stored as UTC, so naive means UTC
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(entry: Any) -> bytes:
    """The bytes an entry's hash covers: sorted keys, no whitespace, UTF-8, timestamps as UTC text."""
    body = {
        "v": 1,
        "seq": entry.seq,
        "prev_hash": entry.prev_hash,
        "at": _utc_text(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "correlation_id": entry.correlation_id,
        "reason": entry.reason,
        "details": entry.details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: Any) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def _read_head(connection: sa.Connection) -> tuple[int, str]:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.audit_log'))")
    row = connection.execute(
        sa.text("SELECT seq, hash FROM audit_log WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1")
    ).first()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


@event.listens_for(AuditEntry, "before_insert")
def _chain(_mapper: Any, connection: sa.Connection, target: AuditEntry) -> None:
    session = object_session(target)
    info = session.info if session is not None else connection.info
    head = info.get(_HEAD) or _read_head(connection)
    target.seq = head[0] + 1
    target.prev_hash = head[1]
    if target.at is None:
        target.at = utcnow()
    target.hash = entry_hash(target)
    info[_HEAD] = (target.seq, target.hash)


@event.listens_for(Session, "after_transaction_end")
def _forget_head(session: Session, _transaction: Any) -> None:
    # the head is cached only within one flush's inserts; a later flush or a rolled-back savepoint reads it again
    session.info.pop(_HEAD, None)


# --- verification ---------------------------------------------------------------------------------


@dataclass
class Break:
    seq: int
    id: int | None
    problem: str  # edited | deleted | re-ordered | unchained | anchor-mismatch | truncated
    detail: str


@dataclass
class Verdict:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    first_break: Break | None = None
    anchors_checked: int = 0
    checked_at: datetime = field(default_factory=utcnow)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checked_at"] = self.checked_at.isoformat()
        return d


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    published_at: datetime | None = None


def walk(rows: Iterable[Any], verdict: Verdict, state: dict[str, Any]) -> bool:
    """Check `rows` (in seq order) against the state of the walk so far; False at the first break."""
    for row in rows:
        verdict.entries += 1
        if row.seq is None:
            verdict.first_break = Break(0, row.id, "unchained", f"entry id {row.id} has no place in the chain")
            return False
        want = state["seq"] + 1
        if row.seq != want:
            verdict.first_break = Break(want, None, "deleted",
                                        f"entry {want} is missing (the next present is {row.seq})")
            return False
        if row.prev_hash != state["hash"]:
            verdict.first_break = Break(row.seq, row.id, "re-ordered",
                                        f"entry {row.seq} does not follow entry {state['seq']}: prev_hash "
                                        f"{row.prev_hash} != {state['hash']}")
            return False
        if row.hash != entry_hash(row):
            verdict.first_break = Break(row.seq, row.id, "edited",
                                        f"entry {row.seq} was changed after it was written (its hash no longer matches)")
            return False
        if state["id"] is not None and row.id is not None and row.id < state["id"]:
            verdict.first_break = Break(row.seq, row.id, "re-ordered",
                                        f"entry {row.seq} has id {row.id}, lower than entry {state['seq']}'s {state['id']}")
            return False
        state.update(seq=row.seq, hash=row.hash, id=row.id)
        if row.seq in state["anchors"]:
            state["anchors_seen"] += 1
            a = state["anchors"][row.seq]
            if a.hash != row.hash:
                verdict.first_break = Break(row.seq, row.id, "anchor-mismatch",
                                            f"entry {row.seq}'s hash differs from the head published on "
                                            f"{a.published_at or 'an anchor'}: the chain was rewritten")
                return False
    return True


async def verify(session: Any, anchors: Iterable[Anchor] = ()) -> Verdict:
    """Walk the whole chain of this database (in chunks), and check it against published `anchors`."""
    by_seq = {a.seq: a for a in anchors}
    verdict = Verdict(ok=True, entries=0, head_seq=0, head_hash=GENESIS)
    state: dict[str, Any] = {"seq": 0, "hash": GENESIS, "id": None, "anchors": by_seq, "anchors_seen": 0}
    unchained = (await session.execute(
        sa.select(AuditEntry.id).where(AuditEntry.seq.is_(None)).order_by(AuditEntry.id).limit(1)  # type: ignore[union-attr,attr-defined]
    )).first()
    after = 0
    ok = True
    while ok:
        rows = (await session.execute(
            sa.select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(_VERIFY_CHUNK)  # type: ignore[operator,arg-type]
        )).scalars().all()
        if not rows:
            break
        ok = walk(rows, verdict, state)
        after = rows[-1].seq
    verdict.head_seq, verdict.head_hash = state["seq"], state["hash"]
    verdict.anchors_checked = state["anchors_seen"]
    if ok and unchained is not None:
        verdict.first_break = Break(0, unchained[0], "unchained",
                                    f"entry id {unchained[0]} has no place in the chain (inserted around it)")
        ok = False
    if ok:
        beyond = [a for a in by_seq.values() if a.seq > state["seq"]]
        if beyond:
            a = min(beyond, key=lambda x: x.seq)
            verdict.first_break = Break(state["seq"] + 1, None, "truncated",
                                        f"entry {a.seq} was published as a head on {a.published_at or 'an anchor'} "
                                        f"but the chain ends at {state['seq']}: entries were deleted from its end")
            verdict.anchors_checked += 1
            ok = False
    verdict.ok = ok
    return verdict


async def head(session: Any) -> tuple[int, str]:
    row = (await session.execute(
        sa.select(AuditEntry.seq, AuditEntry.hash).where(AuditEntry.seq.is_not(None))  # type: ignore[union-attr]
        .order_by(AuditEntry.seq.desc()).limit(1)  # type: ignore[union-attr]
    )).first()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


# --- migration --------------------------------------------------------------------------------------


def migrate_up() -> None:
    """Alembic body (each service's `0003_i25_audit_chain`): the chain columns, existing entries chained in id
    order, and the table of anchors kept for the other services."""
    from alembic import op

    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    op.create_index("uq_audit_log_seq", "audit_log", ["seq"], unique=True)
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT id, at, actor, action, target, correlation_id, reason, details FROM audit_log ORDER BY id"
    )).mappings().all()
    prev = GENESIS
    for seq, r in enumerate(rows, start=1):
        entry = AuditEntry(**{**dict(r), "seq": seq, "prev_hash": prev})
        h = entry_hash(entry)
        conn.execute(sa.text("UPDATE audit_log SET seq = :seq, prev_hash = :prev, hash = :h WHERE id = :id"),
                     {"seq": seq, "prev": prev, "h": h, "id": r["id"]})
        prev = h
    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_audit_anchors_service", "audit_anchors", ["service", "seq"])


def migrate_down() -> None:
    from alembic import op

    op.drop_table("audit_anchors")
    op.drop_index("uq_audit_log_seq", "audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
