"""Wire format of the audit chain's anchors (stream `audit.anchors`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from safe_procurement.shared.contracts.events import Event


class AuditAnchorPublished(Event):
    """A service's audit chain head at a moment: the other services keep it, so a rewritten chain is detected."""

    event_type: Literal["AuditAnchorPublished"] = "AuditAnchorPublished"
    service: str = Field(description="The service whose audit chain this is")
    seq: int = Field(ge=0, description="The sequence number of the chain's last entry")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 (hex) of that entry")
