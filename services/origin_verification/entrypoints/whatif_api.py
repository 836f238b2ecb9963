"""What-if replay over HTTP (operators): stored cases against a candidate rulebook and/or a registry snapshot."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError

from safe_procurement.services.origin_verification.bootstrap import deps_of
from safe_procurement.services.origin_verification.domain.rulebook import RulebookError, parse_rulebook
from safe_procurement.services.origin_verification.service_layer import whatif
from safe_procurement.shared.kit.app import runtime_of, validation_errors
from safe_procurement.shared.kit.auth import Principal, operator

router = APIRouter(tags=["what-if"])


class WhatIfRequest(BaseModel):
    rules: dict[str, Any] | None = Field(
        default=None, description="A candidate rulebook in the format of safe_rules.yaml (as JSON); null: the rules in service")
    registry_at: date | None = Field(
        default=None, description="Decide with the registry as this service had received it by the end of this day (UTC)")
    since: datetime | None = Field(default=None, description="Only cases whose latest report is this recent")


@router.post("/whatif", responses={
    200: {"description": "The report (JSON), or with format=table the same as a readable table",
          "content": {"application/json": {}, "text/plain": {"schema": {"type": "string"}}}},
    422: {"description": "Invalid body or rulebook"}},
    openapi_extra={"requestBody": {"required": False, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/WhatIfRequest"}}}}})
async def what_if(request: Request,
                  format: Literal["json", "table"] = Query(default="json", description="json, or a readable table"),
                  _who: Principal = Depends(operator)) -> Any:
    """Re-run stored cases' verification with a candidate rulebook and/or registry snapshot, in process, writing
    nothing; lists the verdicts that would change with the rules, findings and settings that made the difference."""
    try:  # parsed from the raw bytes, as every body of this service
        body = WhatIfRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as e:
        return JSONResponse({"detail": validation_errors(e.errors(include_url=False))}, status_code=422)
    rt = runtime_of(request)
    deps = deps_of(request)
    candidate = None
    if body.rules is not None:
        try:
            candidate = parse_rulebook(body.rules)
        except RulebookError as e:
            return JSONResponse({"detail": [{"loc": ["body", "rules"], "field": "rules", "msg": str(e),
                                             "type": "value_error"}]}, status_code=422)
    async with rt.factory() as session:
        report = await whatif.replay(session, deps.rules, candidate=candidate, registry_at=body.registry_at,
                                     since=body.since, checked_at=deps.clock())
    out = report.as_dict()
    if format == "table":
        return PlainTextResponse(whatif.table(out) + "\n")
    return out
