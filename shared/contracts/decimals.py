"""Plain decimal strings on the wire (SAFE rules §8a, docs/safe-rules.md): money with exactly 2 decimals,
shares as plain decimals, never an exponent form such as "0E-10" or "1E+3". JSON only; in Python the values
stay exact Decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer

CENT = Decimal("0.01")


def plain(value: Decimal) -> str:
    """The value in positional notation, its own places kept: Decimal("0E-10") → "0.0000000000"."""
    return format(value, "f")


def money(value: Decimal) -> str:
    """An amount with exactly 2 decimals; one with a fraction of a cent is shown as it is, never rounded."""
    if value.is_finite() and value == value.quantize(CENT):
        return format(value.quantize(CENT), "f")
    return format(value, "f")


MoneyOut = Annotated[Decimal, PlainSerializer(money, return_type=str, when_used="json")]
ShareOut = Annotated[Decimal, PlainSerializer(plain, return_type=str, when_used="json")]
