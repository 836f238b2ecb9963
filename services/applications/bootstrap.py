"""The applications service's own dependencies, built once per process by `main.build_app`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.service_layer.intake import SubmitBatcher
from safe_procurement.shared.kit.runtime import Runtime, runtime_of


@dataclass
class Dependencies:
    # the HTTP intake's group commit, one per process; built on the first submission from the runtime's session
    # factory and relay (the runtime is composed after these dependencies, from the spec that carries them)
    intake: SubmitBatcher | None = None


def bootstrap(_settings: Settings) -> Dependencies:
    return Dependencies()


def intake_of(rt: Runtime[Dependencies]) -> SubmitBatcher:
    if rt.deps.intake is None:
        rt.deps.intake = SubmitBatcher(rt.factory, on_committed=rt.wake_relay,
                                       publish_after_commit=rt.messaging.publish_after_commit)
    return rt.deps.intake


def runtime_from(request: Request) -> Runtime[Dependencies]:
    return runtime_of(request)
