"""Partner registry in-process on a real Redis and database: time travel, idempotent seeding, validation,
corrections and history, published versions, and a replica catching up from the streams."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func
from sqlmodel import col, select

from safe_procurement.services.partner_registry.adapters import seed as seed_file
from safe_procurement.services.partner_registry.config import Settings
from safe_procurement.services.partner_registry.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared import contracts
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import wire
from safe_procurement.shared.kit.app import Runtime
from safe_procurement.shared.kit.tables import OutboxRow

pytestmark = pytest.mark.integration

STREAMS = (streams.COUNTRY_STATUS_CHANGED, streams.PARTNER_AGREEMENT_RECORDED, streams.REFERENCE_DATA_PUBLISHED)
SEED = seed_file.load()


def app(database_url: str, prefix: str, redis_url: str) -> Any:
    return build_app(Settings(database_url=database_url, stream_prefix=prefix, redis_url=redis_url,
                              relay_interval_ms=50))


def agreement(**overrides: Any) -> dict[str, Any]:
    body = {"country": "JP", "kind": "safe_participation", "effective_from": "2027-03-01",
            "content_counts_as_eligible": True, "max_content_share": "0.50", "entities_eligible": False,
            "source": "Council Decision (test)"}
    body.update(overrides)
    return body


async def drained(rt: Runtime) -> None:
    async def nothing_unsent() -> bool:
        async with rt.factory() as s:
            n = (await s.exec(select(func.count()).select_from(OutboxRow)
                              .where(col(OutboxRow.published_at).is_(None)))).one()
        return n == 0

    await wait_for(nothing_unsent, message="the outbox to be published")


async def lengths(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    return {s: await redis.xlen(streams.qualified(s, prefix)) for s in STREAMS}


async def entries(redis: aioredis.Redis, prefix: str, stream: str) -> list[dict[str, Any]]:
    return [wire.decoded(f) for _, f in await redis.xrange(streams.qualified(stream, prefix))]


async def test_time_travel_the_day_before_and_the_day_of_an_agreements_effect(
    sqlite_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(sqlite_url, prefix, redis_url)) as (client, _):
        before = (await client.get("/countries/CA", params={"on": "2026-02-14"})).json()
        on_day = (await client.get("/countries/CA", params={"on": "2026-02-15"})).json()
        assert before["groups"] == ["sdp"] and before["agreements"] == []
        assert [a["id"] for a in on_day["agreements"]] == ["agr-ca-safe-participation"]
        assert on_day["agreements"][0]["unconfirmed"] is True
        assert on_day["agreements"][0]["max_content_share"] is None
        assert on_day["partnership"]["level"] == 2

        created = await client.post("/agreements", json=agreement(effective_from="2027-03-01"))
        assert created.status_code == 201, created.text
        jp_before = (await client.get("/countries/JP", params={"on": "2027-02-28"})).json()
        jp_on = (await client.get("/countries/JP", params={"on": "2027-03-01"})).json()
        assert jp_before["agreements"] == []
        assert [(a["id"], a["max_content_share"]) for a in jp_on["agreements"]] == [(created.json()["id"], "0.50")]
        # the registry as it stood before the agreement was recorded
        then = (await client.get("/countries/JP", params={"on": "2027-03-01",
                                                          "registry_version": created.json()["registry_version"] - 1}))
        assert then.json()["agreements"] == []


async def test_country_codes_accept_aliases_and_refuse_unknown_codes(
    sqlite_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(sqlite_url, prefix, redis_url)) as (client, _):
        greece = (await client.get("/countries/GR", params={"on": "2026-06-01"})).json()
        assert (greece["code"], greece["groups"]) == ("EL", ["eu_member_state"])
        uk_2019 = (await client.get("/countries/UK", params={"on": "2019-06-01"})).json()
        uk_2026 = (await client.get("/countries/uk", params={"on": "2026-06-01"})).json()
        assert (uk_2019["code"], uk_2019["groups"], uk_2026["groups"]) == ("GB", ["eu_member_state"], ["sdp"])
        assert [a["status"] for a in uk_2026["agreement_records"]] == ["none"]
        fiji = await client.get("/countries/FJ")
        assert fiji.status_code == 200 and fiji.json()["known"] is False and fiji.json()["groups"] == []
        for bad in ("ZZ", "GRC", "1"):
            r = await client.get(f"/countries/{bad}")
            assert r.status_code == 422 and r.json()["detail"][0]["field"] == "code"
        assert (await client.get("/countries/CA", params={"on": "2026-13-01"})).status_code == 422
        listed = (await client.get("/countries", params={"group": "eea_efta"})).json()
        assert [c["code"] for c in listed] == ["IS", "LI", "NO"]
        assert len((await client.get("/countries")).json()) == len(SEED.countries)
        assert (await client.get("/countries/CA", headers={"Authorization": ""})).status_code == 401
        assert (await client.get("/countries/CA", headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_loading_the_seed_again_on_restart_changes_and_publishes_nothing(
    sqlite_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):
        await drained(rt)
        first = await lengths(redis_client, prefix)
        ca = (await client.get("/countries/CA")).json()
    assert first == {streams.COUNTRY_STATUS_CHANGED: len(SEED.countries),
                     streams.PARTNER_AGREEMENT_RECORDED: len(SEED.agreements),
                     streams.REFERENCE_DATA_PUBLISHED: 1}
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):
        await drained(rt)
        assert await lengths(redis_client, prefix) == first
        again = (await client.get("/countries/CA")).json()
        assert (again["version"], again["registry_version"]) == (ca["version"], ca["registry_version"]) == (1, 1)
        history = (await client.get("/agreements", params={"country": "CA"})).json()
        assert [(a["id"], a["version"]) for a in history] == [("agr-ca-safe-participation", 1)]


async def test_invalid_agreements_answer_422_and_overlaps_409(
    sqlite_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):
        await drained(rt)
        before = await lengths(redis_client, prefix)
        cases = [
            (agreement(effective_to="2027-02-01"), "effective_to"),
            (agreement(effective_to="2027-03-01"), "effective_to"),
            (agreement(effective_from="2027-02-30"), "effective_from"),
            (agreement(country="ZZ"), "country"),
            (agreement(max_content_share="1.5"), "max_content_share"),
            (agreement(max_content_share="-0.1"), "max_content_share"),
            (agreement(max_content_share="half"), "max_content_share"),
            (agreement(max_content_share="NaN"), "max_content_share"),
            (agreement(kind="trade"), "kind"),
            ({k: v for k, v in agreement().items() if k != "source"}, "source"),
        ]
        for body, field in cases:
            r = await client.post("/agreements", json=body)
            assert r.status_code == 422, (body, r.text)
            assert field in {d["field"] for d in r.json()["detail"]}, (body, r.json())
        assert (await client.post("/agreements", content=b"{not json")).status_code == 415  # no JSON content type
        assert (await client.post("/agreements", content=b"{not json",
                                  headers={"content-type": "application/json"})).status_code == 422

        first = await client.post("/agreements", json=agreement(max_content_share=0.5))  # a JSON number is exact
        assert first.status_code == 201 and first.json()["max_content_share"] == "0.5"
        overlap = await client.post("/agreements", json=agreement(effective_from="2028-01-01"))
        assert overlap.status_code == 409 and overlap.json()["conflicts"] == [first.json()["id"]]
        earlier = await client.post("/agreements", json=agreement(effective_from="2026-01-01",
                                                                  effective_to="2027-03-01"))
        assert earlier.status_code == 201, earlier.text  # adjacent: [from, to) periods do not overlap
        await drained(rt)
        after = await lengths(redis_client, prefix)
        assert after[streams.PARTNER_AGREEMENT_RECORDED] == before[streams.PARTNER_AGREEMENT_RECORDED] + 2


async def test_corrections_create_new_versions_and_the_history_says_who_when_and_why(
    sqlite_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):
        created = (await client.post("/agreements", json=agreement())).json()
        correction = {**agreement(max_content_share="0.40", source="OJ L corrigendum"), "reason": "cap corrected"}
        r = await client.post(f"/agreements/{created['id']}/corrections", json=correction)
        assert r.status_code == 201, r.text
        assert (r.json()["id"], r.json()["version"], r.json()["max_content_share"]) == (created["id"], 2, "0.40")

        versions = (await client.get("/agreements", params={"country": "JP"})).json()
        assert [(a["version"], a["max_content_share"], a["current"]) for a in versions] == [
            (1, "0.50", False), (2, "0.40", True)]
        on = (await client.get("/countries/JP", params={"on": "2027-06-01"})).json()
        assert [(a["version"], a["max_content_share"]) for a in on["agreements"]] == [(2, "0.40")]

        assert (await client.post(f"/agreements/{created['id']}/corrections", json=correction)).status_code == 409
        assert (await client.post("/agreements/agr-nope/corrections", json=correction)).status_code == 404
        bad = await client.post(f"/agreements/{created['id']}/corrections",
                                json={**correction, "effective_to": "2027-01-01"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "effective_to"
        other_country = await client.post(f"/agreements/{created['id']}/corrections", json={**correction, "country": "KR"})
        assert other_country.status_code == 422 and other_country.json()["detail"][0]["field"] == "country"
        no_reason = {k: v for k, v in correction.items() if k != "reason"}
        assert (await client.post(f"/agreements/{created['id']}/corrections", json=no_reason)).status_code == 422
        revoked = await client.post(f"/agreements/{created['id']}/corrections",
                                    json={**correction, "status": "revoked", "reason": "annulled"})
        assert revoked.status_code == 201 and revoked.json()["version"] == 3
        assert (await client.get("/countries/JP", params={"on": "2027-06-01"})).json()["agreements"] == []

        history = (await client.get("/history", params={"country": "JP"})).json()["items"]
        audit = [(h["actor"], h["action"], h["reason"]) for h in history if h["kind"] == "audit"
                 and h["target"] == f"agreements/{created['id']}"]
        assert audit == [("operator", "agreement.correct", "annulled"), ("operator", "agreement.correct", "cap corrected"),
                         ("operator", "agreement.record", None)]
        rows = [(h["version"], h["source"], h["registry_version"]) for h in history if h["kind"] == "agreement_version"]
        assert sorted(rows) == [(1, "Council Decision (test)", 2), (2, "OJ L corrigendum", 3), (3, "OJ L corrigendum", 4)]
        assert any(h["kind"] == "country_version" and h["actor"] == "seed" for h in history)


async def test_a_confirmed_agreement_supersedes_the_unconfirmed_canadian_placeholder(
    sqlite_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):
        r = await client.post("/agreements", json=agreement(country="CA", effective_from="2026-03-01",
                                                            max_content_share="0.35", entities_eligible=True))
        assert r.status_code == 201, r.text
        assert r.json()["supersedes"] == ["agr-ca-safe-participation"]
        placeholder = (await client.get("/agreements/agr-ca-safe-participation")).json()
        assert [(v["version"], v["status"]) for v in placeholder] == [(1, "in_force"), (2, "superseded")]
        assert (await client.get("/countries/CA", params={"on": "2026-02-20"})).json()["agreements"] == []
        march = (await client.get("/countries/CA", params={"on": "2026-03-01"})).json()["agreements"]
        assert [(a["id"], a["max_content_share"], a["unconfirmed"]) for a in march] == [(r.json()["id"], "0.35", False)]
        # a second confirmed agreement now conflicts
        assert (await client.post("/agreements", json=agreement(country="CA", effective_from="2026-04-01"))
                ).status_code == 409
        await drained(rt)
        recorded = await entries(redis_client, prefix, streams.PARTNER_AGREEMENT_RECORDED)
        tail = [(e["agreement_id"], e["version"], e["status"], e["causation_id"]) for e in recorded[-2:]]
        assert tail == [(r.json()["id"], 1, "in_force", None),
                        ("agr-ca-safe-participation", 2, "superseded", recorded[-2]["event_id"])]
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):
        await drained(rt)  # the seed does not bring the placeholder back
        assert len(await entries(redis_client, prefix, streams.PARTNER_AGREEMENT_RECORDED)) == len(recorded)
        march = (await client.get("/countries/CA", params={"on": "2026-03-01"})).json()["agreements"]
        assert [a["id"] for a in march] == [r.json()["id"]]


async def test_published_events_carry_versions_and_the_publication_counts(
    sqlite_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):
        created = (await client.post("/agreements", json=agreement())).json()
        await client.post(f"/agreements/{created['id']}/corrections",
                          json={**agreement(max_content_share="0.45"), "reason": "typo"})
        await drained(rt)
    countries = [contracts.CountryStatusChanged.model_validate(e)
                 for e in await entries(redis_client, prefix, streams.COUNTRY_STATUS_CHANGED)]
    agreements = [contracts.PartnerAgreementRecorded.model_validate(e)
                  for e in await entries(redis_client, prefix, streams.PARTNER_AGREEMENT_RECORDED)]
    markers = [contracts.ReferenceDataPublished.model_validate(e)
               for e in await entries(redis_client, prefix, streams.REFERENCE_DATA_PUBLISHED)]
    assert {c.country for c in countries} == set(SEED.countries) and {c.version for c in countries} == {1}
    no = next(c for c in countries if c.country == "NO")
    assert (no.name, no.partnership_level) == ("Norway", 1)
    assert {m.group for m in no.memberships} == {"eea_efta", "efta", "sdp"}
    assert all(m.source and m.confidence for c in countries for m in c.memberships)
    jp = [(a.agreement_id, a.version, a.max_content_share) for a in agreements if a.country == "JP"]
    assert jp == [(created["id"], 1, Decimal("0.50")), (created["id"], 2, Decimal("0.45"))]
    ca = next(a for a in agreements if a.country == "CA")
    assert ca.unconfirmed and ca.confidence == "assumed" and ca.max_content_share is None
    assert [m.registry_version for m in markers] == [1, 2, 3]
    assert [(m.countries, m.agreements) for m in markers] == [
        (len(SEED.countries), len(SEED.agreements)), (len(SEED.countries), len(SEED.agreements) + 1),
        (len(SEED.countries), len(SEED.agreements) + 1)]
    assert {m.seed_version for m in markers} == {SEED.version}


async def _catch_up(redis: aioredis.Redis, prefix: str, group: str) -> dict[str, list[dict[str, Any]]]:
    """What a replica does: a fresh consumer group from id 0 on each stream, read until nothing is left."""
    out: dict[str, list[dict[str, Any]]] = {}
    for stream in STREAMS:
        key = streams.qualified(stream, prefix)
        await redis.xgroup_create(key, group, id="0", mkstream=True)
        out[stream] = []
        while True:
            batch = await redis.xreadgroup(group, "replica-1", {key: ">"}, count=7)
            if not batch:
                break
            for _, items in batch:
                for entry_id, fields in items:
                    out[stream].append(wire.decoded(fields))
                    await redis.xack(key, group, entry_id)
    return out


async def test_a_replica_that_was_down_catches_up_from_the_streams_without_missing_anything(
    sqlite_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):
        created = (await client.post("/agreements", json=agreement())).json()
        await client.post("/agreements", json=agreement(country="CA", effective_from="2026-03-01",
                                                        max_content_share="0.35"))
        await drained(rt)
    async with running(app(sqlite_url, prefix, redis_url)) as (client, rt):  # a restart in between
        await client.post(f"/agreements/{created['id']}/corrections",
                          json={**agreement(max_content_share="0.30"), "reason": "late correction"})
        await drained(rt)
        expected_countries = {c["code"]: c["version"] for c in (await client.get("/countries")).json()}
        current = {a["id"]: a for a in (await client.get("/agreements")).json() if a["current"]}

    read = await _catch_up(redis_client, prefix, "late-replica")
    replica_countries: dict[str, int] = {}
    for e in read[streams.COUNTRY_STATUS_CHANGED]:
        ev = contracts.CountryStatusChanged.model_validate(e)
        replica_countries[ev.country] = max(ev.version, replica_countries.get(ev.country, 0))
    replica_agreements: dict[str, contracts.PartnerAgreementRecorded] = {}
    for e in read[streams.PARTNER_AGREEMENT_RECORDED]:
        ev = contracts.PartnerAgreementRecorded.model_validate(e)
        if ev.agreement_id not in replica_agreements or ev.version > replica_agreements[ev.agreement_id].version:
            replica_agreements[ev.agreement_id] = ev
    last = contracts.ReferenceDataPublished.model_validate(read[streams.REFERENCE_DATA_PUBLISHED][-1])

    assert replica_countries == expected_countries
    assert {k: v.version for k, v in replica_agreements.items()} == {k: v["version"] for k, v in current.items()}
    assert {k: v.status for k, v in replica_agreements.items()} == {k: v["status"] for k, v in current.items()}
    assert (last.countries, last.agreements) == (len(replica_countries), len(replica_agreements))
    assert last.registry_version == 4
    # nothing is left for the replica, and the registry's restart published nothing twice
    assert await redis_client.xlen(streams.qualified(streams.REFERENCE_DATA_PUBLISHED, prefix)) == 4


async def test_the_registry_runs_on_postgresql(
    pg_url: str, prefix: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running(app(pg_url, prefix, redis_url)) as (client, rt):
        created = await client.post("/agreements", json=agreement())
        assert created.status_code == 201, created.text
        assert (await client.post("/agreements", json=agreement(effective_from="2030-01-01"))).status_code == 409
        fixed = await client.post(f"/agreements/{created.json()['id']}/corrections",
                                  json={**agreement(max_content_share="0.3333333333"), "reason": "exact share"})
        assert fixed.status_code == 201 and fixed.json()["max_content_share"] == "0.3333333333"
        await drained(rt)
        first = await lengths(redis_client, prefix)
    async with running(app(pg_url, prefix, redis_url)) as (client, rt):
        await drained(rt)
        assert await lengths(redis_client, prefix) == first
        jp = (await client.get("/countries/JP", params={"on": "2027-03-01"})).json()
        assert [(a["version"], a["max_content_share"]) for a in jp["agreements"]] == [(2, "0.3333333333")]
        assert jp["sdp"]["signed_on"] == "2024-11-01"
