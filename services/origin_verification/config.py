from pydantic_settings import SettingsConfigDict

from safe_procurement.shared.kit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORIGIN_VERIFICATION_", extra="ignore")
    service_name: str = "origin_verification"
    port: int = 8002
    rules_file: str = ""  # the rules configuration data file; empty: the packaged safe_rules.yaml
    replica_retry_s: float = 1.0  # how soon a verification deferred for an incomplete replica is tried again
