"""The outbox relay on a real Redis Cluster (3 primaries, 3 replicas, started by the test on free loopback ports):
one round's events go to streams in different hash slots, which one MULTI/EXEC cannot span (CROSSSLOT)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from sqlalchemy import func
from sqlmodel import select

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import db, wire
from safe_procurement.shared.kit.outbox import OutboxRelay
from safe_procurement.shared.kit.tables import OutboxRow
from tests import dbs
from tests.redis_servers import Cluster, Servers, require_redis_server

STREAMS = (streams.PROCUREMENT_SUBMITTED, streams.LOAN_REQUESTED, streams.ORIGIN_VERIFICATION_COMPLETED)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_redis_server()
    servers = Servers(tmp_path_factory.mktemp("cluster"))
    try:
        yield Cluster(servers)
    finally:
        servers.stop_all()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[RedisCluster]:
    c = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster.nodes])
    yield c
    await c.aclose()


def _spread(client: RedisCluster, name: str) -> str:
    """A stream prefix under which the test's streams (and the consumed one) are in as many different slots."""
    for n in range(1000):
        prefix = f"{name}{n}:"
        keys = [streams.qualified(s, prefix) for s in (*STREAMS, streams.COUNTRY_STATUS_CHANGED)]
        if len({client.keyslot(k) for k in keys}) == len(keys):
            return prefix
    raise AssertionError("no prefix spreads the streams over different slots")


async def _unsent(factory: Any) -> int:
    async with factory() as s:
        return (await s.exec(select(func.count()).select_from(OutboxRow).where(
            OutboxRow.published_at.is_(None)))).one()  # type: ignore[union-attr]


async def test_a_round_over_streams_in_different_slots_publishes_every_event_and_its_acks(kit_factory, kit_engine, client):
    prefix = _spread(client, "round")
    keys = [streams.qualified(s, prefix) for s in STREAMS]
    consumed = streams.qualified(streams.COUNTRY_STATUS_CHANGED, prefix)
    await client.xgroup_create(consumed, "g", id="0", mkstream=True)
    entry = await client.xadd(consumed, {wire.DATA: "{}"})
    await client.xreadgroup("g", "c", {consumed: ">"})
    async with db.transaction(kit_factory) as s:
        for i in range(9):
            s.add(OutboxRow(event_id=f"e{i}", stream=STREAMS[i % 3], event_type="T", correlation_id=f"e{i}",
                            payload=json.dumps({"event_id": f"e{i}"})))
    relay = OutboxRelay(kit_engine, client, prefix=prefix, postgres=dbs.on_postgres())

    async with kit_engine.connect() as conn:
        assert await relay.publish_after_commit(conn, [("XACK", consumed, "g", entry)])

    for i, key in enumerate(keys):
        on_stream = [wire.decoded(f)["event_id"] for _, f in await client.xrange(key)]
        assert on_stream == [f"e{j}" for j in range(i, 9, 3)]  # each stream's events in outbox order
    assert (await client.xpending(consumed, "g"))["pending"] == 0  # the XACK rode along
    assert await _unsent(kit_factory) == 0


async def test_a_refused_command_leaves_the_round_unsent(kit_factory, kit_engine, client):
    prefix = _spread(client, "refused")
    wrong = streams.qualified(streams.LOAN_REQUESTED, prefix)
    await client.set(wrong, "not a stream")  # XADD to it answers WRONGTYPE
    async with db.transaction(kit_factory) as s:
        for i, stream in enumerate((streams.PROCUREMENT_SUBMITTED, streams.LOAN_REQUESTED)):
            s.add(OutboxRow(event_id=f"r{i}", stream=stream, event_type="T", correlation_id=f"r{i}",
                            payload=json.dumps({"event_id": f"r{i}"})))
    relay = OutboxRelay(kit_engine, client, prefix=prefix, postgres=dbs.on_postgres())
    with pytest.raises(Exception, match="WRONGTYPE"):
        await relay.publish_once()
    assert await _unsent(kit_factory) == 2  # the mark rolled back: both go out again once Redis takes them
