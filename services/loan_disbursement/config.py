from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic_settings import SettingsConfigDict

from safe_procurement.shared.kit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOAN_DISBURSEMENT_", extra="ignore")
    service_name: str = "loan_disbursement"
    port: int = 8004
    # L-4: the last day an instalment (or pre-financing) may be requested [secondary; configurable]
    last_request_on: date = date(2030, 12, 31)
    # L-3: pre-financing at most this share of the facility (Art. 11) [official]
    pre_financing_share: Decimal = Decimal("0.15")
    # the seed file of facilities and investment plans; empty = the package's data/facilities.yaml
    facilities_file: str = ""
    # L-8: loans are approved on a facility that is `decided` (or `agreement_signed`), or only `agreement_signed`
    loans_from: Literal["decided", "agreement_signed"] = "decided"
    # L-10: the maxima of all facilities together stay within this envelope (Art. 5) [official]
    envelope_eur: Decimal = Decimal("150000000000")
    # L-7: financing summed over its lines ≤ the contract value (else the component cost) [assumed; false = off]
    financing_within_contract_value: bool = True
    # whether a Member State token may read other states' facility totals (GET /facilities…); their ledgers and
    # plans stay closed either way. A policy choice, closed by default (docs/security.md)
    other_states_totals_visible: bool = False
