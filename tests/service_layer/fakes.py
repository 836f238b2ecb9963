"""Fake units of work: in-memory repositories with the interfaces of `services/<svc>/adapters/repository.py`,
and an outbox that keeps what the handlers emit. No Redis, no database: the handlers run as they do in a
message batch or a request, and a test reads what they stored and emitted."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from safe_procurement.services.applications.adapters.repository import Case
from safe_procurement.services.applications.adapters.tables import ProposalRevisionRow
from safe_procurement.services.loan_disbursement.adapters import ledger
from safe_procurement.services.loan_disbursement.domain.money import ZERO
from safe_procurement.services.origin_verification.adapters import replica
from safe_procurement.services.origin_verification.domain.reference import ReferenceData
from safe_procurement.services.partner_registry.adapters.tables import (
    AgreementVersionRow,
    CountryVersionRow,
    RegistryMetaRow,
)
from safe_procurement.shared.kit.uow import Delivery


class FakeUnitOfWork:
    """What every service's unit of work offers besides its repositories: the outbox, the audit trail."""

    def __init__(self) -> None:
        self.events: list[tuple[str, BaseModel]] = []
        self.audits: list[dict[str, Any]] = []
        self.emitted = 0
        self.batch = False
        self.delivery: Delivery | None = None

    def emit(self, stream: str, event: BaseModel, *, last: tuple[str, str] | None = None) -> None:
        self.events.append((stream, event))
        self.emitted += 1

    def audit(self, actor: str, action: str, target: str, *, correlation_id: str | None = None,
              reason: str | None = None, details: Any = None) -> None:
        self.audits.append({"actor": actor, "action": action, "target": target, "correlation_id": correlation_id,
                            "reason": reason, "details": details})

    async def flush(self) -> None:
        return None

    def emitted_on(self, stream: str) -> list[Any]:
        return [event for s, event in self.events if s == stream]


# --- applications ---------------------------------------------------------------------------------------


class FakeCases:
    """Stored cases are copies: a handler's change is stored only when it saves the case."""

    def __init__(self) -> None:
        self.stored: dict[str, Case] = {}
        self.participants: dict[str, list[str]] = {}
        self._seq = itertools.count(1)

    async def prefetch(self, case_ids: list[str]) -> None:
        return None

    async def prefetch_references(self, references: list[str]) -> None:
        return None

    async def get(self, case_id: str) -> Case | None:
        case = self.stored.get(case_id)
        return dataclasses.replace(case) if case else None

    async def by_reference(self, reference: str) -> Case | None:
        found = [c for c in self.stored.values() if c.reference == reference]
        return dataclasses.replace(found[0]) if found else None

    async def add(self, case: Case, countries: list[str]) -> Case | None:
        existing = await self.by_reference(case.reference)
        if existing is not None:
            return existing
        case.seq = next(self._seq)
        self.stored[case.id] = dataclasses.replace(case)
        self.participants[case.id] = list(countries)
        return None

    async def save(self, case: Case, *, expected: str | None = None) -> None:
        assert case.id in self.stored, "save of a case never added"
        if expected is None or self.stored[case.id].status == expected:
            self.stored[case.id] = dataclasses.replace(case)

    async def replace_proposal(self, case: Case, text: str, *, participants: list[str]) -> None:
        case.proposal = text
        self.participants[case.id] = list(participants)


class FakeTimeline:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(self, case_id: str, type_: str, summary: str, **fields: Any) -> None:
        self.entries.append({"case_id": case_id, "type": type_, "summary": summary, **fields})

    def types(self, case_id: str) -> list[str]:
        return [e["type"] for e in self.entries if e["case_id"] == case_id]


class FakeRevisions:
    def __init__(self) -> None:
        self.rows: list[ProposalRevisionRow] = []

    async def last(self, case_id: str) -> int | None:
        return max((r.revision for r in self.rows if r.case_id == case_id), default=None)

    async def add(self, *rows: ProposalRevisionRow) -> None:
        self.rows.extend(rows)

    async def of_case(self, case_id: str) -> list[ProposalRevisionRow]:
        return sorted((r for r in self.rows if r.case_id == case_id), key=lambda r: r.revision)


class FakeApplicationsUnitOfWork(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.cases = FakeCases()
        self.timeline = FakeTimeline()
        self.revisions = FakeRevisions()


# --- partner registry -----------------------------------------------------------------------------------


class FakeRegistry:
    def __init__(self) -> None:
        self.meta = RegistryMetaRow(id=1)
        self.country_rows: list[CountryVersionRow] = []
        self.agreement_rows: list[AgreementVersionRow] = []

    async def lock_meta(self) -> RegistryMetaRow:
        return self.meta

    async def countries(self, *, country: str | None = None, as_of: int | None = None) -> list[CountryVersionRow]:
        rows = [r for r in self.country_rows if (country is None or r.country == country)
                and (as_of is None or r.registry_version <= as_of)]
        return sorted(rows, key=lambda r: (r.country, r.version))

    async def agreements(
        self, *, country: str | None = None, agreement_id: str | None = None, as_of: int | None = None
    ) -> list[AgreementVersionRow]:
        rows = [r for r in self.agreement_rows if (country is None or r.country == country)
                and (agreement_id is None or r.agreement_id == agreement_id)
                and (as_of is None or r.registry_version <= as_of)]
        return sorted(rows, key=lambda r: (r.agreement_id, r.version))

    def add(self, row: Any) -> None:
        if isinstance(row, CountryVersionRow):
            self.country_rows.append(row)
        elif isinstance(row, AgreementVersionRow):
            self.agreement_rows.append(row)
        else:
            self.meta = row


class FakeRegistryUnitOfWork(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.registry = FakeRegistry()


# --- origin verification --------------------------------------------------------------------------------


class FakeReports:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def prefetch(self, request_event_ids: list[str]) -> None:
        return None

    async def answered(self, request_event_id: str) -> bool:
        return any(r["request_event_id"] == request_event_id for r in self.rows)

    def add(self, **values: Any) -> None:
        self.rows.append(values)


class FakeReplica:
    """A replica holding `reference`, ready once the registry's publication has been received."""

    def __init__(self, reference: ReferenceData, *, ready: bool = True) -> None:
        self.held = reference
        self.ready = ready
        self.received: list[BaseModel] = []

    async def readiness(self) -> replica.Readiness:
        if not self.ready:
            return replica.Readiness(False, "no ReferenceDataPublished received from the partner registry yet")
        return replica.Readiness(True, "complete", registry_version=self.held.registry_version,
                                 fingerprint=(self.held.registry_version,))

    async def reference(self, registry_version: int | None) -> ReferenceData:
        return self.held

    async def upsert_country(self, event: BaseModel) -> None:
        self.received.append(event)

    async def upsert_agreement(self, event: BaseModel) -> None:
        self.received.append(event)

    async def record_publication(self, event: BaseModel) -> None:
        self.received.append(event)
        self.ready = True


class FakeVerificationUnitOfWork(FakeUnitOfWork):
    def __init__(self, reference: ReferenceData, *, ready: bool = True) -> None:
        super().__init__()
        self.reports = FakeReports()
        self.replica = FakeReplica(reference, ready=ready)


# --- loan disbursement ----------------------------------------------------------------------------------


class FakeDecisions(ledger.Decisions):
    """The decision state over in-memory facilities and plans (the SQL one reads them under locks)."""

    async def plan_remaining(self, member_states: Iterable[str]) -> dict[str, dict[str, Decimal]]:
        return {ms: self.plans.setdefault(ms, {}) for ms in sorted(set(member_states))}

    async def earlier_decision(self, case_id: str, batch: Sequence[str] = ()) -> tuple[tuple[str, str] | None, str | None]:
        return self.known.get(case_id), self.withdrawn.get(case_id)


class FakeLedger:
    def __init__(self, facilities: dict[str, Decimal], *, plan: dict[str, Decimal] | None = None,
                 status: str = "decided") -> None:
        self.state = FakeDecisions(scope=None, conn=None, facilities={  # type: ignore[arg-type]
            ms: ledger.FacilityValues(ms, max_eur, ZERO, False, None, status) for ms, max_eur in facilities.items()
        }, plans={ms: dict(plan or {}) for ms in facilities})
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.batch_cases: list[str] = []

    def note_batch(self, case_ids: list[str]) -> None:
        self.batch_cases = list(case_ids)

    async def decisions(self) -> ledger.Decisions:
        return self.state

    def forget(self) -> None:
        return None

    async def insert(self, table: Any, rows: list[dict[str, Any]]) -> None:
        self.rows.setdefault(table.name, []).extend(rows)

    def approved(self, member_state: str) -> Decimal:
        return sum((r["amount"] for r in self.rows.get("ledger_entries", []) if r["member_state"] == member_state
                    and r["kind"] == "reservation"), start=ZERO)


class FakeLoanUnitOfWork(FakeUnitOfWork):
    def __init__(self, facilities: dict[str, Decimal], **ledger_options: Any) -> None:
        super().__init__()
        self.ledger = FakeLedger(facilities, **ledger_options)
