"""Why a loan rule refuses: the Member State, the rule id (L-1..L-10, PLAN) and a message in words."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    member_state: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"
