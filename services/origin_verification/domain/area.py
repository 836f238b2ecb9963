"""The eligible area on the contract date: who is in which group, and which agreements apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from safe_procurement.services.origin_verification.domain.reference import Agreement, ReferenceData
from safe_procurement.services.origin_verification.domain.rulebook import RuleSet

Tri = bool | None  # True yes, False no, None unknown (reference data not configured)


def tri_and(*values: Tri) -> Tri:
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


def tri_or(*values: Tri) -> Tri:
    if any(v is True for v in values):
        return True
    if any(v is None for v in values):
        return None
    return False


@dataclass(frozen=True, slots=True)
class EntityStatus:
    """Whether an entity's country is in the area for the contractor rules (R-CON-1, 2, 4, 5)."""

    country: str
    in_area: Tri
    agreement: Agreement | None = None  # set when an agreement (not group membership) decided it

    def describe(self) -> str:
        if self.in_area is True and self.agreement is None:
            return f"{self.country} (eligible area)"
        if self.in_area is True:
            return f"{self.country} (participation agreement {self.agreement.agreement_id} in force, entities eligible)"  # type: ignore[union-attr]
        if self.in_area is None:
            return f"{self.country} (participation agreement {self.agreement.agreement_id}: effective date unconfirmed)"  # type: ignore[union-attr]
        return f"{self.country} (outside the eligible area)"

    @property
    def missing(self) -> tuple[str, ...]:
        if self.in_area is None and self.agreement is not None:
            return (f"effective date of the {self.country} participation agreement {self.agreement.agreement_id}",)
        return ()


@dataclass
class Area:
    ref: ReferenceData
    rules: RuleSet
    on: date
    _groups: dict[str, frozenset[str]] = field(default_factory=dict)
    _entities: dict[str, EntityStatus] = field(default_factory=dict)

    def groups(self, code: str) -> frozenset[str]:
        g = self._groups.get(code)
        if g is None:
            g = self._groups[code] = self.ref.groups(code, self.on)
        return g

    def _in(self, code: str, key: str) -> bool:
        return bool(self.groups(code) & self.rules.value(key))

    def is_eligible(self, code: str) -> bool:
        """In the eligible area (EU, EEA-EFTA, Ukraine) on the contract date: origin, contractors, facilities."""
        return self._in(code, "eligible_groups")

    def is_member_state(self, code: str) -> bool:
        return self._in(code, "borrower_groups")

    def counts(self, code: str) -> bool:
        return self._in(code, "counting_groups")

    def may_join(self, code: str) -> bool:
        return self._in(code, "may_join_groups")

    def agreement(self, code: str) -> Agreement | None:
        return self.ref.agreement_on(code, self.on)

    def entity(self, code: str) -> EntityStatus:
        status = self._entities.get(code)
        if status is None:
            status = self._entities[code] = self._entity(code)
        return status

    def _entity(self, code: str) -> EntityStatus:
        if self.is_eligible(code):
            return EntityStatus(code, True)
        if self.rules.value("agreement_entities_in_area"):
            ag = self.agreement(code)
            if ag is not None and ag.entities_eligible:
                state = ag.in_force_on(self.on)
                if state is not False:
                    return EntityStatus(code, state, ag)
        return EntityStatus(code, False)
