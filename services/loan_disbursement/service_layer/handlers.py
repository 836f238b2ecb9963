"""Loan disbursement handlers: lock → load → decide (domain) → save ledger entries → record events,
all inside the caller's transaction. Balances come from the running totals the database keeps with every
ledger entry (see service_layer/ledger.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from safe_procurement.services.loan_disbursement.adapters import ledger
from safe_procurement.services.loan_disbursement.adapters.repository import LoanUnitOfWork
from safe_procurement.services.loan_disbursement.adapters.tables import (
    CaseWithdrawalRow,
    ClearingRow,
    FacilityRow,
    FacilityStatusChangeRow,
    LedgerEntry,
    LoanRequestRow,
    LoanRow,
    PlanDrawRow,
    PlanLineRow,
)
from safe_procurement.services.loan_disbursement.domain import lifecycle, rules
from safe_procurement.services.loan_disbursement.domain.money import CENT, ZERO, fmt, in_cents
from safe_procurement.services.loan_disbursement.domain.reference import Reference
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import Category, countries, streams
from safe_procurement.shared.contracts.ids import new_id
from safe_procurement.shared.kit.tables import utcnow

SERVICE = "loan_disbursement"
log = logging.getLogger("safe.loan_disbursement")


class NotFound(Exception):
    pass


@dataclass
class Outcome:
    """The result of an operator request: what was written, or every reason it was refused."""

    reasons: list[rules.Reason] = field(default_factory=list)
    entry: LedgerEntry | None = None
    facility: FacilityRow | None = None
    cleared: Decimal | None = None  # an instalment: the pre-financing cleared against its loan with it (L-9)

    @property
    def ok(self) -> bool:
        return not self.reasons


def _reasons_json(reasons: Any) -> str:
    return json.dumps([{"member_state": r.member_state, "rule": r.rule, "message": r.message} for r in reasons])


def _cents(amount: Decimal) -> Decimal:
    # "5000000" → 5000000.00; a fraction of a cent stays as it is and is rejected by the rules
    return amount.quantize(CENT) if amount.is_finite() and in_cents(amount) else amount


# --- seeding ------------------------------------------------------------------------------------------


async def seed(uow: LoanUnitOfWork, reference: Reference) -> list[str]:
    """Insert every facility (and its seeded plan) that is not there yet; never touches existing ones."""
    existing = await uow.ledger.all_facilities()
    added = []
    for f in reference.facilities:
        row = existing.get(f.member_state)
        if row is not None:
            if row.status is None:  # a facility stored before the lifecycle (migration 0003): its seeded status
                _seed_status(uow, row, f, reference.version)
            continue
        row = FacilityRow(
            member_state=f.member_state, max_eur=f.max_eur, tentative_eur=f.tentative_eur,
            council_max_eur=f.council_max_eur, pre_financing_eur=f.pre_financing_eur, source=f.source,
            confidence=f.confidence, notes=f.notes, supports_ukraine=reference.plan_supports_ukraine,
            plan_source=reference.plan_source,
        )
        uow.ledger.add(row)
        await uow.flush()
        _seed_status(uow, row, f, reference.version)
        for cat in Category:
            uow.ledger.add(PlanLineRow(member_state=f.member_state, category=cat.value, amount_eur=f.max_eur))
        uow.audit(actor="system", action="facility.seed", target=f"facilities/{f.member_state}",
                  reason=f"seeded from {reference.version}",
                  details=json.dumps({"max_eur": str(f.max_eur), "source": f.source}))
        added.append(f.member_state)
    return added


def _seed_status(uow: LoanUnitOfWork, row: FacilityRow, seed_row: Any, version: str) -> None:
    row.status = seed_row.status
    row.agreement_signed_on, row.agreement_reference = seed_row.agreement_signed_on, seed_row.agreement_reference
    if row.suspended:
        row.status_before_suspension, row.status = row.status, lifecycle.SUSPENDED
    uow.ledger.add(row)
    uow.ledger.add(FacilityStatusChangeRow(member_state=row.member_state, from_status=None, to_status=row.status,
                                        effective_on=seed_row.agreement_signed_on,
                                        reference=seed_row.agreement_reference or seed_row.source,
                                        reason=f"seeded from {version}", actor="system"))
    uow.audit(actor="system", action="facility.status.seed", target=f"facilities/{row.member_state}",
              reason=f"seeded from {version}", details=json.dumps({"status": row.status}))


# --- loan decision ---------------------------------------------------------------------------------------


# The decision's rows are written with Core INSERTs, in foreign-key order: in a batch transaction they are queued
# for one executemany per table at commit (tables in the order first queued: requests, loans, ledger, draws); in a
# savepoint or an operator's transaction they run at once. The ORM's unit of work would order them by class name
# instead, and building and flushing ORM objects per case costs more than the decision itself.
_REQUESTS, _LOANS, _LEDGER, _DRAWS = (t.__table__ for t in (LoanRequestRow, LoanRow, LedgerEntry, PlanDrawRow))


async def note_batch(uow: LoanUnitOfWork, events: list[Any]) -> None:
    """Prefetch hook: the cases of a batch, so that their earlier decisions are read with one query (under the
    facility locks, by the first decision of the batch)."""
    uow.ledger.note_batch([e.case_id for e in events])


def financing_cap(event: contracts.LoanRequested) -> rules.FinancingCap | None:
    """L-7's limit: the contract value, else (an assumption, named) the end products' component cost."""
    if event.contract_value_eur is not None:
        return rules.FinancingCap(event.contract_value_eur, "contract value")
    if event.component_cost_eur is not None:
        return rules.FinancingCap(event.component_cost_eur, "end products' component cost", (
            "L-7: no contract value was given, so the financing is compared with the end products' component cost "
            f"EUR {fmt(event.component_cost_eur)} (setting LOAN_DISBURSEMENT_FINANCING_WITHIN_CONTRACT_VALUE; "
            "source: SAFE_RULES.md §8 L-7 [assumed])"))
    return None


def _facility_states(state: Any, wanted: set[str], plans: dict[str, Any]) -> dict[str, rules.FacilityState]:
    """What the loan rules need of each facility the request names."""
    return {
        ms: rules.FacilityState(
            member_state=ms, max_eur=f.max_eur, approved_eur=f.approved, suspended=f.suspended,
            suspended_reason=f.suspended_reason, plan=plans.get(ms, {}), status=f.status,
            confidence=f.confidence, source=f.source,
        )
        for ms in wanted
        for f in (state.facilities[ms],)
    }


async def _record_request(uow: LoanUnitOfWork, event: contracts.LoanRequested, lines: list[rules.RequestedLine],
                          decision: Any, now: Any, event_id: str) -> None:
    """The case's decision row: its primary key makes a second decision of the case fail."""
    await uow.ledger.insert(_REQUESTS, [{
        "case_id": event.case_id, "event_id": event_id, "reference": event.reference,
        "status": "approved" if decision.approved else "rejected", "verification_outcome": event.verification_outcome,
        "requested": json.dumps([{"member_state": x.member_state, "amount_eur": str(x.amount_eur)} for x in lines]),
        "categories": json.dumps(sorted(set(event.categories))), "participants": json.dumps(event.participants),
        "reasons": _reasons_json(decision.reasons), "decided_at": now, "withdrawn_at": None,
        "assumptions": json.dumps(list(decision.assumptions)),
    }])


async def _approve(uow: LoanUnitOfWork, state: Any, event: contracts.LoanRequested,
                   lines: list[rules.RequestedLine], decision: Any, now: Any, event_id: str) -> None:
    """One loan per line, reserved on its facility's ledger, its category draws, and LoanApproved."""
    loans = [{"loan_id": new_id(), "case_id": event.case_id, "member_state": line.member_state,
              "amount_eur": line.amount_eur, "status": "active", "approved_at": now, "released_at": None}
             for line in lines]
    await uow.ledger.insert(_LOANS, loans)
    await uow.ledger.insert(_LEDGER, [
        {"member_state": loan["member_state"], "case_id": event.case_id, "loan_id": loan["loan_id"],
         "kind": "reservation", "amount": loan["amount_eur"], "at": now, "event_id": event_id,
         "reason": f"loan approved for case {event.reference}", "requested_on": None, "actor": SERVICE}
        for loan in loans
    ])
    draws = [{"loan_id": loan["loan_id"], "category": cat, "member_state": loan["member_state"], "amount_eur": amount}
             for loan in loans for cat, amount in decision.plan_draws[loan["member_state"]].items()]
    if draws:
        await uow.ledger.insert(_DRAWS, draws)
    for loan in loans:  # what the triggers add to the running totals when these rows go in
        state.record_approval(loan["member_state"], loan["amount_eur"], decision.plan_draws[loan["member_state"]])
    uow.emit(streams.LOAN_APPROVED, contracts.LoanApproved(
        correlation_id=event.case_id, causation_id=event.event_id, case_id=event.case_id,
        loans=[contracts.ApprovedLoan(loan_id=loan["loan_id"], member_state=loan["member_state"],
                                      amount_eur=loan["amount_eur"]) for loan in loans],
        assumptions=list(decision.assumptions),
    ))


async def on_loan_requested(event: contracts.LoanRequested, uow: LoanUnitOfWork, reference: Reference, *,
                            loans_from: str = lifecycle.DECIDED, check_financing_cap: bool = True) -> None:
    """Decide the whole case in this transaction: every line approved and reserved, or nothing reserved.

    Reads O(1) rows whatever the size of the ledger: the facilities (locked and read once per transaction, so a
    batch of requests shares them), the case's earlier decision, and the running totals of the plan lines."""
    state = await uow.ledger.decisions()  # every facility locked, in member_state order
    existing, withdrawn_reason = await state.earlier_decision(event.case_id, uow.ledger.batch_cases)
    if existing is not None:
        # a second request for a decided case (new event id): never decide or reserve again
        status, decided_by = existing
        uow.audit(SERVICE, "loan_request.duplicate", f"loan-requests/{event.case_id}", correlation_id=event.correlation_id,
                  reason=f"case already decided ({status}) by event {decided_by}",
                  details={"event_id": str(event.event_id)})
        log.warning("duplicate loan request ignored", extra={"event_id": str(event.event_id),
                                                             "correlation_id": event.case_id})
        return
    lines = [rules.RequestedLine(countries.canonical(f.member_state), _cents(f.amount_eur)) for f in event.financing]
    wanted = {line.member_state for line in lines} & state.facilities.keys()
    plans = await state.plan_remaining(wanted)
    states = _facility_states(state, wanted, plans)
    decision = rules.decide_loan_request(
        lines=lines, verification_outcome=event.verification_outcome, categories=event.categories,
        facilities=states, eu_member_states=reference.eu_member_states, withdrawn_reason=withdrawn_reason,
        participants=[countries.canonical(p) for p in event.participants], loans_from=loans_from,
        financing_cap=financing_cap(event) if check_financing_cap else None,
    )
    now, event_id = utcnow(), str(event.event_id)
    # the case's decision row first (in a batch its rows go in with the batch's bulk INSERT, parents first): a
    # concurrent second decision of the case fails on its primary key, at once or at the batch's commit (the kit
    # then redoes the batch message by message)
    await _record_request(uow, event, lines, decision, now, event_id)
    state.record_decision(event.case_id, "approved" if decision.approved else "rejected", event_id)
    if not decision.approved:
        uow.emit(streams.LOAN_REJECTED, contracts.LoanRejected(
            correlation_id=event.case_id, causation_id=event.event_id, case_id=event.case_id,
            reasons=[contracts.LoanDecisionReason(member_state=r.member_state, rule=r.rule, message=r.message)
                     for r in decision.reasons],
            assumptions=list(decision.assumptions),
        ))
        return
    await _approve(uow, state, event, lines, decision, now, event_id)


async def on_procurement_withdrawn(event: contracts.ProcurementWithdrawn, uow: LoanUnitOfWork) -> None:
    """Release every reservation of the case, once; remember the withdrawal for a later loan request."""
    await uow.ledger.decisions()  # every facility locked, in member_state order (as a loan decision does)
    if await uow.ledger.withdrawal(event.case_id) is not None:
        return  # already released (a second withdrawal event for the case changes nothing)
    uow.ledger.forget()  # releases change the balances and plan remainders a later decision would reuse
    now = utcnow()
    loans = await uow.ledger.active_loans(event.case_id)
    released = ZERO
    facilities = await uow.ledger.lock_facilities({loan.member_state for loan in loans}) if loans else {}
    kept: list[dict[str, str]] = []
    money: dict[str, lifecycle.Advances] = {}
    for loan in loans:
        a = money.get(loan.member_state) or await uow.ledger.advances(facilities[loan.member_state])
        refused = lifecycle.check_release(a, loan.amount_eur)
        if refused is not None:  # money already paid out against it: the loan stays (L-9), said in the audit
            kept.append({"loan_id": loan.loan_id, "member_state": loan.member_state, "reason": str(refused)})
            money[loan.member_state] = a
            continue
        money[loan.member_state] = lifecycle.Advances(a.member_state, a.approved - loan.amount_eur, a.pre_financing,
                                                      a.instalments, a.cleared)
        uow.ledger.add(LedgerEntry(member_state=loan.member_state, case_id=loan.case_id, loan_id=loan.loan_id,
                                kind="release", amount=loan.amount_eur, at=now, event_id=str(event.event_id),
                                reason=f"case withdrawn: {event.reason}"))
        loan.status = "released"
        loan.released_at = now
        uow.ledger.add(loan)
        released += loan.amount_eur
    request = await uow.ledger.request(event.case_id)
    if request is not None:
        request.withdrawn_at = now
        uow.ledger.add(request)
    uow.ledger.add(CaseWithdrawalRow(case_id=event.case_id, event_id=str(event.event_id), reason=event.reason,
                                  withdrawn_at=now, released_eur=released))
    uow.audit(SERVICE, "case.withdrawn", f"loan-requests/{event.case_id}", correlation_id=event.correlation_id,
              reason=event.reason,
              details={"released_eur": str(released), "loans": [loan.loan_id for loan in loans
                                                                   if loan.status == "released"], "kept": kept})


# --- operator requests -----------------------------------------------------------------------------------


async def _locked(uow: LoanUnitOfWork, member_state: str) -> FacilityRow:
    row = (await uow.ledger.lock_facilities([member_state])).get(member_state)
    if row is None:
        raise NotFound(member_state)
    return row


def _refused(uow: LoanUnitOfWork, actor: str, action: str, target: str, reasons: list[rules.Reason],
             details: dict[str, Any]) -> Outcome:
    # a refusal is a decision too: recorded with its reasons (the transaction still commits)
    uow.audit(actor=actor, action=f"{action}.refused", target=target,
              reason="; ".join(str(r) for r in reasons), details=json.dumps(details, default=str))
    return Outcome(reasons=reasons)


async def update_facility(
    uow: LoanUnitOfWork, member_state: str, changes: dict[str, Any], *, reason: str, actor: str,
    share: Decimal, envelope: Decimal = lifecycle.ENVELOPE_EUR, today: date | None = None,
) -> Outcome:
    """Set the maximum / pre-financing / suspension / lifecycle status (and source, confidence); audited with the
    reason. Every facility is locked (member_state order): L-10 sums all their maxima."""
    rows = await uow.ledger.lock_facilities()
    row = rows.get(member_state)
    if row is None:
        raise NotFound(member_state)
    bal = ledger.Balance.of(row)  # the running totals, just read under the lock
    new_max = changes.get("max_eur", row.max_eur)
    new_pre = changes["pre_financing_eur"] if "pre_financing_eur" in changes else row.pre_financing_eur
    target = f"facilities/{member_state}"
    reasons = rules.check_facility_update(member_state=member_state, max_eur=new_max, pre_financing_eur=new_pre,
                                          approved_eur=bal.approved, pre_financing_paid_eur=bal.pre_financing,
                                          share=share)
    if new_max != row.max_eur:
        reasons += lifecycle.check_envelope(member_state, new_max, {ms: r.max_eur for ms, r in rows.items()}, envelope)
    current = row.status or lifecycle.DECIDED
    status = changes.get("status")
    if status is None and changes.get("suspended") is not None:  # the v1 switch: suspend / reinstate
        if changes["suspended"] and current != lifecycle.SUSPENDED:
            status = lifecycle.SUSPENDED
        elif not changes["suspended"] and current == lifecycle.SUSPENDED:
            status = row.status_before_suspension or lifecycle.DECIDED
    change = None
    if status is not None:
        change = lifecycle.StatusChange(
            member_state=member_state, current=current, target=status, before_suspension=row.status_before_suspension,
            agreement_signed_on=changes.get("agreement_signed_on"), agreement_reference=changes.get("agreement_reference"),
            effective_on=changes.get("effective_on"), today=today or utcnow().date(),
        )
        reasons += lifecycle.check_status_change(change)
    if reasons:
        return _refused(uow, actor, "facility.update", target, reasons, {"changes": changes})
    before = {"max_eur": row.max_eur, "pre_financing_eur": row.pre_financing_eur, "suspended": row.suspended,
              "source": row.source, "confidence": row.confidence, "status": row.status}
    row.max_eur, row.pre_financing_eur = new_max, new_pre
    if change is not None:
        _apply_status(uow, row, change, changes.get("status_reference"), reason=reason, actor=actor)
    elif changes.get("suspended") is not None:
        row.suspended_reason = reason if row.suspended else None
    for key in ("source", "confidence", "notes"):
        if changes.get(key) is not None:
            setattr(row, key, changes[key])
    row.updated_at = utcnow()
    uow.ledger.add(row)
    after = {k: getattr(row, k) for k in before}
    uow.audit(actor=actor, action="facility.update", target=target, reason=reason,
              details=json.dumps({"before": before, "after": after}, default=str))
    return Outcome(facility=row)


async def change_facility_status(
    uow: LoanUnitOfWork, member_state: str, status: str, *, reason: str, actor: str,
    effective_on: date | None = None, reference: str | None = None, agreement_signed_on: date | None = None,
    agreement_reference: str | None = None, today: date | None = None, share: Decimal = Decimal("0.15"),
) -> Outcome:
    """L-8: move a facility along its lifecycle, audited and kept in its status history — one call, so that an
    approval gate (four eyes) can wrap it. Refused changes are audited too and come back as reasons."""
    changes: dict[str, Any] = {"status": status, "effective_on": effective_on, "status_reference": reference,
                               "agreement_signed_on": agreement_signed_on, "agreement_reference": agreement_reference}
    return await update_facility(uow, member_state, changes, reason=reason, actor=actor, share=share, today=today)


def _apply_status(uow: LoanUnitOfWork, row: FacilityRow, change: lifecycle.StatusChange, reference: str | None,
                  *, reason: str, actor: str) -> None:
    if change.target == lifecycle.SUSPENDED:
        row.status_before_suspension = change.current
        row.suspended, row.suspended_reason = True, reason
    else:
        row.suspended, row.suspended_reason = False, None
    if change.target == lifecycle.SIGNED and change.current != lifecycle.SUSPENDED:
        row.agreement_signed_on, row.agreement_reference = change.agreement_signed_on, change.agreement_reference
    row.status = change.target
    row.status_changed_on = change.effective_on or change.agreement_signed_on or change.today
    row.status_reference = reference or change.agreement_reference
    uow.ledger.add(FacilityStatusChangeRow(
        member_state=row.member_state, from_status=change.current, to_status=change.target,
        effective_on=row.status_changed_on, reference=row.status_reference, reason=reason, actor=actor,
    ))


async def amend_plan(
    uow: LoanUnitOfWork, member_state: str, lines: dict[str, Decimal], *, supports_ukraine: bool,
    source: str | None, reason: str, actor: str,
) -> FacilityRow:
    """Replace the facility's investment plan (narrow or widen it); audited with the reason. Loans already
    approved keep what they drew; the new lines govern later requests."""
    row = await _locked(uow, member_state)
    before = await uow.ledger.plan_lines(member_state)
    await uow.ledger.replace_plan(member_state, dict(sorted(lines.items())))
    row.supports_ukraine = supports_ukraine
    if source:
        row.plan_source = source
    row.plan_version += 1
    row.updated_at = utcnow()
    uow.ledger.add(row)
    uow.audit(actor=actor, action="plan.amend", target=f"facilities/{member_state}/plan", reason=reason,
              details=json.dumps({"before": before, "after": lines,
                                  "supports_ukraine": supports_ukraine, "version": row.plan_version},
                                 default=str))
    return row


async def pay_pre_financing(
    uow: LoanUnitOfWork, member_state: str, amount: Decimal, requested_on: date, *, actor: str,
    last_request_on: date, share: Decimal, note: str | None = None,
) -> Outcome:
    row = await _locked(uow, member_state)
    bal = ledger.Balance.of(row)  # the running totals, just read under the lock
    reasons = rules.check_pre_financing(
        member_state=member_state, max_eur=row.max_eur, configured=row.pre_financing_eur, paid_eur=bal.pre_financing,
        amount=amount, requested_on=requested_on, last_request_on=last_request_on, suspended=row.suspended,
        suspended_reason=row.suspended_reason, share=share, status=row.status or lifecycle.DECIDED,
    )
    reasons += lifecycle.check_advance(await uow.ledger.advances(row), pre_financing=amount)
    target = f"facilities/{member_state}/pre-financing"
    if reasons:
        return _refused(uow, actor, "pre_financing.pay", target, reasons,
                        {"amount_eur": amount, "requested_on": requested_on})
    entry = LedgerEntry(member_state=member_state, kind="pre_financing", amount=amount, requested_on=requested_on,
                        actor=actor, reason=_with_assumption(
                            note or f"pre-financing EUR {fmt(amount)}: an advance on the approved loans, cleared "
                                    "against later instalments (L-9)", row))
    uow.ledger.add(entry)
    await uow.flush()
    uow.audit(actor=actor, action="pre_financing.pay", target=target, reason=entry.reason,
              details=json.dumps({"ledger_entry": entry.id, "amount_eur": str(amount)}))
    return Outcome(entry=entry, facility=row)


async def pay_instalment(
    uow: LoanUnitOfWork, loan_id: str, amount: Decimal, requested_on: date, *, actor: str,
    last_request_on: date, note: str | None = None,
) -> Outcome:
    loan = await uow.ledger.loan(loan_id)
    if loan is None:
        raise NotFound(loan_id)
    row = await _locked(uow, loan.member_state)
    await uow.ledger.reread(loan)  # re-read under the facility lock (a withdrawal may just have released it)
    paid = await uow.ledger.instalments_paid(loan_id)
    reasons = rules.check_instalment(
        member_state=loan.member_state, loan_amount=loan.amount_eur, paid_eur=paid, amount=amount,
        requested_on=requested_on, last_request_on=last_request_on, suspended=row.suspended,
        suspended_reason=row.suspended_reason, loan_active=loan.status == "active",
        status=row.status or lifecycle.DECIDED,
    )
    clearing = lifecycle.clear_instalment(
        await uow.ledger.advances(row), loan_amount=loan.amount_eur, loan_instalments=paid,
        loan_cleared=await uow.ledger.cleared_on_loan(loan_id), amount=amount,
    )
    if loan.status == "active" and not any(r.rule == rules.L3 for r in reasons):
        reasons += clearing.reasons  # L-3 already says the loan is exhausted: L-9 would only repeat it
    target = f"loans/{loan_id}/instalments"
    if reasons:
        return _refused(uow, actor, "instalment.pay", target, reasons,
                        {"amount_eur": amount, "requested_on": requested_on})
    text_ = note or f"instalment EUR {fmt(amount)} on loan {loan_id}"
    if clearing.cleared:
        text_ += f"; EUR {fmt(clearing.cleared)} of pre-financing paid in advance cleared against this loan (L-9)"
    entry = LedgerEntry(member_state=loan.member_state, case_id=loan.case_id, loan_id=loan_id, kind="instalment",
                        amount=amount, requested_on=requested_on, actor=actor, reason=_with_assumption(text_, row))
    uow.ledger.add(entry)
    await uow.flush()
    if clearing.cleared:
        assert entry.id is not None
        uow.ledger.add(ClearingRow(ledger_entry_id=entry.id, member_state=loan.member_state, loan_id=loan_id,
                                amount=clearing.cleared))
    uow.audit(actor=actor, action="instalment.pay", target=target, correlation_id=loan.case_id,
              reason=entry.reason, details=json.dumps({"ledger_entry": entry.id, "amount_eur": str(amount),
                                                       "pre_financing_cleared_eur": str(clearing.cleared)}))
    return Outcome(entry=entry, facility=row, cleared=clearing.cleared)


def _with_assumption(text_: str, row: FacilityRow) -> str:
    note = lifecycle.amount_assumption(row.member_state, row.confidence, row.max_eur, row.source)
    return f"{text_} [{note}]" if note else text_
