"""Plain decimals on the wire (SAFE_RULES.md §8a): whatever exponent a Decimal carries inside, the contracts put out
money with exactly 2 decimals and shares in positional notation — never "0E-10" or "1E+3"."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from safe_procurement.services.loan_disbursement.entrypoints import admin_schemas as loan_schemas
from safe_procurement.shared import contracts

MONEY = re.compile(r"^\d+\.\d{2}$")
PLAIN = re.compile(r"^\d+(\.\d+)?$")
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# whole cents written with any exponent: 100.00, 1E+2 (normalized), 100.000000, 0E-10
cents = st.tuples(st.integers(min_value=0, max_value=10**15), st.sampled_from(("as is", "normalized", "6 places"))).map(
    lambda t: {"as is": Decimal(t[0]).scaleb(-2), "normalized": Decimal(t[0]).scaleb(-2).normalize(),
               "6 places": Decimal(t[0]).scaleb(-2).quantize(Decimal("1E-6"))}[t[1]])
shares = st.tuples(st.integers(min_value=0, max_value=10**10), st.booleans()).map(
    lambda t: Decimal(t[0]).scaleb(-10).normalize() if t[1] else Decimal(t[0]).scaleb(-10))


def _strings(doc: object) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += [(k, v)] if isinstance(v, str) else _strings(v)
    elif isinstance(doc, list):
        for v in doc:
            out += _strings(v)
    return out


def _check(doc: str, money: set[str], share: set[str]) -> None:
    for key, value in _strings(json.loads(doc)):
        if key in money:
            assert MONEY.match(value), f"{key}={value!r}: money must have exactly 2 decimals"
        if key in share:
            assert PLAIN.match(value), f"{key}={value!r}: a share must be a plain decimal"
        assert not re.fullmatch(r"-?[\d.]+[eE][-+]?\d+", value), f"{key}={value!r} is in exponent form"


@settings(max_examples=200, deadline=None)
@given(amount=cents, share=shares, cap=shares)
def test_the_verification_result_and_loan_events_never_put_out_an_exponent(amount, share, cap):
    product = contracts.EndProductResult(name="x", component_cost_eur=amount, non_eligible_cost_eur=amount,
                                         non_eligible_share=share, cap=cap, passes=True)
    result = contracts.VerificationResult(outcome="eligible", checked_at=NOW, rules_version="t",
                                          end_products=[product], findings=[])
    _check(result.model_dump_json(), {"component_cost_eur", "non_eligible_cost_eur"}, {"non_eligible_share", "cap"})
    line = contracts.FinancingLine(member_state="PL", amount_eur=amount)
    request = contracts.LoanRequested(correlation_id="c", case_id="c", reference="r", lead_member_state="PL",
                                      participants=["PL"], categories=[], contract_signed_on=date(2026, 1, 1),
                                      verification_outcome="eligible", financing=[line], contract_value_eur=amount,
                                      component_cost_eur=amount)
    _check(request.model_dump_json(), {"amount_eur", "contract_value_eur", "component_cost_eur"}, set())
    approved = contracts.LoanApproved(correlation_id="c", case_id="c",
                                      loans=[contracts.ApprovedLoan(loan_id="l", member_state="PL", amount_eur=amount)])
    _check(approved.model_dump_json(), {"amount_eur"}, set())


@settings(max_examples=200, deadline=None)
@given(amount=cents)
def test_the_loan_api_puts_out_money_with_exactly_two_decimals(amount):
    loan = loan_schemas.LoanPublic(loan_id="l", case_id="c", member_state="PL", amount_eur=amount, status="active",
                                   approved_at=NOW, released_at=None, instalments_paid_eur=amount,
                                   remaining_eur=amount - amount, pre_financing_cleared_eur=amount)
    _check(loan.model_dump_json(), {"amount_eur", "instalments_paid_eur", "remaining_eur",
                                    "pre_financing_cleared_eur"}, set())


def test_the_zero_share_of_an_all_eligible_product_is_plain():
    product = contracts.EndProductResult(name="x", component_cost_eur=Decimal("100"), non_eligible_cost_eur=Decimal(0),
                                         non_eligible_share=Decimal("0E-10"), cap=Decimal("0.35"), passes=True)
    doc = json.loads(product.model_dump_json())
    assert doc["non_eligible_share"] == "0.0000000000" and doc["non_eligible_cost_eur"] == "0.00"
    assert doc["component_cost_eur"] == "100.00"
