"""The loan disbursement service's own dependencies, built once per process by `main.build_app`."""

from __future__ import annotations

from dataclasses import dataclass

from safe_procurement.services.loan_disbursement.config import Settings
from safe_procurement.services.loan_disbursement.domain.reference import Reference


@dataclass
class Dependencies:
    loans_from: str  # L-8: the facility status from which loans may be approved
    check_financing_cap: bool  # L-7: the financing may not exceed the contract value
    # the facilities seed file, read when the service starts (and seeded then)
    reference: Reference | None = None

    def seeded_reference(self) -> Reference:
        assert self.reference is not None, "the facilities reference is read when the service starts"
        return self.reference


def bootstrap(settings: Settings) -> Dependencies:
    return Dependencies(loans_from=settings.loans_from,
                        check_financing_cap=settings.financing_within_contract_value)
