"""The procurement proposal: what a Member State submits (docs/interface.md "The proposal")."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    model_validator,
)

from safe_procurement.shared.contracts import countries
from safe_procurement.shared.contracts.decimals import money, plain
from safe_procurement.shared.contracts.formats import date_text, decimal_text

MAX_END_PRODUCTS = 1_000
MAX_COMPONENTS_PER_END_PRODUCT = 20_000
MAX_COMPONENTS_TOTAL = 50_000
MAX_PARTICIPANTS = 60
MAX_AMOUNT = Decimal("1000000000000000")  # EUR 10^15: far above SAFE's EUR 150 bn in total


def _country(value: str) -> str:
    if not countries.is_known(value):
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (EL/GR, UK/GB and XK accepted)")
    return countries.canonical(value)


def validate_money(value: Decimal) -> Decimal:
    """A finite, non-negative EUR amount with at most 2 decimal places, at most `MAX_AMOUNT`."""
    if not value.is_finite():
        raise ValueError("must be a finite amount")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ValueError("at most 2 decimal places")
    if value < 0:
        raise ValueError("must not be negative")
    if value > MAX_AMOUNT:
        raise ValueError(f"must not exceed {MAX_AMOUNT}")
    return value


def _share(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0 or value > 1:
        raise ValueError("must be a decimal between 0 and 1")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -10:
        raise ValueError("at most 10 decimal places")
    return value


CountryCode = Annotated[
    str,
    Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2 code; EL/GR and UK/GB are aliases, XK is Kosovo"),
    AfterValidator(_country),
]
Money = Annotated[
    Decimal,
    Field(description="EUR amount as a plain decimal string like \"1200000.00\" (exact JSON numbers accepted; no "
                      "spaces, separators or exponent), at most 2 decimal places"),
    BeforeValidator(decimal_text),
    AfterValidator(validate_money),
    PlainSerializer(money, return_type=str, when_used="json"),
]
# only YYYY-MM-DD: a date-time where a date is due is refused, not truncated
Day = Annotated[date, BeforeValidator(date_text), Field(description="A date, YYYY-MM-DD")]
Share = Annotated[Decimal, Field(description="A share as a decimal string between 0 and 1"), BeforeValidator(decimal_text),
                  AfterValidator(_share), PlainSerializer(plain, return_type=str, when_used="json")]
Name = Annotated[str, Field(min_length=1, max_length=300)]
ShortText = Annotated[str, Field(max_length=300)]


class Category(StrEnum):
    ammunition_and_missiles = "ammunition_and_missiles"
    artillery = "artillery"
    ground_combat = "ground_combat"
    small_drones = "small_drones"
    critical_infrastructure_protection = "critical_infrastructure_protection"
    cyber = "cyber"
    military_mobility = "military_mobility"
    air_and_missile_defence = "air_and_missile_defence"
    maritime = "maritime"
    large_drones = "large_drones"
    strategic_enablers = "strategic_enablers"
    space = "space"
    artificial_intelligence = "artificial_intelligence"
    electronic_warfare = "electronic_warfare"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Component(_Strict):
    name: Name = Field(description="Component name")
    origin_country: CountryCode = Field(description="Declared country of origin (R-ORIG-5)")
    cost_eur: Money = Field(description="Estimated cost of the component (the R-ORIG-1 base)")
    supplier: ShortText | None = Field(default=None, description="Supplier that declared the origin")
    evidence_ref: ShortText | None = Field(default=None, description="Reference of the origin declaration / evidence")


class EndProduct(_Strict):
    name: Name = Field(description="End product name")
    category: Category = Field(description="SAFE product category (Category 1 or 2, docs/safe-rules.md §5)")
    components: list[Component] = Field(
        min_length=1, max_length=MAX_COMPONENTS_PER_END_PRODUCT, description="Bill of materials of the end product"
    )


class DesignAuthority(_Strict):
    held: StrictBool = Field(description="The contractor can determine the definition, adaptation and evolution of the design")
    third_country_restrictions: StrictBool = Field(description="The design is subject to third-country restrictions")


class Contractor(_Strict):
    name: Name = Field(description="Contractor name")
    established_in: CountryCode = Field(description="Country of establishment (R-CON-1)")
    executive_management_in: CountryCode = Field(description="Country of executive management structures (R-CON-1)")
    controlled_from: CountryCode = Field(description="Country from which the contractor is controlled (R-CON-2)")
    facilities_in: list[CountryCode] = Field(
        min_length=1, max_length=100, description="Countries of the infrastructure, facilities, assets (R-CON-4)"
    )
    screening_and_guarantees: StrictBool = Field(
        default=False, description="Security screening passed and guarantees approved (R-CON-3 derogation)"
    )
    design_authority: DesignAuthority | None = Field(default=None, description="Design authority (R-DES-1)")


class Subcontractor(_Strict):
    name: Name = Field(description="Subcontractor name")
    established_in: CountryCode = Field(description="Country of establishment")
    share_of_contract_value: Share = Field(description="Share of the contract value it receives (R-CON-5)")
    contract_before: Day | None = Field(
        default=None, description="Date of its direct contract with the contractor for this product, if any"
    )
    replacement_study_committed: StrictBool = Field(
        default=False, description="The contractor commits to study replacing it within two years (R-CON-5 b)"
    )


class FinancingRequest(_Strict):
    member_state: CountryCode = Field(description="Member State that borrows under its SAFE facility")
    amount_eur: Money = Field(description="Requested loan amount")

    @model_validator(mode="after")
    def _positive(self) -> FinancingRequest:
        if self.amount_eur <= 0:
            raise ValueError("amount_eur must be greater than zero")
        return self


class Proposal(_Strict):
    """A joint defence procurement proposal (docs/interface.md)."""

    reference: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$",
        description="The client's business key: letters, digits and . _ : -",
    )
    title: Name = Field(description="Title of the procurement")
    lead_member_state: CountryCode = Field(description="Lead procuring Member State; must be among the participants")
    participants: list[CountryCode] = Field(
        min_length=1, max_length=MAX_PARTICIPANTS, description="Every country taking part in the procurement"
    )
    contract_signed_on: Day = Field(description="Date the contract was (or will be) signed; drives every dated rule")
    contract_value_eur: Money | None = Field(default=None, description="Contract value (never the R-ORIG-1 base)")
    end_products: list[EndProduct] = Field(min_length=1, max_length=MAX_END_PRODUCTS, description="End products")
    contractor: Contractor = Field(description="The (prime) contractor")
    subcontractors: list[Subcontractor] = Field(default_factory=list, max_length=1_000, description="Subcontractors")
    financing: list[FinancingRequest] = Field(
        default_factory=list, max_length=60, description="SAFE loans requested for this procurement, if any"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Proposal:
        problems = []
        if len(set(self.participants)) != len(self.participants):
            problems.append("participants: a country is listed twice")
        if self.lead_member_state not in self.participants:
            problems.append("lead_member_state: must be one of the participants")
        total = sum(len(ep.components) for ep in self.end_products)
        if total > MAX_COMPONENTS_TOTAL:
            problems.append(f"end_products: {total} components in total, at most {MAX_COMPONENTS_TOTAL}")
        ms = [f.member_state for f in self.financing]
        if len(set(ms)) != len(ms):
            problems.append("financing: one request per Member State")
        for i, ep in enumerate(self.end_products):
            if sum((c.cost_eur for c in ep.components), Decimal(0)) <= 0:
                problems.append(f"end_products[{i}].components: total component cost must be greater than zero")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def categories(self) -> list[str]:
        return sorted({ep.category.value for ep in self.end_products})
