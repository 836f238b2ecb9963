from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from safe_procurement.services.applications.domain import sla
from safe_procurement.shared.kit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="APPLICATIONS_", extra="ignore")
    service_name: str = "applications"
    port: int = 8001
    # SLA targets per status (services/applications/domain/sla.py): s, m, h, d, wd (working days)
    sla_targets: str = sla.DEFAULT_TARGETS

    @field_validator("sla_targets")
    @classmethod
    def _targets_parse(cls, v: str) -> str:
        sla.parse_targets(v)
        return v
