"""Loan decisions, withdrawals, facility changes and payments decided on two real connections at once (PostgreSQL).

Every writer of the loan disbursement service reads what it decides on (a case's decision or withdrawal, a
facility's status and balances, a plan's remainder, a loan's instalments) only after it has locked facility rows
FOR UPDATE (decision 0009): stream handlers lock every facility, operator requests the one concerned. So of two
transactions touching the same case or facility, the second waits for the first to commit and then reads what it
wrote. Each test holds the first transaction open after its decision, starts the second, waits until the second
is blocked on a lock (or done), commits the first, and checks that the second decided on what the first wrote.
Without the locks each of these ends wrong: a withdrawal that releases nothing beside a reservation that is never
released, a loan approved on a suspended facility or beyond a narrowed plan, a payment beyond the loans approved.
(SQLite has one writer at a time: every transaction there begins with the write lock.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from safe_procurement.services.loan_disbursement import main as loan_main
from safe_procurement.services.loan_disbursement.adapters import ledger
from safe_procurement.services.loan_disbursement.adapters.repository import LoanUnitOfWork
from safe_procurement.services.loan_disbursement.domain import lifecycle, rules
from safe_procurement.services.loan_disbursement.main import load_reference
from safe_procurement.services.loan_disbursement.service_layer import handlers
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.kit import db
from safe_procurement.shared.kit.uow import begin
from tests import dbs, pg_races
from tests.builders import loan_requested

pytestmark = pytest.mark.skipif(not dbs.on_postgres(), reason="SQLite serializes every writing transaction")

D = Decimal
SHARE = D("0.15")
Step = Callable[[LoanUnitOfWork], Awaitable[Any]]


@pytest.fixture
async def loans(tmp_path) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    async with pg_races.migrated_factory(tmp_path, "loan_races", loan_main.__file__) as factory:
        async with begin(factory, LoanUnitOfWork) as uow:
            await handlers.seed(uow, REFERENCE)
        yield factory


REFERENCE = load_reference()


async def _race(factory: Any, first: Step, second: Step, *, batch: tuple[bool, bool] = (False, False)) -> tuple[Any, Any]:
    """`first` decides in a transaction held open; `second` runs in its own meanwhile, and must wait for the first
    one's commit. The results of both."""
    task: asyncio.Task | None = None
    async with begin(factory, LoanUnitOfWork, batch=batch[0]) as uow:
        out = await first(uow)
        task = asyncio.create_task(_in_transaction(factory, second, batch[1]))
        await wait_for(lambda: pg_races.blocked_or_done(factory, task), timeout=10,
                       message="the second transaction committed or waits for the first")
    return out, await task


async def _in_transaction(factory: Any, step: Step, batch: bool) -> Any:
    async with begin(factory, LoanUnitOfWork, batch=batch) as uow:
        return await step(uow)


def _request(event: contracts.LoanRequested) -> Step:
    return lambda uow: handlers.on_loan_requested(event, uow, REFERENCE)


def _withdraw(case_id: str) -> Step:
    return lambda uow: handlers.on_procurement_withdrawn(
        contracts.ProcurementWithdrawn(correlation_id=case_id, case_id=case_id, reason="withdrawn by its operator"), uow)


async def _decision(factory: Any, case_id: str) -> tuple[str, list[str], list[str]]:
    """The case's decision, its reasons' rule ids, its loans' statuses."""
    async with factory() as s:
        status, reasons = (await s.execute(text("SELECT status, reasons FROM loan_requests WHERE case_id = :c"),
                                           {"c": case_id})).one()
        loans = (await s.execute(text("SELECT status FROM loans WHERE case_id = :c"), {"c": case_id})).scalars().all()
    return status, [r["rule"] for r in json.loads(reasons)], list(loans)


async def _approved(factory: Any, ms: str = "DK") -> Decimal:
    async with factory() as s:
        return ledger.Balance.of((await ledger.facilities(s, [ms]))[ms]).approved


async def _books_balanced(factory: Any) -> None:
    async with db.transaction(factory) as s:
        report = await ledger.reconcile(s)
    assert report.ok, report.text()


# --- a case's loan request and its withdrawal ---------------------------------------------------------------


async def test_a_withdrawal_beside_the_loan_request_of_its_case_releases_what_the_request_reserved(loans):
    event = loan_requested(("DK", "5000000"))
    await _race(loans, _request(event), _withdraw(event.case_id), batch=(True, True))
    status, _, loan_statuses = await _decision(loans, event.case_id)
    # the withdrawal waited for the reservation, then released it (without the lock: it released nothing, and the
    # reservation committed after it was never released)
    assert status == "approved" and loan_statuses == ["released"]
    assert await _approved(loans) == D("0.00")
    await _books_balanced(loans)


async def test_a_loan_request_beside_the_withdrawal_of_its_case_is_rejected(loans):
    event = loan_requested(("DK", "5000000"))
    await _race(loans, _withdraw(event.case_id), _request(event), batch=(True, True))
    status, rules_, loan_statuses = await _decision(loans, event.case_id)
    assert status == "rejected" and loan_statuses == [] and rules_, rules_
    assert await _approved(loans) == D("0.00")


# --- a facility changed by an operator beside a loan decision ------------------------------------------------


async def test_a_loan_request_beside_the_suspension_of_its_facility_is_rejected(loans):
    async def suspend(uow: LoanUnitOfWork) -> None:
        assert (await handlers.update_facility(uow, "DK", {"suspended": True}, reason="progress report",
                                               actor="operator", share=SHARE)).ok

    event = loan_requested(("DK", "5000000"))
    await _race(loans, suspend, _request(event), batch=(False, True))
    status, rules_, _ = await _decision(loans, event.case_id)
    assert status == "rejected" and rules.L5 in rules_, rules_
    assert await _approved(loans) == D("0.00")


async def test_a_loan_request_beside_a_narrowed_plan_is_decided_on_the_new_plan(loans):
    async def narrow(uow: LoanUnitOfWork) -> None:
        await handlers.amend_plan(uow, "DK", {"ammunition_and_missiles": D("1000000.00")}, supports_ukraine=False,
                                  source="amended", reason="narrowed", actor="operator")

    event = loan_requested(("DK", "5000000"))
    await _race(loans, narrow, _request(event), batch=(False, True))
    status, rules_, _ = await _decision(loans, event.case_id)
    assert status == "rejected" and rules.PLAN in rules_, rules_


# --- payments beside each other ------------------------------------------------------------------------------


async def _approved_and_signed(factory: Any, amount: str) -> str:
    """A DK loan of `amount`, approved, under a signed agreement (payments need one, L-8): its loan id."""
    event = loan_requested(("DK", amount))
    async with begin(factory, LoanUnitOfWork) as uow:
        await handlers.on_loan_requested(event, uow, REFERENCE)
        assert (await handlers.change_facility_status(
            uow, "DK", lifecycle.SIGNED, reason="signed", actor="operator", agreement_signed_on=date(2026, 5, 15),
            agreement_reference="SAFE-LA-DK-2026")).ok
    async with factory() as s:
        return str((await s.execute(text("SELECT loan_id FROM loans WHERE case_id = :c"),
                                    {"c": event.case_id})).scalar_one())


def _pre_financing(amount: str) -> Step:
    return lambda uow: handlers.pay_pre_financing(uow, "DK", D(amount), date(2026, 6, 1), actor="operator",
                                                  last_request_on=date(2030, 12, 31), share=SHARE)


def _instalment(loan_id: str, amount: str) -> Step:
    return lambda uow: handlers.pay_instalment(uow, loan_id, D(amount), date(2026, 6, 1), actor="operator",
                                               last_request_on=date(2030, 12, 31))


async def test_two_pre_financing_payments_at_once_never_advance_more_than_the_loans_approved(loans):
    await _approved_and_signed(loans, "5000000")
    first, second = await _race(loans, _pre_financing("3000000"), _pre_financing("3000000"))
    assert first.ok and not second.ok and lifecycle.L9 in [r.rule for r in second.reasons], second.reasons
    await _books_balanced(loans)


async def test_two_instalments_on_one_loan_at_once_never_pay_more_than_the_loan(loans):
    loan_id = await _approved_and_signed(loans, "5000000")
    first, second = await _race(loans, _instalment(loan_id, "3000000"), _instalment(loan_id, "3000000"))
    assert first.ok and not second.ok, second.reasons
    await _books_balanced(loans)


async def test_an_instalment_beside_the_withdrawal_of_its_case_is_refused(loans):
    loan_id = await _approved_and_signed(loans, "5000000")
    async with loans() as s:
        case_id = str((await s.execute(text("SELECT case_id FROM loans WHERE loan_id = :l"), {"l": loan_id})).scalar_one())
    _, paid = await _race(loans, _withdraw(case_id), _instalment(loan_id, "1000000"), batch=(True, False))
    assert not paid.ok, "an instalment on a released loan"
    await _books_balanced(loans)
