"""Origin verification handlers against a fake unit of work: a verdict per request, once; none before the
registry replica is complete."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from safe_procurement.services.origin_verification.bootstrap import Dependencies
from safe_procurement.services.origin_verification.service_layer import handlers
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.messaging import Defer
from tests.service_layer.fakes import FakeVerificationUnitOfWork
from tests.unit.origin_verification.seed import seed_reference
from tests.unit.origin_verification.support import NOW, rulebook

SCENARIOS = Path(__file__).resolve().parents[2] / "services" / "scenarios"


def submitted(scenario: str) -> contracts.ProcurementSubmitted:
    data = json.loads((SCENARIOS / f"{scenario}.json").read_text())
    case_id = str(uuid.uuid4())
    return contracts.ProcurementSubmitted(correlation_id=case_id, case_id=case_id,
                                          proposal=contracts.Proposal.model_validate(data["proposal"]))


def deps() -> Dependencies:
    return Dependencies(rules=rulebook(), clock=lambda: NOW, replica_retry_s=0.5)


@pytest.mark.parametrize(("scenario", "outcome"), [("01-baseline-pass", "eligible"),
                                                   ("22-contractor-controlled-from-china", "ineligible")])
async def test_a_request_is_answered_with_its_verdict_and_the_report_is_kept(scenario: str, outcome: str) -> None:
    uow = FakeVerificationUnitOfWork(seed_reference())
    event = submitted(scenario)
    d = deps()
    await handlers.on_verification_requested(event, uow, d)
    [answer] = uow.emitted_on(streams.ORIGIN_VERIFICATION_COMPLETED)
    assert (answer.case_id, answer.causation_id, answer.result.outcome) == (event.case_id, event.event_id, outcome)
    [report] = uow.reports.rows
    assert (report["request_event_id"], report["outcome"]) == (str(event.event_id), outcome)
    assert d.replica.status is not None and d.replica.status.ready
    await handlers.on_verification_requested(event, uow, d)  # the same request again
    assert len(uow.events) == 1 and len(uow.reports.rows) == 1


async def test_no_verdict_before_the_replica_is_complete() -> None:
    uow = FakeVerificationUnitOfWork(seed_reference(), ready=False)
    d = deps()
    with pytest.raises(Defer) as deferred:
        await handlers.on_verification_requested(submitted("01-baseline-pass"), uow, d)
    assert deferred.value.delay_s == 0.5
    assert uow.events == [] and uow.reports.rows == []
    assert d.replica.status is not None and not d.replica.status.ready
    published = contracts.ReferenceDataPublished(correlation_id="registry", registry_version=1, seed_version="s",
                                                 countries=1, agreements=0)
    await handlers.on_reference_data_published(published, uow, d)
    assert d.replica.status is not None and d.replica.status.ready
    await handlers.on_verification_requested(submitted("01-baseline-pass"), uow, d)
    assert len(uow.emitted_on(streams.ORIGIN_VERIFICATION_COMPLETED)) == 1
