"""Registry handlers: lock → load → decide (domain) → save new versions → record events, in the caller's
transaction. Every write ends with a `ReferenceDataPublished` carrying the new registry version and the
total number of country and agreement records, so replicas know when they are complete."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from safe_procurement.services.partner_registry.adapters import repository as repo
from safe_procurement.services.partner_registry.adapters.repository import RegistryUnitOfWork
from safe_procurement.services.partner_registry.adapters.seed import Seed
from safe_procurement.services.partner_registry.adapters.tables import (
    AgreementVersionRow,
    CountryVersionRow,
    RegistryMetaRow,
)
from safe_procurement.services.partner_registry.domain import registry
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit.tables import utcnow

log = logging.getLogger("safe.partner_registry")

SEED_ACTOR = "seed"


class NotFound(Exception):
    pass


class NothingToCorrect(Exception):
    pass


@dataclass
class Published:
    registry_version: int
    countries: list[CountryVersionRow] = field(default_factory=list)
    agreements: list[AgreementVersionRow] = field(default_factory=list)
    kept_operator_versions: list[str] = field(default_factory=list)


async def _publish(
    uow: RegistryUnitOfWork, meta: RegistryMetaRow, *, countries: list[CountryVersionRow],
    agreements: list[tuple[AgreementVersionRow, Any]],
) -> contracts.ReferenceDataPublished:
    """Save the version rows and put their events, then the publication marker, in the outbox."""
    for c in countries:
        uow.registry.add(c)
        uow.emit(streams.COUNTRY_STATUS_CHANGED, repo.country_event(c))
    for a, causation in agreements:
        uow.registry.add(a)
        uow.emit(streams.PARTNER_AGREEMENT_RECORDED, repo.agreement_event(a, causation_id=causation))
    await uow.flush()
    all_countries = repo.latest_countries(await uow.registry.countries())
    all_agreements = repo.latest_agreements(await uow.registry.agreements())
    meta.countries = len(all_countries)
    meta.agreements = len(all_agreements)
    meta.updated_at = utcnow()
    uow.registry.add(meta)
    marker = contracts.ReferenceDataPublished(
        correlation_id="registry", registry_version=meta.registry_version, seed_version=meta.seed_version,
        countries=meta.countries, agreements=meta.agreements,
    )
    uow.emit(streams.REFERENCE_DATA_PUBLISHED, marker)
    return marker


# --- seed -----------------------------------------------------------------------------------------


async def load_seed(seed: Seed, uow: RegistryUnitOfWork) -> Published | None:
    """Publish what the seed adds or changes; None (and no event) when the store already matches it."""
    meta = await uow.registry.lock_meta()
    c_rows = await uow.registry.countries()
    a_rows = await uow.registry.agreements()
    stored_c = repo.latest_countries(c_rows)
    stored_a = repo.latest_agreements(a_rows)
    plan = registry.plan_seed(
        seed.countries, seed.agreements,
        {k: repo.country_of(v) for k, v in stored_c.items()},
        {k: repo.agreement_of(v) for k, v in stored_a.items()},
        repo.last_seeded(a_rows),
    )
    for agreement_id in plan.kept_operator_versions:
        log.warning("seed row changed for an agreement an operator has corrected; the operator's version stands",
                    extra={"agreement_id": agreement_id})
    if plan.empty:
        if meta.seed_version != seed.version:
            meta.seed_version = seed.version  # a relabelled but identical seed publishes nothing
            uow.registry.add(meta)
        return None
    meta.registry_version += 1
    meta.seed_version = seed.version
    rv = meta.registry_version
    countries = [
        repo.country_row(record, version=(stored_c[record.code].version + 1) if record.code in stored_c else 1,
                         registry_version=rv, origin=registry.SEED, recorded_by=SEED_ACTOR,
                         reason=f"seed {seed.version}")
        for record in plan.countries
    ]
    agreements = [
        (repo.agreement_row(agreement_id, terms,
                            version=(stored_a[agreement_id].version + 1) if agreement_id in stored_a else 1,
                            registry_version=rv, origin=registry.SEED, recorded_by=SEED_ACTOR,
                            reason=f"seed {seed.version}"), None)
        for agreement_id, terms in plan.agreements
    ]
    await _publish(uow, meta, countries=countries, agreements=agreements)
    uow.audit(
        SEED_ACTOR, "registry.seed_load", "registry", correlation_id="registry",
        reason=f"seed {seed.version}",
        details=json.dumps({"registry_version": rv, "countries": [c.country for c in countries],
                            "agreements": [a.agreement_id for a, _ in agreements],
                            "kept_operator_versions": plan.kept_operator_versions}),
    )
    return Published(rv, countries, [a for a, _ in agreements], plan.kept_operator_versions)


# --- operator writes ------------------------------------------------------------------------------


def _terms_json(terms: registry.AgreementTerms) -> dict[str, Any]:
    return {
        "country": terms.country, "kind": terms.kind, "status": terms.status,
        "effective_from": terms.effective_from.isoformat() if terms.effective_from else None,
        "effective_to": terms.effective_to.isoformat() if terms.effective_to else None,
        "content_counts_as_eligible": terms.content_counts_as_eligible,
        "max_content_share": str(terms.max_content_share) if terms.max_content_share is not None else None,
        "entities_eligible": terms.entities_eligible, "source": terms.source, "confidence": terms.confidence,
        "unconfirmed": terms.unconfirmed,
    }


async def _write(
    uow: RegistryUnitOfWork, meta: RegistryMetaRow, agreement_id: str, terms: registry.AgreementTerms, *,
    version: int, actor: str, action: str, reason: str | None, current: dict[str, AgreementVersionRow],
) -> Published:
    placeholders = registry.supersessions(
        terms, [repo.agreement_of(r) for r in current.values()], itself=agreement_id
    )  # raises Conflict
    meta.registry_version += 1
    rv = meta.registry_version
    row = repo.agreement_row(agreement_id, terms, version=version, registry_version=rv, origin=registry.OPERATOR,
                             recorded_by=actor, reason=reason, supersedes=[p.id for p in placeholders] or None)
    recorded = repo.agreement_event(row)
    rows: list[tuple[AgreementVersionRow, Any]] = [(row, None)]
    for p in placeholders:
        old = current[p.id]
        why = f"superseded by {agreement_id} v{version}"
        rows.append((repo.agreement_row(p.id, registry.superseded(p.terms, agreement_id), version=old.version + 1,
                                        registry_version=rv, origin=registry.OPERATOR, recorded_by=actor,
                                        reason=why), recorded.event_id))
        uow.audit(actor, "agreement.supersede", f"agreements/{p.id}", correlation_id=terms.country, reason=why)
    uow.registry.add(row)
    uow.emit(streams.PARTNER_AGREEMENT_RECORDED, recorded)
    await _publish(uow, meta, countries=[], agreements=rows[1:])
    uow.audit(actor, action, f"agreements/{agreement_id}", correlation_id=terms.country, reason=reason,
              details=json.dumps({"version": version, "registry_version": rv, "terms": _terms_json(terms),
                                  "superseded": [p.id for p in placeholders]}))
    return Published(rv, [], [r for r, _ in rows])


async def record_agreement(terms: registry.AgreementTerms, uow: RegistryUnitOfWork, *, actor: str) -> Published:
    """Record a new agreement (version 1). Overlapping a confirmed one in force → Conflict; overlapping an
    unconfirmed seeded placeholder supersedes it."""
    terms.validate()
    meta = await uow.registry.lock_meta()
    current = repo.latest_agreements(await uow.registry.agreements(country=terms.country))
    agreement_id = f"agr-{terms.country.lower()}-{uuid.uuid4().hex[:12]}"
    return await _write(uow, meta, agreement_id, terms, version=1, actor=actor, action="agreement.record",
                        reason=None, current=current)


async def correct_agreement(
    agreement_id: str, terms: registry.AgreementTerms, uow: RegistryUnitOfWork, *, actor: str, reason: str
) -> Published:
    """A correction is a new version of the same agreement; the earlier versions stay."""
    terms.validate()
    meta = await uow.registry.lock_meta()
    existing = await uow.registry.agreements(agreement_id=agreement_id)
    if not existing:
        raise NotFound(agreement_id)
    last = existing[-1]
    if terms.country != last.country:
        raise registry.InvalidTerms("country", f"agreement {agreement_id} is for {last.country}; the country cannot change")
    if terms.kind != last.kind:
        raise registry.InvalidTerms("kind", f"agreement {agreement_id} is of kind {last.kind}; the kind cannot change")
    if repo.terms_of(last) == terms:
        raise NothingToCorrect(f"agreement {agreement_id} v{last.version} already has these terms")
    current = repo.latest_agreements(await uow.registry.agreements(country=terms.country))
    return await _write(uow, meta, agreement_id, terms, version=last.version + 1, actor=actor,
                        action="agreement.correct", reason=reason, current=current)
