"""Exact money: every amount is a Decimal in whole cents. Floats are refused, never converted."""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def exact(value: object, what: str = "amount") -> Decimal:
    """`value` itself when it is a finite Decimal; a TypeError for a float (or anything else)."""
    if isinstance(value, bool) or not isinstance(value, Decimal):
        raise TypeError(f"{what} must be a Decimal, never {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{what} must be finite")
    return value


def in_cents(value: Decimal) -> bool:
    """True when the amount has no fraction of a cent (1.5, 1.50 and 1.500 all qualify)."""
    return value == value.quantize(CENT)


def share_of(amount: Decimal, share: Decimal) -> Decimal:
    """`share` of `amount`, exact (no rounding): 15 % of 46 796 822 is 7 019 523.30."""
    return exact(amount) * exact(share, "share")


def cents_floor(value: Decimal) -> Decimal:
    """For display of a cap: the largest whole-cent amount not above `value`."""
    return value.quantize(CENT, rounding="ROUND_FLOOR")


def fmt(value: Decimal) -> str:
    """EUR amount for messages: 46796822.00 → '46 796 822.00'."""
    return f"{value.quantize(CENT):,}".replace(",", " ")


def pct(share: Decimal) -> str:
    """0.15 → '15 %'."""
    return f"{(share * 100).normalize():f} %"
