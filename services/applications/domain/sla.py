"""SLA clocks: a target time per case status, and whether a case has been in its status longer than that.

Targets are written `status=AMOUNT UNIT` pairs, e.g. `verifying=5m,needs_review=5wd,loan_requested=1m`, with
units s, m, h, d (calendar) and wd (working days: Monday to Friday, public holidays not known here). A working-day
target started at a weekend counts from the next Monday 00:00 UTC. Pure: the caller hands in the time.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_TARGETS = "submitted=1m,verifying=5m,needs_review=5wd,loan_requested=1m"
_PAIR = re.compile(r"^\s*([a-z_]+)\s*=\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|wd)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Target:
    status: str
    amount: float
    unit: str

    def __str__(self) -> str:
        n = int(self.amount) if self.amount == int(self.amount) else self.amount
        return f"{n}{self.unit}"

    def due(self, since: datetime) -> datetime:
        if self.unit == "wd":
            return add_working_days(since, self.amount)
        return since + timedelta(seconds=self.amount * _UNITS[self.unit])


@dataclass(frozen=True)
class Clock:
    status: str
    since: datetime
    seconds_in_status: float
    target: str | None
    due_at: datetime | None
    breached: bool
    over_by_seconds: float | None


@functools.lru_cache(maxsize=8)
def parse_targets(spec: str) -> dict[str, Target]:
    """`status=5m,...` → targets (cached: do not change the dict); ValueError naming the first bad pair."""
    out: dict[str, Target] = {}
    for part in (p for p in spec.split(",") if p.strip()):
        m = _PAIR.match(part)
        if m is None:
            raise ValueError(f"SLA target {part.strip()!r} is not status=<number><s|m|h|d|wd>")
        out[m[1]] = Target(m[1], float(m[2]), m[3])
    return out


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def add_working_days(since: datetime, days: float) -> datetime:
    """`since` plus `days` working days (Monday to Friday), counted in whole and fractional days of 24 h."""
    t = _utc(since)
    while t.weekday() >= 5:  # a weekend start counts from Monday 00:00
        t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    whole = int(days)
    rest = days - whole
    while whole > 0:
        t += timedelta(days=1)
        if t.weekday() < 5:
            whole -= 1
    t += timedelta(days=rest)
    while t.weekday() >= 5:
        t += timedelta(days=1)
    return t


def clock(status: str, since: datetime, now: datetime, targets: dict[str, Target], *, final: bool) -> Clock:
    since, now = _utc(since), _utc(now)
    elapsed = max(0.0, (now - since).total_seconds())
    target = None if final else targets.get(status)
    if target is None:
        return Clock(status, since, elapsed, None, None, False, None)
    due = target.due(since)
    breached = now > due
    return Clock(status, since, elapsed, str(target), due, breached,
                 (now - due).total_seconds() if breached else None)
