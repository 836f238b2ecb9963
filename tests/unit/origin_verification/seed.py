"""Reference data equivalent to the registry seed (SAFE_RULES.md §6), as domain objects and as the
registry's events, for tests of the origin verification service."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from safe_procurement.services.origin_verification.domain.reference import (
    Agreement,
    CountryRecord,
    Membership,
    ReferenceData,
)
from safe_procurement.shared import contracts

EU = "AT BE BG HR CY CZ DK EE FI FR DE EL HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
EEA_EFTA = ["IS", "LI", "NO"]
CANDIDATES = "AL BA GE MD ME MK RS TR UA".split()
SDP = {"MD": date(2024, 5, 21), "NO": date(2024, 5, 28), "JP": date(2024, 11, 1), "KR": date(2024, 11, 1),
       "AL": date(2024, 11, 19), "MK": date(2024, 11, 19), "GB": date(2025, 5, 19), "CA": date(2025, 6, 23)}
LEVELS = {"IS": 1, "LI": 1, "NO": 1, "UA": 1, "GB": 2, "CA": 2, "TR": 2, "JP": 3, "KR": 3, "AU": 3, "NZ": 3,
          "IN": 3, "SG": 3}
OTHERS = ["CH", "US", "CN", "IL", "AU", "NZ", "IN", "SG", "XK"]


def seed_memberships() -> dict[str, list[tuple[str, date | None]]]:
    groups: dict[str, list[tuple[str, date | None]]] = {}
    for c in EU:
        groups.setdefault(c, []).append(("eu_member_state", None))
    for c in EEA_EFTA:
        groups.setdefault(c, []).extend([("eea_efta", None), ("efta", None)])
    groups.setdefault("CH", []).append(("efta", None))
    groups.setdefault("UA", []).append(("ukraine", None))
    for c in CANDIDATES:
        groups.setdefault(c, []).append(("candidate", None))
    groups.setdefault("XK", []).append(("potential_candidate", None))
    for c, since in SDP.items():
        groups.setdefault(c, []).append(("sdp", since))
    for c in OTHERS:
        groups.setdefault(c, [])
    return groups


def seed_agreements() -> list[dict[str, Any]]:
    base = {"kind": "safe_participation", "effective_to": None, "content_counts_as_eligible": False,
            "max_content_share": None, "entities_eligible": False, "confidence": "secondary"}
    return [
        {**base, "agreement_id": "GB-SAFE", "country": "GB", "status": "none", "effective_from": None,
         "source": "negotiations failed 2025-11-28"},
        {**base, "agreement_id": "CA-SAFE", "country": "CA", "status": "in_force", "effective_from": date(2026, 2, 15),
         "content_counts_as_eligible": True, "entities_eligible": True, "confidence": "assumed",
         "source": "concluded 2025-12-01; provisionally applied about mid-February 2026 (date assumed, cap unconfirmed)"},
        {**base, "agreement_id": "TR-SAFE", "country": "TR", "status": "none", "effective_from": None,
         "source": "requested, blocked"},
        {**base, "agreement_id": "KR-SAFE", "country": "KR", "status": "none", "effective_from": None,
         "source": "interest only"},
    ]


def agreement(**fields: Any) -> Agreement:
    share = fields.get("max_content_share")
    return Agreement(
        agreement_id=fields["agreement_id"], country=fields["country"], status=fields.get("status", "in_force"),
        effective_from=fields.get("effective_from"), effective_to=fields.get("effective_to"),
        content_counts_as_eligible=fields.get("content_counts_as_eligible", True),
        max_content_share=Decimal(share) if share is not None else None,
        entities_eligible=fields.get("entities_eligible", False), version=fields.get("version", 1),
        source=fields.get("source", ""), confidence=fields.get("confidence", ""),
    )


def seed_reference(*, agreements: list[dict[str, Any]] | None = None, registry_version: int = 1) -> ReferenceData:
    """The seed as the domain sees it; `agreements` replaces the seeded agreements when given."""
    countries = {
        code: CountryRecord(code, code, tuple(Membership(g, since) for g, since in ms), LEVELS.get(code), 1)
        for code, ms in seed_memberships().items()
    }
    rows = seed_agreements() if agreements is None else agreements
    return ReferenceData(countries, tuple(agreement(**a) for a in rows), registry_version)


def seed_events(version: int = 1) -> tuple[list[contracts.CountryStatusChanged], list[contracts.PartnerAgreementRecorded],
                                          contracts.ReferenceDataPublished]:
    """The seed as the registry announces it."""
    countries = [
        contracts.CountryStatusChanged(
            correlation_id=code, country=code, name=code, version=version, partnership_level=LEVELS.get(code),
            memberships=[contracts.GroupMembership(group=g, effective_from=since, source="seed") for g, since in ms],
        )
        for code, ms in seed_memberships().items()
    ]
    agreements = [
        contracts.PartnerAgreementRecorded(correlation_id=a["agreement_id"], version=version, **a)
        for a in seed_agreements()
    ]
    published = contracts.ReferenceDataPublished(
        correlation_id="registry", registry_version=version, seed_version="test-seed",
        countries=len(countries), agreements=len(agreements),
    )
    return countries, agreements, published
