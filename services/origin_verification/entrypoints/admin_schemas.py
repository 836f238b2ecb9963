"""HTTP schemas of the origin verification service (never the tables, never the wire events)."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from safe_procurement.shared import contracts
from safe_procurement.shared.kit.web import UtcDateTime


class ReportPublic(BaseModel):
    id: int
    case_id: str
    request_event_id: str = Field(description="The ProcurementSubmitted / ReverificationRequested it answers")
    request_type: str
    event_id: str = Field(description="The OriginVerificationCompleted that carried the report")
    outcome: str
    rules_version: str
    registry_version: int | None = Field(description="Registry publication the replica held when deciding")
    contract_signed_on: date
    created_at: UtcDateTime
    result: contracts.VerificationResult


class VerificationHistory(BaseModel):
    case_id: str
    reports: list[ReportPublic] = Field(description="Every report of the case, oldest first (re-verifications add)")


class RulesPublic(BaseModel):
    on: date | None = Field(description="The contract date asked about (null: the latest rule set)")
    in_force: str = Field(description="Version of the rule set that applies")
    rule_set: dict[str, Any] = Field(description="The rule set in force: every value with source and confidence")
    versions: list[dict[str, Any]] = Field(description="All rule set versions with their effective dates")


class ReplicaStatus(BaseModel):
    ready: bool
    reason: str
    registry_version: int | None
    seed_version: str | None
    countries: int
    agreements: int
    expected_countries: int | None
    expected_agreements: int | None
