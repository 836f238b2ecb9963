"""Run one service process with uvicorn (what `python -m safe_procurement.services.<name>` and the launcher use)."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from typing import Any

import uvicorn

from safe_procurement.shared.kit import logs
from safe_procurement.shared.kit.settings import ServiceSettings


def tune_gc() -> None:
    """Fewer, cheaper cyclic collections: handling one message allocates hundreds of short-lived objects
    (pydantic, SQLAlchemy), which with the default threshold (700) start a generation-0 collection every
    few messages, and full collections walk every long-lived object. Objects alive after start-up (modules,
    mappers, compiled statements) are frozen out of the collector (the kit calls `gc.freeze()` once started,
    see SAFE_GC_FREEZE). `SAFE_GC_TUNING=0` keeps Python's defaults."""
    if os.environ.get("SAFE_GC_TUNING", "1") == "0":
        return
    gc.set_threshold(20_000, 50, 50)
    os.environ["SAFE_GC_FREEZE"] = "1"


def serve(build: Callable[[Any], Any], settings: ServiceSettings) -> None:
    tune_gc()
    # JSON logs from the first line: uvicorn's own start/stop/errors included (log_config=None: uvicorn
    # leaves logging to us; its loggers propagate to the root's JSON handler)
    logs.configure(settings.service_name, settings.log_level, per_message=settings.log_messages)
    try:
        app = build(settings)  # refuses a service outside dev without its tokens or event keys
    except Exception:
        # in the JSON log and with uvicorn's exit code, as a failure in the lifespan's start
        logging.getLogger("safe.app").exception("service refused to start")
        raise SystemExit(3) from None
    uvicorn.run(
        app,
        log_config=None,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=75,  # longer than typical client/LB idle pools, so idle connections are not cut mid-reuse
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s) + 5,
        lifespan="on",
    )
