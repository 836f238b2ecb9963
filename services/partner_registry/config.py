from pydantic_settings import SettingsConfigDict

from safe_procurement.shared.kit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PARTNER_REGISTRY_", extra="ignore")
    service_name: str = "partner_registry"
    port: int = 8003
    seed_path: str = ""  # empty: the packaged seed/registry.yaml
    load_seed: bool = True
