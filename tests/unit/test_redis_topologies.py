"""Redis single / Sentinel / Cluster through settings: the right FastStream broker and redis-py client are
built from `REDIS_MODE` + `REDIS_URL` (+ `REDIS_SENTINEL_MASTER`), carrying the configured nodes, and
building them does no I/O (the hosts below do not exist)."""

from __future__ import annotations

import importlib
import socket
from typing import Any

import pytest
from faststream.redis import RedisBroker, RedisClusterBroker, RedisSentinelBroker
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from safe_procurement.services.launcher import SERVICES
from safe_procurement.shared.kit.app import make_broker, make_redis
from safe_procurement.shared.kit.metrics import Metrics
from safe_procurement.shared.kit.settings import ServiceSettings


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any name lookup or connection while building fails the test: construction must be I/O-free."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network I/O while building a broker or client: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def settings(mode: str, url: str, master: str = "mymaster") -> ServiceSettings:
    return ServiceSettings(
        redis_mode=mode, redis_url=url, redis_sentinel_master=master, database_url="sqlite+aiosqlite://",
        consumer_name="test-1",
    )


async def client_of(broker: RedisBroker) -> Any:
    """The redis-py client the broker connects with (`connect` builds it; it does no I/O until used)."""
    return await broker.connect()


def sentinels_of(pool: SentinelConnectionPool) -> list[tuple[str, int]]:
    return [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
            for c in pool.sentinel_manager.sentinels]


def nodes_of(startup_nodes: Any) -> list[tuple[str, int]]:
    return [(n.host, int(n.port)) for n in startup_nodes]


async def test_single_mode_builds_a_plain_redis_broker_and_client() -> None:
    s = settings("single", "redis://cache.invalid:6380/3")

    broker = make_broker(s, Metrics("test"))
    client = make_redis(s)

    assert type(broker) is RedisBroker
    options = (await client_of(broker)).connection_pool.connection_kwargs
    assert (options["host"], options["port"], options["db"]) == ("cache.invalid", 6380, 3)
    assert type(client) is Redis
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.invalid", 6380, 3)


async def test_sentinel_mode_builds_a_sentinel_broker_with_every_sentinel_and_the_master_name() -> None:
    s = settings("sentinel", "redis+sentinel://sentinel-a.invalid:26379,sentinel-b.invalid:26380/2", "safe-master")

    broker = make_broker(s, Metrics("test"))

    assert type(broker) is RedisSentinelBroker
    pool = (await client_of(broker)).connection_pool
    assert sentinels_of(pool) == [("sentinel-a.invalid", 26379), ("sentinel-b.invalid", 26380)]
    assert pool.service_name == "safe-master"
    assert pool.connection_kwargs["db"] == 2


async def test_sentinel_mode_accepts_a_bare_comma_separated_list_with_the_default_sentinel_port() -> None:
    s = settings("sentinel", "sentinel-a.invalid, sentinel-b.invalid:26390,sentinel-c.invalid")

    pool = (await client_of(make_broker(s, Metrics("test")))).connection_pool

    assert sentinels_of(pool) == [
        ("sentinel-a.invalid", 26379), ("sentinel-b.invalid", 26390), ("sentinel-c.invalid", 26379),
    ]


async def test_sentinel_mode_gives_the_master_credentials_and_db_to_broker_and_client() -> None:
    s = settings("sentinel", "redis+sentinel://app:p%40ss@sentinel-a.invalid:26379,sentinel-b.invalid/1", "m1")

    options = (await client_of(make_broker(s, Metrics("test")))).connection_pool.connection_kwargs
    client = make_redis(s)

    assert (options["username"], options["password"], options["db"]) == ("app", "p@ss", 1)
    pool = client.connection_pool
    assert pool.connection_kwargs["password"] == "p@ss"
    assert pool.connection_kwargs["username"] == "app"
    assert pool.connection_kwargs["db"] == 1


def test_sentinel_mode_client_is_the_master_for_the_configured_group() -> None:
    s = settings("sentinel", "redis+sentinel://sentinel-a.invalid:26379,sentinel-b.invalid:26380/0", "safe-master")

    client = make_redis(s)

    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "safe-master"
    assert pool.is_master
    assert sentinels_of(pool) == [("sentinel-a.invalid", 26379), ("sentinel-b.invalid", 26380)]


def test_sentinel_mode_over_tls_uses_tls_to_the_master() -> None:
    s = settings("sentinel", "rediss+sentinel://sentinel-a.invalid:26379/0")

    client = make_redis(s)

    assert "SSL" in client.connection_pool.connection_class.__name__


async def test_cluster_mode_builds_a_cluster_broker_with_every_startup_node() -> None:
    s = settings("cluster", "redis://node-a.invalid:7000,node-b.invalid:7001,node-c.invalid")

    broker = make_broker(s, Metrics("test"))

    assert type(broker) is RedisClusterBroker
    client = await client_of(broker)
    assert isinstance(client, RedisCluster)  # a cluster has only db 0: RedisCluster refuses any other
    assert nodes_of(client.nodes_manager.startup_nodes.values()) == [
        ("node-a.invalid", 7000), ("node-b.invalid", 7001), ("node-c.invalid", 6379),
    ]


def test_cluster_mode_client_is_a_redis_cluster_with_every_startup_node() -> None:
    s = settings("cluster", "redis://:secret@node-a.invalid:7000,node-b.invalid:7001/0")

    client = make_redis(s)

    assert isinstance(client, RedisCluster)
    assert nodes_of(client.nodes_manager.startup_nodes.values()) == [("node-a.invalid", 7000), ("node-b.invalid", 7001)]
    assert client.nodes_manager.connection_kwargs["password"] == "secret"


def test_an_unknown_redis_mode_is_refused_with_its_name() -> None:
    s = settings("sharded", "redis://localhost:6379/0")

    with pytest.raises(ValueError, match="sharded"):
        make_broker(s, Metrics("test"))
    with pytest.raises(ValueError, match="sharded"):
        make_redis(s)


def test_a_redis_url_without_a_host_is_refused() -> None:
    with pytest.raises(ValueError, match="no Redis host"):
        make_redis(settings("cluster", "redis:///0"))


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_service_reads_the_topology_from_the_shared_environment_variables(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = importlib.import_module(f"safe_procurement.services.{service}.config")
    prefix = service.upper()
    monkeypatch.setenv("REDIS_MODE", "sentinel")
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://sentinel-a.invalid:26379,sentinel-b.invalid:26379/0")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "safe-master")
    monkeypatch.setenv(f"{prefix}_DATABASE_URL", "sqlite+aiosqlite://")
    monkeypatch.setenv(f"{prefix}_CONSUMER_NAME", f"{service}-1")

    s = config.Settings()
    broker = make_broker(s, Metrics(service))

    assert type(broker) is RedisSentinelBroker
    assert (await client_of(broker)).connection_pool.service_name == "safe-master"
    assert make_redis(s).connection_pool.service_name == "safe-master"
