"""Read endpoints the operator console needs beside the case list: counts per status, reference search.

Both honour the caller's Member State scope exactly as GET /procurements does."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import col, select

from safe_procurement.services.applications.adapters.tables import CaseParticipant, CaseRow
from safe_procurement.shared.contracts import countries
from safe_procurement.shared.kit.app import runtime_of
from safe_procurement.shared.kit.auth import Principal, reader
from safe_procurement.shared.kit.web import UtcDateTime

router = APIRouter(tags=["procurements"])


class StatusCounts(BaseModel):
    counts: dict[str, int] = Field(description="Cases per status (statuses without a case are absent)")
    total: int


class CaseHit(BaseModel):
    id: str
    reference: str
    status: str
    lead_member_state: str
    status_since: UtcDateTime = Field(description="When the case entered its current status")
    created_at: UtcDateTime
    updated_at: UtcDateTime


class CaseHits(BaseModel):
    items: list[CaseHit]


def _scoped(q, who: Principal, member_state: str | None):  # noqa: ANN001, ANN202 - a select either way
    for country in (countries.canonical(c) for c in (member_state, who.member_state) if c):
        if not countries.is_known(country):
            raise HTTPException(422, f"unknown country {country!r}")
        q = q.where(select(CaseParticipant.case_seq).where(CaseParticipant.case_seq == CaseRow.seq,
                                                           CaseParticipant.country == country).exists())
    return q


@router.get("/procurement-counts", response_model=StatusCounts)
async def procurement_counts(
    request: Request, member_state: str | None = Query(default=None, min_length=2, max_length=2),
    who: Principal = Depends(reader),
) -> StatusCounts:
    """How many cases are in each status (a Member State token counts only its own cases)."""
    rt = runtime_of(request)
    q = _scoped(select(CaseRow.status, func.count()), who, member_state).group_by(CaseRow.status)
    async with rt.factory() as session:
        rows = (await session.exec(q)).all()
    counts = {str(s): int(n) for s, n in rows}
    return StatusCounts(counts=counts, total=sum(counts.values()))


@router.get("/procurement-search", response_model=CaseHits)
async def procurement_search(
    request: Request, reference: str = Query(min_length=1, max_length=200, description="Reference prefix"),
    limit: int = Query(default=50, ge=1, le=500), who: Principal = Depends(reader),
) -> CaseHits:
    """Cases whose reference starts with `reference` (case-sensitive), in reference order."""
    rt = runtime_of(request)
    # a range on the unique reference index (LIKE would not use it on SQLite, where LIKE ignores case)
    q = select(CaseRow.id, CaseRow.reference, CaseRow.status, CaseRow.lead_member_state, CaseRow.status_since,
               CaseRow.created_at, CaseRow.updated_at).where(col(CaseRow.reference) >= reference,
                                                            col(CaseRow.reference) < reference + "\U0010ffff")
    q = _scoped(q, who, None).order_by(col(CaseRow.reference)).limit(limit)
    async with rt.factory() as session:
        rows = (await session.exec(q)).all()
    return CaseHits(items=[CaseHit(id=r[0], reference=r[1], status=r[2], lead_member_state=r[3], status_since=r[4],
                                   created_at=r[5], updated_at=r[6]) for r in rows])
