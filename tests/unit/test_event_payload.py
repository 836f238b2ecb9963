"""An event's outbox payload built around a field the caller serialized already is the same text as
`model_dump_json()` (origin verification stores its result in the report and sends it in the event; applications
stores the proposal in the case and sends it in ProcurementSubmitted)."""

from __future__ import annotations

import uuid

import pytest

from safe_procurement.services.origin_verification.adapters import mapping
from safe_procurement.shared import contracts
from safe_procurement.shared.kit.outbox import dump_json
from tests.unit.origin_verification.support import proposal, run


def _completed(trace_context: dict[str, str] | None = None) -> contracts.OriginVerificationCompleted:
    result = mapping.to_result(run(proposal()))
    assert result.end_products and result.findings  # a full report: decimals, nested lists, optional fields
    return contracts.OriginVerificationCompleted(correlation_id="c-1", case_id="c-1", causation_id=uuid.uuid4(),
                                                 result=result, trace_context=trace_context)


@pytest.mark.parametrize("trace_context", [None, {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}])
def test_the_payload_with_the_result_given_is_the_same_text(trace_context: dict[str, str] | None) -> None:
    event = _completed(trace_context)
    assert dump_json(event, ("result", event.result.model_dump_json())) == event.model_dump_json()


def test_only_the_last_field_can_be_given() -> None:
    event = _completed()
    with pytest.raises(ValueError, match="not the last field"):
        dump_json(event, ("case_id", '"c-1"'))


def test_a_submitted_proposal_given_as_text_makes_the_same_payload() -> None:
    """Applications stores the proposal's JSON in the case and sends it in ProcurementSubmitted."""
    p = proposal()
    event = contracts.ProcurementSubmitted(correlation_id="c-1", case_id="c-1", proposal=p)
    assert dump_json(event, ("proposal", p.model_dump_json())) == event.model_dump_json()
