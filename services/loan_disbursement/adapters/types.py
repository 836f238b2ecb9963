"""The money column type: NUMERIC(20,2) on PostgreSQL; integer cents on SQLite.

SQLite has no exact decimal type: a NUMERIC column there stores '46796822.10' as a REAL (a float) and
SUM() adds floats. Integer cents keep every amount and every SUM exact. Either way Python only ever
sees Decimal, and a float handed to a money column is refused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from safe_procurement.services.loan_disbursement.domain.money import CENT

_LIMIT = Decimal("10") ** 16  # EUR; 10^18 cents still fits SQLite's int64 (SAFE totals EUR 1.5 × 10^11)


class Money(TypeDecorator[Decimal]):
    impl = sa.Numeric(20, 2, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(20, 2, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"money columns take Decimal, never {type(value).__name__}")
        amount = Decimal(value)
        if not amount.is_finite() or amount != amount.quantize(CENT):
            raise ValueError(f"{value} is not an amount in whole cents")
        if abs(amount) >= _LIMIT:
            raise ValueError(f"{value} is beyond the supported EUR 10^16")
        if dialect.name == "sqlite":
            return int(amount.scaleb(2))
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, float):  # never expected; refuse rather than round silently
            raise TypeError("a money column returned a float")
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-2)
        return Decimal(value).quantize(CENT)
