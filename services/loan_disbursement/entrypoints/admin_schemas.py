"""HTTP schemas of the loan disbursement service (never the tables, never the wire events).

Request bodies are parsed with `parse_body`: the raw JSON is decoded with every number as an exact
Decimal (json.loads(parse_float=Decimal)), then validated; a float never exists on the way in."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)

from safe_procurement.services.loan_disbursement.domain.money import CENT
from safe_procurement.shared.contracts import Category
from safe_procurement.shared.contracts.decimals import MoneyOut
from safe_procurement.shared.contracts.formats import decimal_text
from safe_procurement.shared.contracts.proposal import Day, validate_money
from safe_procurement.shared.kit import strict
from safe_procurement.shared.kit.app import validation_errors
from safe_procurement.shared.kit.web import UtcDateTime

M = TypeVar("M", bound=BaseModel)
ZERO_EUR = Decimal("0.00")


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("amounts are decimal strings (or exact JSON numbers), never floats")
    return value


def _money(value: Decimal) -> Decimal:
    validate_money(value)
    return value.quantize(CENT)  # exact: at most 2 places; 7019523.3 → 7019523.30


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    BeforeValidator(decimal_text),
    AfterValidator(_money),
    Field(description="EUR amount as a decimal string (JSON numbers accepted), at most 2 decimal places"),
]
PositiveAmount = Annotated[Amount, AfterValidator(_positive)]
Reason = Annotated[str, Field(min_length=1, max_length=2000, description="Why (recorded in the audit trail)")]


class BodyError(Exception):
    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__("invalid body")
        self.detail = detail


def parse_body(model: type[M], raw: bytes) -> M:
    """The body as `model`, with JSON numbers decoded as exact Decimals; BodyError lists every problem."""
    try:
        data = strict.loads(raw or b"")
    except strict.StrictJsonError as e:
        raise BodyError([{"loc": ["body"], "field": "body", "msg": str(e), "type": e.kind}]) from e
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise BodyError(validation_errors(e.errors(include_url=False))) from e


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- requests ---------------------------------------------------------------------------------------------


class FacilityUpdate(_Strict):
    """Change a facility (PUT /facilities/{ms}); only the fields present change. `reason` is required."""

    max_eur: PositiveAmount | None = Field(default=None, description="Council-decision maximum loan amount")
    pre_financing_eur: Amount | None = Field(
        default=None, description="Council pre-financing; ≤ 15 % of the maximum; explicit null = unconfirmed")
    suspended: StrictBool | None = Field(default=None, description="Suspend (true) or reinstate (false) the facility (L-5)")
    source: str | None = Field(default=None, max_length=500, description="Where the new figures come from")
    confidence: Literal["official", "secondary", "assumed"] | None = None
    notes: str | None = Field(default=None, max_length=2000)
    status: Literal["pending", "decided", "agreement_signed", "suspended", "closed"] | None = Field(
        default=None, description="L-8 lifecycle step: pending → decided → agreement_signed → suspended → closed")
    agreement_signed_on: date | None = Field(default=None, description="Signing date of the loan agreement (Art. 10)")
    agreement_reference: str | None = Field(default=None, max_length=500, description="The loan agreement's reference")
    effective_on: date | None = Field(default=None, description="Date of the status change (default: today)")
    status_reference: str | None = Field(default=None, max_length=500,
                                         description="Reference of the act behind the change (e.g. the Council decision)")
    reason: Reason

    @model_validator(mode="after")
    def _something(self) -> FacilityUpdate:
        if not (self.model_fields_set - {"reason"}):
            raise ValueError("nothing to change: give max_eur, pre_financing_eur, suspended, status, source, "
                             "confidence or notes")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null")
        if self.status is not None and self.suspended is not None:
            raise ValueError("give either status or suspended, not both")
        dated = {"agreement_signed_on", "agreement_reference", "effective_on", "status_reference"}
        if self.status is None and self.model_fields_set & dated:
            raise ValueError(f"{', '.join(sorted(self.model_fields_set & dated))} describe a status change: give status")
        if "max_eur" in self.model_fields_set and self.max_eur is None:
            raise ValueError("max_eur cannot be null")
        if "suspended" in self.model_fields_set and self.suspended is None:
            raise ValueError("suspended cannot be null")
        return self


class PaymentRequest(_Strict):
    """A pre-financing payment or an instalment request."""

    amount_eur: PositiveAmount
    requested_on: Day = Field(description="Date of the payment request (L-4: at most the last request date)")
    note: str | None = Field(default=None, max_length=2000, description="Recorded on the ledger entry")


class PlanLineIn(_Strict):
    category: Category
    amount_eur: Amount


class PlanUpdate(_Strict):
    """The Member State's European Defence Industry Investment Plan, replacing the current one."""

    lines: list[PlanLineIn] = Field(max_length=len(Category), description="Planned procurement lines; one per category")
    supports_ukraine: StrictBool = Field(description="Whether the plan supports Ukraine")
    source: str | None = Field(default=None, max_length=500)
    reason: Reason

    @model_validator(mode="after")
    def _unique(self) -> PlanUpdate:
        cats = [line.category for line in self.lines]
        if len(set(cats)) != len(cats):
            raise ValueError("lines: one line per category")
        return self


# --- responses --------------------------------------------------------------------------------------------


class PlanSummary(BaseModel):
    supports_ukraine: bool
    categories: int = Field(description="Number of categories the plan covers")
    version: int
    source: str


class FacilityPublic(BaseModel):
    member_state: str
    max_eur: MoneyOut = Field(description="Maximum loan amount (Council decision, else tentative allocation)")
    approved_eur: MoneyOut = Field(description="Reservations − releases in the ledger")
    disbursed_eur: MoneyOut = Field(description="Pre-financing + instalments paid")
    available_eur: MoneyOut = Field(description="max − approved")
    pre_financing_eur: MoneyOut | None = Field(description="Council pre-financing; null = unconfirmed (cap 15 % of max)")
    suspended: bool
    source: str
    confidence: str = Field(description="official | secondary | assumed")
    notes: str
    tentative_eur: MoneyOut | None
    council_max_eur: MoneyOut | None
    pre_financing_cap_eur: MoneyOut = Field(description="What pre-financing may total (whole cents)")
    pre_financing_paid_eur: MoneyOut
    instalments_paid_eur: MoneyOut
    suspended_reason: str | None
    plan: PlanSummary
    updated_at: UtcDateTime
    status: str = Field(description="L-8: pending | decided | agreement_signed | suspended | closed")
    status_changed_on: date | None = None
    status_reference: str | None = None
    agreement_signed_on: date | None = None
    agreement_reference: str | None = None
    amount_confirmed: bool = Field(description="False: the maximum is tentative/unconfirmed (every decision says so)")
    pre_financing_cleared_eur: MoneyOut = Field(description="Pre-financing cleared against instalments so far (L-9)")
    pre_financing_uncleared_eur: MoneyOut = Field(description="Pre-financing paid and not yet cleared (L-9)")
    payable_eur: MoneyOut = Field(description="Approved − pre-financing − instalments: what may still be paid (L-9)")


class FacilityList(BaseModel):
    items: list[FacilityPublic]
    envelope_eur: MoneyOut | None = Field(default=None, description="The SAFE envelope (L-10)")
    maxima_total_eur: MoneyOut | None = Field(default=None, description="Σ of all facility maxima (≤ the envelope)")


class StatusChangePublic(BaseModel):
    id: int
    member_state: str
    from_status: str | None
    to_status: str
    effective_on: date | None
    reference: str | None
    reason: str
    actor: str
    at: UtcDateTime


class StatusHistory(BaseModel):
    items: list[StatusChangePublic]


class PlanLinePublic(BaseModel):
    category: str
    amount_eur: MoneyOut
    drawn_eur: MoneyOut = Field(description="Taken by active approved loans")
    remaining_eur: MoneyOut


class PlanPublic(BaseModel):
    member_state: str
    supports_ukraine: bool
    version: int
    source: str
    lines: list[PlanLinePublic]
    uncovered: list[str] = Field(description="Categories the plan does not cover (loan requests for them: PLAN)")


class LedgerEntryPublic(BaseModel):
    id: int
    member_state: str
    case_id: str | None
    loan_id: str | None
    kind: str = Field(description="reservation | release | pre_financing | instalment")
    amount_eur: MoneyOut
    at: UtcDateTime
    reason: str
    requested_on: date | None
    actor: str
    event_id: str | None
    pre_financing_cleared_eur: MoneyOut | None = Field(
        default=None, description="On an instalment: pre-financing cleared against its loan with it (L-9)")


class LedgerPage(BaseModel):
    items: list[LedgerEntryPublic]
    next_cursor: str | None


class LoanPublic(BaseModel):
    loan_id: str
    case_id: str
    member_state: str
    amount_eur: MoneyOut
    status: str = Field(description="active | released (case withdrawn)")
    approved_at: UtcDateTime
    released_at: datetime | None
    instalments_paid_eur: MoneyOut
    remaining_eur: MoneyOut = Field(description="What instalments may still pay (0 once released)")
    pre_financing_cleared_eur: MoneyOut = Field(default=ZERO_EUR,
                                               description="Pre-financing cleared against this loan (L-9)")


class LoanList(BaseModel):
    items: list[LoanPublic]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page; null on the last page")


class ReasonPublic(BaseModel):
    member_state: str
    rule: str = Field(description="L-1..L-10 or PLAN")
    message: str


class LoanRequestPublic(BaseModel):
    case_id: str
    reference: str
    status: str = Field(description="approved | rejected")
    verification_outcome: str
    requested: list[dict[str, Any]]
    categories: list[str]
    reasons: list[ReasonPublic]
    decided_at: UtcDateTime
    withdrawn_at: datetime | None
    loans: list[LoanPublic]
    assumptions: list[str] = Field(default_factory=list, description="Every assumption the decision used")


class Refusal(BaseModel):
    """A request refused by a rule: 422, every reason in words."""

    detail: str
    reasons: list[ReasonPublic]
