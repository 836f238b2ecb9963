"""Run one service process with uvicorn (what `python -m services.<name>` and the launcher use)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn

from shared.kit.settings import ServiceSettings


def serve(build: Callable[[Any], Any], settings: ServiceSettings) -> None:
    app = build(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=75,  # longer than typical client/LB idle pools, so idle connections are not cut mid-reuse
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s) + 5,
        lifespan="on",
    )
