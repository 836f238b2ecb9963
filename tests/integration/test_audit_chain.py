"""The tamper-evident audit chain on every service: editing, deleting or re-ordering an entry of a service's
audit table makes `GET /audit/verify` name that entry; a whole chain rewritten is caught by the anchors."""

from __future__ import annotations

import asyncio
import importlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from safe_procurement.services import governance_cli
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import audit_chain, governance_api
from safe_procurement.shared.kit.db import transaction
from safe_procurement.shared.kit.tables import AuditEntry
from tests import dbs
from tests.integration.helpers import FAST

SERVICES = ["applications", "origin_verification", "partner_registry", "loan_disbursement"]
TOKENS = "operator:dev-operator,auditor:aud-1,member-state-PL:ms-pl"
AUDITOR = {"Authorization": "Bearer aud-1"}


def build(service: str, tmp_path: Any, prefix: str, **extra: Any) -> Any:
    main = importlib.import_module(f"safe_procurement.services.{service}.main")
    config = importlib.import_module(f"safe_procurement.services.{service}.config")
    settings = config.Settings(database_url=dbs.url(tmp_path, service), stream_prefix=prefix, safe_tokens=TOKENS,
                               **{"consumer_name": "t1", **FAST, **extra})
    return main.build_app(settings)


async def write_entries(rt: Any, n: int) -> None:
    for i in range(n):
        async with transaction(rt.factory) as s:
            s.add(AuditEntry(actor="operator", action="test.action", target=f"test/{i}", reason=f"reason {i}",
                             details=json.dumps({"i": i, "amount_eur": "10.00"})))


async def sql(rt: Any, statement: str, **params: Any) -> Any:
    async with rt.engine.begin() as conn:
        result = await conn.execute(sa.text(statement), params)
        return result.mappings().all() if result.returns_rows else None


async def verify(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await client.get("/audit/verify", headers=AUDITOR, params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("service", SERVICES)
async def test_verify_names_the_entry_edited_deleted_or_reordered_in_each_services_audit_table(
        service, tmp_path, prefix, redis_url):
    async with running(build(service, tmp_path, prefix)) as (client, rt):
        await write_entries(rt, 6)
        clean = await verify(client)
        assert clean["ok"] is True and clean["first_break"] is None
        n = clean["entries"]
        assert n >= 6 and clean["head_seq"] == n
        k = n - 3  # an entry in the middle, with entries after it

        # edited
        original = (await sql(rt, "SELECT reason FROM audit_log WHERE seq = :k", k=k))[0]["reason"]
        await sql(rt, "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = :k", k=k)
        v = await verify(client)
        assert (v["ok"], v["first_break"]["seq"], v["first_break"]["problem"]) == (False, k, "edited")
        await sql(rt, "UPDATE audit_log SET reason = :r WHERE seq = :k", k=k, r=original)
        assert (await verify(client))["ok"] is True

        # deleted
        row = dict((await sql(rt, "SELECT * FROM audit_log WHERE seq = :k", k=k))[0])
        await sql(rt, "DELETE FROM audit_log WHERE seq = :k", k=k)
        v = await verify(client)
        assert (v["ok"], v["first_break"]["seq"], v["first_break"]["problem"]) == (False, k, "deleted")
        cols = ", ".join(row)
        await sql(rt, f"INSERT INTO audit_log ({cols}) VALUES ({', '.join(':' + c for c in row)})", **row)
        assert (await verify(client))["ok"] is True

        # re-ordered: entries k and k+1 change places
        await sql(rt, "UPDATE audit_log SET seq = -1 WHERE seq = :k", k=k)
        await sql(rt, "UPDATE audit_log SET seq = :k WHERE seq = :k1", k=k, k1=k + 1)
        await sql(rt, "UPDATE audit_log SET seq = :k1 WHERE seq = -1", k1=k + 1)
        v = await verify(client)
        assert (v["ok"], v["first_break"]["seq"], v["first_break"]["problem"]) == (False, k, "re-ordered")
        await sql(rt, "UPDATE audit_log SET seq = -1 WHERE seq = :k", k=k)
        await sql(rt, "UPDATE audit_log SET seq = :k WHERE seq = :k1", k=k, k1=k + 1)
        await sql(rt, "UPDATE audit_log SET seq = :k1 WHERE seq = -1", k1=k + 1)

        untouched = await verify(client)
        assert untouched["ok"] is True and untouched["entries"] == n


async def test_the_audit_trail_is_filtered_for_auditors_and_verify_is_refused_to_member_states(
        tmp_path, prefix, redis_url):
    async with running(build("partner_registry", tmp_path, prefix)) as (client, rt):
        await write_entries(rt, 3)
        items = (await client.get("/audit", headers=AUDITOR, params={"target": "test/1"})).json()["items"]
        assert [i["target"] for i in items] == ["test/1"]
        assert items[0]["hash"] and items[0]["prev_hash"] and items[0]["seq"] >= 2
        by_prefix = (await client.get("/audit", headers=AUDITOR, params={"action_prefix": "test."})).json()["items"]
        assert len(by_prefix) == 3
        since = items[0]["at"]
        later = (await client.get("/audit", headers=AUDITOR, params={"since": since, "action": "test.action"})).json()
        assert {i["target"] for i in later["items"]} == {"test/1", "test/2"}
        assert (await client.get("/audit/verify", headers={"Authorization": "Bearer ms-pl"})).status_code == 403
        bad = await client.get("/audit/verify", headers=AUDITOR, params={"anchor": ["x", "3:abc"]})
        assert bad.status_code == 422 and len(bad.json()["detail"]) == 2


async def test_two_writers_at_once_never_fork_the_chain(tmp_path, prefix, redis_url):
    async with running(build("loan_disbursement", tmp_path, prefix)) as (client, rt):
        async def writer(w: int) -> None:
            for i in range(10):
                async with transaction(rt.factory) as s:
                    s.add(AuditEntry(actor=f"w{w}", action="test.concurrent", target=f"test/{w}/{i}"))
                    s.add(AuditEntry(actor=f"w{w}", action="test.concurrent", target=f"test/{w}/{i}b"))
        await asyncio.gather(*(writer(w) for w in range(4)))
        v = await verify(client)
        assert v["ok"] is True, v
        rows = await sql(rt, "SELECT count(*) AS n FROM audit_log WHERE action = 'test.concurrent'")
        assert rows[0]["n"] == 80


async def test_a_whole_chain_rewritten_is_caught_by_the_anchor_another_service_kept(tmp_path, prefix, redis_url):
    apps = build("applications", tmp_path, prefix)
    loans = build("loan_disbursement", tmp_path, prefix)
    async with running(apps) as (apps_client, apps_rt), running(loans) as (loans_client, _):
        await write_entries(apps_rt, 5)
        assert await governance_api.publish_anchor(apps_rt) is True
        kept = await wait_for(lambda: _anchors(loans_client, "applications"), message="the anchor kept by loans")
        assert kept[0]["seq"] == 5

        # rewrite the whole chain consistently from entry 2 on: the chain alone looks intact
        rows = await sql(apps_rt, "SELECT * FROM audit_log ORDER BY seq")
        prev = rows[0]["hash"]
        for r in rows[1:]:
            e = AuditEntry(**{**dict(r), "prev_hash": prev,
                              "reason": "rewritten" if r["seq"] == 2 else r["reason"]})
            h = audit_chain.entry_hash(e)
            await sql(apps_rt, "UPDATE audit_log SET reason = :reason, prev_hash = :p, hash = :h WHERE id = :id",
                      reason=e.reason, p=prev, h=h, id=r["id"])
            prev = h
        assert (await verify(apps_client))["ok"] is True

        v = await verify(apps_client, anchor=[f"{a['seq']}:{a['hash']}" for a in kept])
        assert (v["ok"], v["first_break"]["seq"], v["first_break"]["problem"]) == (False, 5, "anchor-mismatch")

        # the CLI's `audit verify` collects the anchors from the other services itself
        mounts = {"http://applications": httpx.ASGITransport(app=apps), "http://loans": httpx.ASGITransport(app=loans)}
        async with httpx.AsyncClient(mounts=mounts, headers=AUDITOR) as http:
            report = await governance_cli.verify_all(http, {"applications": "http://applications",
                                                            "loan_disbursement": "http://loans"})
        by = {r["service"]: r for r in report}
        assert by["applications"]["ok"] is False and by["applications"]["first_break"]["problem"] == "anchor-mismatch"
        assert by["loan_disbursement"]["ok"] is True
        assert "anchor-mismatch" in governance_cli.verify_table(report)


async def test_entries_deleted_from_the_end_are_caught_by_the_anchor(tmp_path, prefix, redis_url):
    async with running(build("origin_verification", tmp_path, prefix)) as (client, rt):
        await write_entries(rt, 4)
        head = await verify(client)
        await sql(rt, "DELETE FROM audit_log WHERE seq = :n", n=head["head_seq"])
        assert (await verify(client))["ok"] is True  # the chain alone cannot see its end cut off
        v = await verify(client, anchor=[f"{head['head_seq']}:{head['head_hash']}"])
        assert (v["ok"], v["first_break"]["problem"], v["first_break"]["seq"]) == (False, "truncated", head["head_seq"])


async def _anchors(client: httpx.AsyncClient, service: str) -> list[dict[str, Any]] | None:
    r = await client.get("/audit/anchors", params={"service": service}, headers=AUDITOR)
    assert r.status_code == 200
    return r.json() or None


async def test_the_migration_chains_the_entries_written_before_it(tmp_path):
    from alembic import command
    from alembic.config import Config

    from safe_procurement.shared.kit.db import make_engine, migrations_dir

    url = dbs.url(tmp_path, "migrated")
    cfg = Config()
    cfg.set_main_option("script_location", migrations_dir(importlib.import_module("safe_procurement.services.loan_disbursement.main").__file__))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    await asyncio.to_thread(command.upgrade, cfg, "0002")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for i in range(3):
                await conn.execute(sa.text("INSERT INTO audit_log (at, actor, action, target, reason) "
                                           "VALUES (:at, 'operator', 'old.action', :t, 'before the chain')"),
                                   {"at": datetime(2026, 1, 1 + i, tzinfo=UTC), "t": f"old/{i}"})
        await asyncio.to_thread(command.upgrade, cfg, "head")
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT id, seq, prev_hash FROM audit_log ORDER BY id"))).all()
        assert [r.seq for r in rows] == [1, 2, 3] and rows[0].prev_hash == audit_chain.GENESIS
        from sqlmodel.ext.asyncio.session import AsyncSession
        async with AsyncSession(engine) as s:
            assert (await audit_chain.verify(s)).ok is True
            s.add(AuditEntry(actor="operator", action="new.action", target="new/1"))
            await s.commit()
        async with AsyncSession(engine) as s:
            v = await audit_chain.verify(s)
            assert v.ok is True and v.head_seq == 4
    finally:
        await engine.dispose()


async def test_two_replicas_of_a_service_anchor_their_shared_chain_once(tmp_path, prefix, redis_url):
    # two processes of one service: one database, one Redis; each runs its anchor round (its loop's first round,
    # at start, may have anchored the seed's entries already)
    one = build("loan_disbursement", tmp_path, prefix)
    two = build("loan_disbursement", tmp_path, prefix, consumer_name="t2")
    lease = f"{prefix}{streams.AUDIT_ANCHORS}:loan_disbursement:lease"
    async with running(one) as (_, rt1), running(two) as (_, rt2):
        redis = rt1.redis
        await write_entries(rt1, 3)
        await redis.delete(lease)  # as when the interval is over
        published = await asyncio.gather(governance_api.publish_anchor(rt1), governance_api.publish_anchor(rt2))
        assert sorted(published) == [False, True]
        async with rt1.factory() as session:
            head, _ = await audit_chain.head(session)
        # the lease expires; the head has not moved since: neither replica anchors it again
        await redis.delete(lease)
        assert await governance_api.publish_anchor(rt2) is False
        assert await governance_api.publish_anchor(rt1) is False
        await write_entries(rt2, 1)
        await redis.delete(lease)
        assert await governance_api.publish_anchor(rt2) is True
        rows = await sql(rt1, "SELECT payload FROM outbox WHERE event_type = 'AuditAnchorPublished' ORDER BY id")
        seqs = [json.loads(r["payload"])["seq"] for r in rows]
        assert seqs[-2:] == [head, head + 1] and len(seqs) == len(set(seqs)), seqs
