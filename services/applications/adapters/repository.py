"""Storage of the applications service: cases, their timelines and proposal revisions, and its unit of work.

Cases are read and written with Core statements into `Case` objects. Through the ORM (identity map, change
tracking, flush) loading and saving one case cost about 1 ms of CPU, more than the rest of a one-message batch;
this way about 0.3 ms (tests/bench/batchcost). In a batch transaction (the message kit's, the intake's) the
repository loads a batch's cases with one query, keeps the cases the batch changed, and writes them with one
executemany just before the commit; a new case and its participants go in with the batch's bulk INSERTs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, delete, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm.attributes import set_attribute
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.applications.adapters.tables import (
    CaseParticipant,
    CaseRow,
    ProposalRevisionRow,
    TimelineRow,
)
from safe_procurement.services.applications.domain.case import Status
from safe_procurement.shared.kit.db import (
    add_row,
    at_commit,
    connection_of,
    defer_rows,
    executemany,
    fetch_all,
)
from safe_procurement.shared.kit.tables import utcnow
from safe_procurement.shared.kit.uow import UnitOfWork


@dataclass(eq=False)
class Case:
    """A stored case as the handlers read and change it: the columns of `cases`."""

    seq: int | None  # None: inserted by the batch's commit, not yet
    id: str
    reference: str
    status: str
    lead_member_state: str
    proposal_hash: str
    proposal: str
    financing_requested: bool
    verification: str | None
    verification_request_id: str | None
    loan: str | None
    status_since: datetime
    created_at: datetime
    updated_at: datetime

    @classmethod
    def new(cls, *, id: str, reference: str, lead_member_state: str, proposal: str, financing_requested: bool,
            verification_request_id: str | None) -> Case:
        now = utcnow()
        return cls(seq=None, id=id, reference=reference, status=Status.submitted.value,
                   lead_member_state=lead_member_state, proposal_hash=hashlib.sha256(proposal.encode()).hexdigest(),
                   proposal=proposal, financing_requested=financing_requested, verification=None,
                   verification_request_id=verification_request_id, loan=None, status_since=now, created_at=now,
                   updated_at=now)


_CASES = CaseRow.__table__  # type: ignore[attr-defined]
_INSERTED = [f.name for f in fields(Case) if f.name != "seq"]  # (dataclasses.asdict deep-copies: 3 % of the CPU)
# a new case's participant rows, with the case's seq looked up by its id in the same statement
_PARTICIPANTS = insert(CaseParticipant.__table__).from_select(  # type: ignore[attr-defined]
    ["case_seq", "country"],
    select(_CASES.c.seq, bindparam("p_country", type_=String)).where(_CASES.c.id == bindparam("p_case_id")))
_COLUMNS = tuple(_CASES.c.keys())  # of a row of _LOAD
_LOAD = {key: select(_CASES).where(_CASES.c[key].in_(bindparam("keys", expanding=True))) for key in ("id", "reference")}
# On PostgreSQL the cases a unit of work reads are about to be changed by it: read with their row locks (in one
# order, by seq), so that another transaction changing the same case (an operator's action beside a flow event,
# or another replica) waits for this one's commit and then reads what it wrote, instead of overwriting it with a
# status computed from what it read before. SQLite needs none: each transaction there begins with the write lock.
_LOAD_LOCKED = {key: q.order_by(_CASES.c.seq).with_for_update() for key, q in _LOAD.items()}
_CHANGING = ("status", "status_since", "verification", "verification_request_id", "loan", "updated_at")
_SAVE = update(_CASES).where(_CASES.c.seq == bindparam("b_seq")).values(
    {name: bindparam(f"b_{name}", type_=_CASES.c[name].type) for name in _CHANGING})
_SAVE_IF = update(_CASES).where(_CASES.c.seq == bindparam("b_seq"), _CASES.c.status == bindparam("b_expected")).values(
    {name: bindparam(f"b_{name}", type_=_CASES.c[name].type) for name in _CHANGING})
async def _load(session: AsyncSession, keys: list[str], by: str = "id") -> dict[str, Case]:
    """The cases whose `by` column ("id" or "reference") is one of `keys`, by that value."""
    conn = await connection_of(session)
    rows = await fetch_all(conn, (_LOAD_LOCKED if conn.dialect.name == "postgresql" else _LOAD)[by], {"keys": keys})
    cases = [Case(**dict(zip(_COLUMNS, row, strict=True))) for row in rows]
    return {getattr(case, by): case for case in cases}


async def _save_changed(conn: AsyncConnection, changed: dict[int | None, tuple[Case, str | None]]) -> None:
    plain = [(seq, c) for seq, (c, expected) in changed.items() if expected is None]
    guarded = [(seq, c, expected) for seq, (c, expected) in changed.items() if expected is not None]
    if plain:
        await executemany(conn, _SAVE, [{"b_seq": seq, **{f"b_{n}": getattr(c, n) for n in _CHANGING}}
                                        for seq, c in plain])
    if guarded:
        await executemany(conn, _SAVE_IF, [{"b_seq": seq, "b_expected": expected,
                                            **{f"b_{n}": getattr(c, n) for n in _CHANGING}}
                                           for seq, c, expected in guarded])


class SqlCaseRepository:
    def __init__(self, session: AsyncSession, *, batch: bool = False) -> None:
        self.session = session
        self.batch = batch
        self._by_id: dict[str, Case] = {}
        self._by_reference: dict[str, Case | None] = {}
        self._changed: dict[int | None, tuple[Case, str | None]] = {}

    async def prefetch(self, case_ids: list[str]) -> None:
        """The cases a batch names, loaded with one query."""
        self._by_id.update(await _load(self.session, sorted(set(case_ids))))

    async def prefetch_references(self, references: list[str]) -> None:
        """The cases, or their absence, of a batch of references, with one query."""
        refs = sorted(set(references))
        found = await _load(self.session, refs, by="reference")
        self._by_reference.update({ref: found.get(ref) for ref in refs})

    async def get(self, case_id: str) -> Case | None:
        if case_id in self._by_id:
            return self._by_id[case_id]
        case = (await _load(self.session, [case_id])).get(case_id)
        if case is not None and self.batch:  # later handlers of the batch see its unsaved changes
            self._by_id[case_id] = case
        return case

    async def by_reference(self, reference: str) -> Case | None:
        if reference in self._by_reference:
            return self._by_reference[reference]
        return (await _load(self.session, [reference], by="reference")).get(reference)

    async def add(self, case: Case, countries: list[str]) -> Case | None:
        """Insert a new case and its Member States; None, or the case a concurrent submission of the same
        reference stored first.

        In a batch: no savepoint, no flush and no ORM object; the rows go in with the batch's executemany
        INSERTs at the commit, where a concurrent insert of the same reference fails the commit, and the kit
        redoes the batch message by message (the path below)."""
        if self.batch:
            defer_rows(self.session, _CASES, [{k: getattr(case, k) for k in _INSERTED}])
            defer_rows(self.session, _PARTICIPANTS, [{"p_case_id": case.id, "p_country": c} for c in countries])
            self._by_reference[case.reference] = case
            return None
        row = CaseRow(**{k: getattr(case, k) for k in _INSERTED})
        # the participants get the case's seq when the unit of work inserts the case (relationship)
        set_attribute(row, "participants", [CaseParticipant(country=c) for c in countries])
        try:
            async with self.session.begin_nested():
                self.session.add(row)
                await self.session.flush()
        except IntegrityError:
            existing = await self.by_reference(case.reference)
            if existing is None:
                raise
            return existing
        case.seq = row.seq
        return None

    async def save(self, case: Case, *, expected: str | None = None) -> None:
        """Write a case's changed columns: at once, or in a batch with the batch's other cases, as one
        executemany just before the commit. With `expected`, only if the stored status still is that one (a
        transition that another transaction's commit may have overtaken)."""
        if self.batch:
            earlier = self._changed.get(case.seq)
            self._changed[case.seq] = (case, expected if earlier is None else earlier[1])
            at_commit(self.session, f"applications.cases.{id(self)}", self._save_batch)
        else:
            await _save_changed(await connection_of(self.session), {case.seq: (case, expected)})

    async def _save_batch(self, conn: AsyncConnection) -> None:
        changed, self._changed = self._changed, {}
        await _save_changed(conn, changed)

    async def replace_proposal(self, case: Case, text: str, *, participants: list[str]) -> None:
        """A new proposal for the case (an amendment): its columns and its participant rows."""
        conn = await connection_of(self.session)
        await conn.execute(update(_CASES).where(_CASES.c.id == case.id).values(
            proposal=text, proposal_hash=hashlib.sha256(text.encode()).hexdigest(),
            lead_member_state=case.lead_member_state, financing_requested=case.financing_requested))
        seq = (await conn.execute(select(_CASES.c.seq).where(_CASES.c.id == case.id))).scalar_one()
        parts = CaseParticipant.__table__  # type: ignore[attr-defined]
        await conn.execute(delete(parts).where(col(parts.c.case_seq) == seq))
        await conn.execute(insert(parts), [{"case_seq": seq, "country": c} for c in participants])
        case.proposal = text


class SqlTimeline:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, case_id: str, type_: str, summary: str, *, at: datetime | None = None, event_id: Any = None,
            causation_id: Any = None, service: str) -> None:
        add_row(self.session, TimelineRow, case_id=case_id, type=type_, at=at or utcnow(),
                event_id=str(event_id) if event_id else None,
                causation_id=str(causation_id) if causation_id else None, service=service, summary=summary[:2000])


class SqlRevisions:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def last(self, case_id: str) -> int | None:
        return (await self.session.exec(select(func.max(ProposalRevisionRow.revision))  # type: ignore[no-any-return]
                                        .where(ProposalRevisionRow.case_id == case_id))).one()

    async def add(self, *rows: ProposalRevisionRow) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def of_case(self, case_id: str) -> list[ProposalRevisionRow]:
        return list((await self.session.exec(select(ProposalRevisionRow).where(ProposalRevisionRow.case_id == case_id)
                                             .order_by(col(ProposalRevisionRow.revision)))).all())


class ApplicationsUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, *, batch: bool = False) -> None:
        super().__init__(session, batch=batch)
        self.cases = SqlCaseRepository(session, batch=batch)
        self.timeline = SqlTimeline(session)
        self.revisions = SqlRevisions(session)
