"""The facilities seed (docs/safe-rules.md §7) as plain data, validated; parsing only, no file I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from safe_procurement.services.loan_disbursement.domain import lifecycle
from safe_procurement.services.loan_disbursement.domain.money import exact, in_cents

CONFIDENCE = ("official", "secondary", "assumed")


@dataclass(frozen=True)
class FacilitySeed:
    member_state: str
    max_eur: Decimal
    tentative_eur: Decimal | None
    council_max_eur: Decimal | None
    pre_financing_eur: Decimal | None
    source: str
    confidence: str
    notes: str
    status: str = lifecycle.DECIDED
    agreement_signed_on: date | None = None
    agreement_reference: str | None = None


@dataclass(frozen=True)
class Reference:
    version: str
    eu_member_states: frozenset[str]
    facilities: tuple[FacilitySeed, ...]
    plan_source: str
    plan_supports_ukraine: bool


class SeedError(ValueError):
    pass


def _amount(raw: Any, where: str) -> Decimal | None:
    if raw is None:
        return None
    if not isinstance(raw, str):  # YAML numbers may have become floats: refuse them
        raise SeedError(f"{where}: amounts must be quoted decimal strings, got {type(raw).__name__}")
    try:
        value = exact(Decimal(raw), where)
    except (InvalidOperation, ValueError) as e:
        raise SeedError(f"{where}: {raw!r} is not a decimal amount") from e
    if value < 0 or not in_cents(value):
        raise SeedError(f"{where}: {raw!r} must be a non-negative amount in cents")
    return value


def parse(data: dict[str, Any]) -> Reference:
    """The seed document (already loaded from YAML/JSON) as a validated `Reference`."""
    eu = frozenset(str(c).upper() for c in data.get("eu_member_states") or [])
    seen: set[str] = set()
    out = []
    for i, f in enumerate(data.get("facilities") or []):
        ms = str(f["member_state"]).upper()
        where = f"facilities[{i}] ({ms})"
        if ms in seen:
            raise SeedError(f"{where}: listed twice")
        if ms not in eu:
            raise SeedError(f"{where}: not an EU Member State, cannot have a SAFE facility")
        seen.add(ms)
        tentative = _amount(f.get("tentative_eur"), f"{where}.tentative_eur")
        council = _amount(f.get("council_max_eur"), f"{where}.council_max_eur")
        maximum = council if council is not None else tentative
        if maximum is None:
            raise SeedError(f"{where}: neither a Council maximum nor a tentative allocation")
        confidence = str(f.get("confidence") or "assumed")
        if confidence not in CONFIDENCE:
            raise SeedError(f"{where}: confidence must be one of {CONFIDENCE}")
        status = str(f.get("status") or lifecycle.DECIDED)
        if status not in (lifecycle.PENDING, lifecycle.DECIDED, lifecycle.SIGNED):
            raise SeedError(f"{where}: status must be pending, decided or agreement_signed")
        signed_on, signed_ref = f.get("agreement_signed_on"), f.get("agreement_reference")
        if (status == lifecycle.SIGNED) != (signed_on is not None and bool(signed_ref)):
            raise SeedError(f"{where}: agreement_signed needs agreement_signed_on and agreement_reference (and only it)")
        out.append(FacilitySeed(
            member_state=ms, max_eur=maximum, tentative_eur=tentative, council_max_eur=council,
            pre_financing_eur=_amount(f.get("pre_financing_eur"), f"{where}.pre_financing_eur"),
            source=str(f.get("source") or ""), confidence=confidence, notes=str(f.get("notes") or ""),
            status=status, agreement_signed_on=None if signed_on is None else date.fromisoformat(str(signed_on)),
            agreement_reference=None if signed_ref is None else str(signed_ref),
        ))
    total = sum((x.max_eur for x in out), exact(lifecycle.ZERO))
    if total > lifecycle.ENVELOPE_EUR:
        raise SeedError(f"L-10: the facilities' maxima total {total}, above the SAFE envelope {lifecycle.ENVELOPE_EUR}")
    plan = data.get("plan_seed") or {}
    return Reference(
        version=str(data.get("version") or ""), eu_member_states=eu, facilities=tuple(out),
        plan_source=str(plan.get("source") or "seeded"), plan_supports_ukraine=bool(plan.get("supports_ukraine", False)),
    )
