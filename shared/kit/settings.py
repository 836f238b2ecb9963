"""Settings base: the shared variables plus the per-service `<SERVICE>_*` ones."""

from __future__ import annotations

import os
import socket

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Subclass per service with `env_prefix="<SERVICE>_"`, `service_name` and a default port."""

    # `.env` in the working directory (as docker compose reads it); real environment variables win over it
    model_config = SettingsConfigDict(extra="ignore", env_file=".env", env_file_encoding="utf-8",
                                      populate_by_name=True)

    service_name: str = "service"
    # shared, unprefixed
    redis_url: str = Field(default="redis://localhost:6379/0", validation_alias="REDIS_URL")
    redis_mode: str = Field(
        default="single", validation_alias="REDIS_MODE", description="single | sentinel | cluster"
    )
    redis_sentinel_master: str = Field(default="mymaster", validation_alias="REDIS_SENTINEL_MASTER")
    safe_tokens: str | None = Field(default=None, validation_alias="SAFE_TOKENS")
    safe_env: str = Field(default="dev", validation_alias="SAFE_ENV")
    # service:key_id:secret,… — the HMAC keys of internal events (shared/kit/signing.py, docs/security.md)
    safe_event_keys: str | None = Field(default=None, validation_alias="SAFE_EVENT_KEYS", repr=False)
    stream_prefix: str = Field(default="", validation_alias="SAFE_STREAM_PREFIX")
    log_level: str = Field(default="INFO", validation_alias="SAFE_LOG_LEVEL")
    log_messages: bool = Field(default=False, validation_alias="SAFE_LOG_MESSAGES")
    # per service (prefixed)
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = ""
    consumer_name: str = ""
    batch_size: int = 100
    # XREADGROUP BLOCK time: a read returns as soon as an entry arrives, so this only sets how often an idle
    # subscriber re-polls (a shorter block costs an idle service CPU and adds no speed)
    poll_interval_ms: int = 1000
    max_attempts: int = 5
    retry_backoff_ms: int = 500
    retry_backoff_max_ms: int = 30_000
    claim_idle_ms: int = 15_000
    reclaim_interval_ms: int = 1_000
    relay_interval_ms: int = 200
    # recovery after Redis lost writes (safe_procurement.shared.kit.recovery): how often to look, the clock margin, and how far
    # back to re-publish when the loss happened before this process's first look; 0 turns the guard off
    redis_guard_interval_ms: int = 1_000
    redis_guard_margin_ms: int = 5_000
    redis_guard_fallback_window_s: float = 600.0
    shutdown_timeout_s: float = 10.0
    max_body_bytes: int = 16 * 1024 * 1024
    # governance (docs/governance.md): how often the audit chain head is published to `audit.anchors`
    audit_anchor_interval_s: float = 60.0
    # four-eyes approval: None = on outside SAFE_ENV=dev, off in dev; thresholds `action=EUR,...` (below: one person)
    four_eyes: bool | None = Field(default=None, validation_alias="SAFE_FOUR_EYES")
    four_eyes_ttl_s: float = Field(default=172_800.0, gt=0, validation_alias="SAFE_FOUR_EYES_TTL_S")
    four_eyes_thresholds: str = Field(default="", validation_alias="SAFE_FOUR_EYES_THRESHOLDS")
    # the key this service signs its events with (default: its first in SAFE_EVENT_KEYS)
    event_key_id: str | None = None

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSettings:
        if not self.database_url:
            os.makedirs("var", exist_ok=True)
            self.database_url = f"sqlite+aiosqlite:///./var/{self.service_name}.db"
        if not self.consumer_name:
            self.consumer_name = f"{socket.gethostname()}-{self.port}"
        return self

    @property
    def is_dev(self) -> bool:
        return self.safe_env == "dev"
