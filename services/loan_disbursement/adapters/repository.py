"""The loan disbursement unit of work: the facilities, loans and ledger of one transaction.

The loan decision state (`ledger.Decisions`: the facility locks held, the values read under them, the cases
decided) lives here, one per transaction or savepoint; a writer of anything it holds other than a loan decision
drops it (`lock_facilities` does). In a batch the decision's rows are queued for the batch's bulk INSERT at
commit; otherwise they run at once."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.services.loan_disbursement.adapters import ledger
from safe_procurement.services.loan_disbursement.adapters.tables import (
    CaseWithdrawalRow,
    FacilityRow,
    LoanRequestRow,
    LoanRow,
    PlanLineRow,
)
from safe_procurement.services.loan_disbursement.domain.lifecycle import Advances
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.uow import UnitOfWork


class SqlLedger:
    def __init__(self, session: AsyncSession, *, batch: bool = False) -> None:
        self.session = session
        self.batch = batch
        self._decisions: ledger.Decisions | None = None
        self._batch_cases: list[str] = []

    # --- loan decisions ---------------------------------------------------------------------------------

    def note_batch(self, case_ids: list[str]) -> None:
        """The cases of a batch: their earlier decisions are read with one query, by the first decision."""
        self._batch_cases = list(case_ids)

    @property
    def batch_cases(self) -> list[str]:
        return self._batch_cases

    async def decisions(self) -> ledger.Decisions:
        """This transaction's loan decision state: on first use in a transaction (or savepoint), every facility
        is locked FOR UPDATE in member_state order and read; afterwards the same state, no query."""
        if not ledger.holds(self._decisions, self.session):
            self._decisions = await ledger.load_decisions(self.session)
        assert self._decisions is not None
        return self._decisions

    def forget(self) -> None:
        """Drop the decision state (after writing something it holds other than a loan decision)."""
        self._decisions = None

    async def insert(self, table: Any, rows: list[dict[str, Any]]) -> None:
        """Core rows of a decision, in foreign-key order: with the batch's bulk INSERT, or at once."""
        if self.batch:
            db.defer_rows(self.session, table, rows)
        else:
            await db.executemany((await self.decisions()).conn, db.insert_of(table), rows)

    # --- facilities ---------------------------------------------------------------------------------------

    async def lock_facilities(self, member_states: Iterable[str] | None = None) -> dict[str, FacilityRow]:
        self.forget()
        return await ledger.lock_facilities(self.session, member_states)

    async def all_facilities(self) -> dict[str, FacilityRow]:
        """Every facility, for seeding (two replicas starting together seed one after the other)."""
        if self.session.bind is not None and self.session.bind.dialect.name == "postgresql":
            await self.session.execute(text("SELECT pg_advisory_xact_lock(727275)"))
        return {r.member_state: r for r in (await self.session.exec(select(FacilityRow))).all()}

    async def advances(self, facility: FacilityRow) -> Advances:
        return await ledger.advances(self.session, facility)

    async def plan_lines(self, member_state: str) -> dict[str, Decimal]:
        return (await ledger.plan_lines(self.session, [member_state])).get(member_state, {})

    async def replace_plan(self, member_state: str, lines: dict[str, Decimal]) -> None:
        await self.session.execute(delete(PlanLineRow).where(col(PlanLineRow.member_state) == member_state))
        self.session.add_all(PlanLineRow(member_state=member_state, category=cat, amount_eur=amount)
                             for cat, amount in lines.items())

    # --- loans and cases ----------------------------------------------------------------------------------

    async def loan(self, loan_id: str) -> LoanRow | None:
        return await self.session.get(LoanRow, loan_id)

    async def reread(self, row: Any) -> None:
        """Read a row again (under a lock just taken)."""
        await self.session.refresh(row)

    async def active_loans(self, case_id: str) -> list[LoanRow]:
        return list((await self.session.exec(
            select(LoanRow).where(LoanRow.case_id == case_id, LoanRow.status == "active")
            .order_by(col(LoanRow.member_state))
        )).all())

    async def instalments_paid(self, loan_id: str) -> Decimal:
        return await ledger.instalments_paid(self.session, loan_id)

    async def cleared_on_loan(self, loan_id: str) -> Decimal:
        return await ledger.cleared_on_loan(self.session, loan_id)

    async def request(self, case_id: str) -> LoanRequestRow | None:
        return await self.session.get(LoanRequestRow, case_id)

    async def withdrawal(self, case_id: str) -> CaseWithdrawalRow | None:
        return await self.session.get(CaseWithdrawalRow, case_id)

    # --- writes -------------------------------------------------------------------------------------------

    def add(self, *rows: Any) -> None:
        self.session.add_all(rows)

    async def flush(self) -> None:
        await self.session.flush()


class LoanUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, *, batch: bool = False) -> None:
        super().__init__(session, batch=batch)
        self.ledger = SqlLedger(session, batch=batch)
