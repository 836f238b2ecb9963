"""Strict formats of wire fields (docs/security.md "Input"): the same over HTTP and over the streams."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def decimal_text(value: Any) -> Any:
    """An amount: a plain decimal string or an exact JSON number; refuses `1_000`, ` 5 `, `1.0e2`, `NaN`, booleans
    (a JSON number in exponent form is refused by the strict JSON reader, shared/kit/strict.py)."""
    if isinstance(value, bool):
        raise ValueError("amounts are decimal strings (or exact JSON numbers), never booleans")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise ValueError("a plain decimal like 1200000.00 (no spaces, separators or exponent)")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError("must be a finite amount")
    return value


def date_text(value: Any) -> Any:
    """A date: `YYYY-MM-DD` only (a date-time where a date is due is refused, not truncated)."""
    if isinstance(value, str) and not _DATE_TEXT.fullmatch(value):
        raise ValueError("a date YYYY-MM-DD (not a date-time)")
    return value


def not_blank(value: str | None) -> str | None:
    """A reason: absent, or some text that is not only whitespace."""
    if value is not None and value != "" and not value.strip():
        raise ValueError("must not be blank")
    return value
