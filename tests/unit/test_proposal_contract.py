import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from safe_procurement.shared.contracts import Proposal
from tests import builders

SCENARIOS = Path(__file__).resolve().parents[2] / "services" / "scenarios"  # shipped with the package


def errors(body) -> set[str]:
    with pytest.raises(ValidationError) as e:
        Proposal.model_validate_json(json.dumps(body))
    return {".".join(str(p) for p in err["loc"]) for err in e.value.errors()}


def test_the_contract_example_parses():
    p = Proposal.model_validate_json(builders.demo_text())
    assert p.financing[0].amount_eur == Decimal("950000.00")


def test_every_example_scenario_proposal_parses():
    files = sorted(SCENARIOS.glob("*.json"))
    assert len(files) >= 10, f"the example scenarios are missing from {SCENARIOS}"
    for f in files:
        Proposal.model_validate(json.loads(f.read_text())["proposal"])


def test_json_numbers_become_exact_decimals_not_floats():
    raw = builders.demo_text().replace('"950000.00"', "950000.10")
    p = Proposal.model_validate_json(raw)
    assert p.financing[0].amount_eur == Decimal("950000.10")
    assert isinstance(p.financing[0].amount_eur, Decimal)


def test_every_bad_field_is_reported_at_once():
    body = builders.demo()
    body["participants"] = ["PL", "XX"]
    body["contract_signed_on"] = "not a date"
    body["end_products"][0]["components"][0]["cost_eur"] = "12.345"
    body["end_products"][0]["category"] = "lasers"
    del body["title"]
    locs = errors(body)
    assert {"participants.1", "contract_signed_on", "end_products.0.components.0.cost_eur",
            "end_products.0.category", "title"} <= locs


def test_negative_amounts_and_shares_above_one_are_refused():
    body = builders.demo()
    body["financing"][0]["amount_eur"] = "-1.00"
    body["subcontractors"] = [{"name": "s", "established_in": "US", "share_of_contract_value": "1.5"}]
    locs = errors(body)
    assert "financing.0.amount_eur" in locs
    assert "subcontractors.0.share_of_contract_value" in locs


def test_aliases_fold_to_one_canonical_code():
    body = builders.demo()
    body["participants"] = ["PL", "GR"]
    body["end_products"][0]["components"][0]["origin_country"] = "UK"
    p = Proposal.model_validate(body)
    assert p.participants == ["PL", "EL"]
    assert p.end_products[0].components[0].origin_country == "GB"


def test_the_lead_member_state_must_participate():
    body = builders.demo()
    body["lead_member_state"] = "FR"
    with pytest.raises(ValidationError, match="lead_member_state"):
        Proposal.model_validate(body)


def test_unknown_fields_are_refused_rather_than_silently_dropped():
    body = builders.demo()
    body["financnig"] = []
    assert "financnig" in errors(body)


def test_a_seventeen_digit_json_number_keeps_every_digit_when_parsed_as_the_service_does():
    raw = builders.demo_text().replace('"950000.00"', "999999999999999.99")
    p = Proposal.model_validate(json.loads(raw, parse_float=Decimal))
    assert p.financing[0].amount_eur == Decimal("999999999999999.99")
