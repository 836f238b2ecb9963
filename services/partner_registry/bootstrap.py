"""The partner registry's own dependencies, built once per process by `main.build_app`."""

from __future__ import annotations

from dataclasses import dataclass

from safe_procurement.services.partner_registry.config import Settings


@dataclass(frozen=True)
class Dependencies:
    load_seed: bool  # publish what the seed file adds or changes when the service starts
    seed_path: str | None  # None: the seed shipped with the service


def bootstrap(settings: Settings) -> Dependencies:
    return Dependencies(load_seed=settings.load_seed, seed_path=settings.seed_path or None)
