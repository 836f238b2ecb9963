"""Request budgets (docs/security.md): an expensive route runs at most `limit` requests at a time per process;
one more answers 429 with Retry-After at once instead of queueing (a burst of reconciliations or previews must
not take every database connection or the event loop from the message handlers). Per-client rates belong at
the ingress."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import HTTPException

TOO_MANY = {429: {"description": "Too many of these requests at once: retry after Retry-After seconds",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}


class Budget:
    def __init__(self, limit: int, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.running = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.running >= self.limit:
            raise HTTPException(429, f"at most {self.limit} of these requests at a time",
                                headers={"Retry-After": str(self.retry_after_s)})
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


def budget_of(budgets: dict[str, Budget], name: str, limit: int) -> Budget:
    """The process's budget `name` (kept in the runtime: one per app, not per module)."""
    if name not in budgets:
        budgets[name] = Budget(limit)
    return budgets[name]
