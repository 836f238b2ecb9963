"""JSON logs with `service`, and `event_id` / `correlation_id` where a record has them."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(service: str, level: str = "INFO", *, per_message: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # per-message lines cost ~20 % of throughput: off unless asked for (SAFE_LOG_MESSAGES=1)
    logging.getLogger("safe.messages").setLevel(logging.INFO if per_message else logging.WARNING)
    for noisy in ("uvicorn.access", "faststream", "faststream.access", "faststream.access.redis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
