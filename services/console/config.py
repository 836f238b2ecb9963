"""Console settings (environment variables, `CONSOLE_` prefix; SAFE_TOKENS and SAFE_ENV as every service)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from safe_procurement.services.launcher import SERVICES


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSOLE_", extra="ignore", env_file=None, populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8000
    # where the four services answer (the launcher sets these to its children's URLs)
    applications_url: str = f"http://127.0.0.1:{SERVICES['applications']}"
    origin_verification_url: str = f"http://127.0.0.1:{SERVICES['origin_verification']}"
    partner_registry_url: str = f"http://127.0.0.1:{SERVICES['partner_registry']}"
    loan_disbursement_url: str = f"http://127.0.0.1:{SERVICES['loan_disbursement']}"
    request_timeout_s: float = 10.0
    session_idle_minutes: int = 480
    # Secure cookies: "auto" sets the flag when the request came over TLS (scheme https, e.g. behind a proxy
    # that uvicorn trusts via --forwarded-allow-ips), "always" / "never" force it
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    poll_interval_ms: int = 1000
    page_size: int = 50
    safe_tokens: str | None = Field(default=None, validation_alias="SAFE_TOKENS")
    safe_env: str = Field(default="dev", validation_alias="SAFE_ENV")
    shutdown_timeout_s: float = 5.0
    # what services/runner.py's serve() reads of every process it runs
    service_name: str = "console"
    log_level: str = Field(default="INFO", validation_alias="SAFE_LOG_LEVEL")
    log_messages: bool = False

    @property
    def is_dev(self) -> bool:
        return self.safe_env == "dev"

    def service_urls(self) -> dict[str, str]:
        return {s: str(getattr(self, f"{s}_url")).rstrip("/") for s in SERVICES}
