"""No float enters the money path: domain functions refuse floats, bodies parse to exact Decimals,
money columns round-trip (and sum) exactly on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from safe_procurement.services.loan_disbursement.adapters.types import Money
from safe_procurement.services.loan_disbursement.domain import rules
from safe_procurement.services.loan_disbursement.domain.money import exact
from safe_procurement.services.loan_disbursement.entrypoints import admin_schemas as schemas
from safe_procurement.shared.kit import db


def test_the_domain_refuses_a_float_amount_instead_of_converting_it():
    with pytest.raises(TypeError):
        exact(0.1)
    with pytest.raises(TypeError):
        rules.decide_loan_request(lines=[rules.RequestedLine("DK", 5_000_000.0)],  # type: ignore[arg-type]
                                  verification_outcome="eligible", categories=["cyber"], facilities={},
                                  eu_member_states={"DK"})
    with pytest.raises(TypeError):
        rules.check_instalment(member_state="DK", loan_amount=Decimal("10"), paid_eur=Decimal("0"),
                               amount=1.5, requested_on=date(2027, 1, 1),  # type: ignore[arg-type]
                               last_request_on=date(2030, 12, 31), suspended=False)
    with pytest.raises(TypeError):
        rules.check_pre_financing(member_state="DK", max_eur=46796822.0,  # type: ignore[arg-type]
                                  configured=None, paid_eur=Decimal("0"), amount=Decimal("1"),
                                  requested_on=date(2027, 1, 1), last_request_on=date(2030, 12, 31), suspended=False)


def test_json_numbers_in_a_body_parse_to_exact_decimals_even_beyond_float_precision():
    body = b'{"amount_eur": 999999999999999.99, "requested_on": "2030-12-31"}'
    parsed = schemas.parse_body(schemas.PaymentRequest, body)
    assert parsed.amount_eur == Decimal("999999999999999.99") and type(parsed.amount_eur) is Decimal

    class Naive(BaseModel):
        amount_eur: Decimal

    # what parsing through a double makes of the same number: the reason bodies are parsed with parse_float=Decimal
    assert Naive.model_validate_json(b'{"amount_eur": 999999999999999.99}').amount_eur == Decimal("1000000000000000")


def test_a_python_float_in_a_body_model_is_refused():
    with pytest.raises(Exception, match="never floats"):
        schemas.PaymentRequest.model_validate({"amount_eur": 0.1, "requested_on": "2027-01-01"})


@pytest.mark.parametrize("raw", [b'{"amount_eur": "1.001", "requested_on": "2027-01-01"}',
                                 b'{"amount_eur": NaN, "requested_on": "2027-01-01"}',
                                 b'{"amount_eur": "0", "requested_on": "2027-01-01"}',
                                 b'{"amount_eur": 1e400, "requested_on": "2027-01-01"}',
                                 b"not json"])
def test_bodies_with_inexact_or_invalid_amounts_are_refused(raw):
    with pytest.raises(schemas.BodyError):
        schemas.parse_body(schemas.PaymentRequest, raw)


async def _round_trip(url: str) -> None:
    meta = sa.MetaData()
    t = sa.Table("money_probe", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("amount", Money()))
    engine = db.make_engine(url)
    values = [Decimal("9999999999999999.99"), Decimal("0.10"), Decimal("0.20"), Decimal("46796822.00"),
              Decimal("7019523.30")]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(meta.create_all)
            for v in values:
                await conn.execute(t.insert().values(amount=v))
        async with engine.begin() as conn:
            got = [r[0] for r in (await conn.execute(sa.select(t.c.amount).order_by(t.c.id))).all()]
            total = (await conn.execute(sa.select(sa.func.sum(t.c.amount)).where(t.c.id > 1))).scalar_one()
            with pytest.raises(sa.exc.StatementError):
                await conn.execute(t.insert().values(amount=0.1))
    finally:
        await engine.dispose()
    assert got == values and all(type(v) is Decimal for v in got)
    assert total == Decimal("53816345.60") and type(total) is Decimal


async def test_money_columns_round_trip_and_sum_exactly_on_sqlite(sqlite_url):
    await _round_trip(sqlite_url)


async def test_money_columns_round_trip_and_sum_exactly_on_postgresql(pg_url):
    await _round_trip(pg_url)
