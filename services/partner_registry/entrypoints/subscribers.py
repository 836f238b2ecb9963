"""Stream entrypoints of the partner registry: none. It only publishes (through the outbox); the
replicas live in the services that read its streams."""

from __future__ import annotations

from typing import Any

from safe_procurement.shared.kit.messaging import Messaging


def register(_m: Messaging, _runtime: Any = None) -> None:
    return None
