"""Defect 2 of issue 21, the Redis side: infra/redis/users.acl gives each service and the external intake its own
Redis user with only the streams and commands it needs.

Checked against the code (every stream a service consumes or publishes is within its user's keys; no service
user may write another producer's stream it does not consume) and against a real redis-server that THIS TEST
starts on a private port with that ACL file: the intake user can XADD a proposal and nothing else (no internal
stream, no read), and the applications service, connected as its own user, does its whole job."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import governance_api, wire
from tests.builders import proposal
from tests.integration.test_auth_matrix import SERVICES, build, headers
from tests.redis_servers import free_port, wait_ping

ACL = Path(__file__).resolve().parents[2] / "infra" / "redis" / "users.acl"
PASSWORD = "dev-redis-{}-change-me"  # the development defaults (docker-compose.yml); hashed in the ACL file


def _users() -> dict[str, list[str]]:
    out = {}
    for line in ACL.read_text().splitlines():
        if line.startswith("user "):
            _, name, *rules = line.split()
            out[name] = rules
    return out


def _keys(rules: list[str]) -> list[str]:
    return [r.split("~", 1)[1] for r in rules if r.startswith(("~", "%RW~", "%W~"))]


def _allowed(patterns: list[str], key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


@pytest.mark.parametrize("service", list(SERVICES))
def test_each_service_user_covers_exactly_the_streams_its_code_reads_and_writes(service, tmp_path, prefix):
    app = build(service, tmp_path, prefix)  # construction does no I/O
    rt = app.state.runtime
    consumed = {s.stream for s in rt.messaging.subscriptions.values()}
    published = set(rt.spec.publishes)
    patterns = _keys(_users()[service])
    assert consumed and published, service
    for stream in consumed | published:
        assert _allowed(patterns, stream), f"{service} cannot reach {stream}"
    # nothing of another producer beyond what it consumes
    for stream in streams.ALL:
        if _allowed(patterns, stream):
            assert stream in consumed or stream in published or stream.startswith(
                service.replace("_", "-") + "."), f"{service} may touch {stream} without need"


def test_the_intake_user_may_only_add_to_the_command_stream_and_the_default_user_only_ping():
    users = _users()
    assert _keys(users["intake"]) == [streams.SUBMIT_PROCUREMENT]
    assert "%W~applications.submit-procurement" in users["intake"]
    assert "-@all" in users["default"] and "+ping" in users["default"] and not _keys(users["default"])


@pytest.fixture
def acl_redis(tmp_path) -> Iterator[int]:
    """A redis-server of this test only, on a private port, with infra/redis/users.acl."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    acl = tmp_path / "users.acl"
    acl.write_text(ACL.read_text())
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path), "--aclfile", str(acl)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ping(port, timeout=10)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _as(port: int, user: str) -> redis.Redis:
    return redis.Redis(port=port, username=user, password=PASSWORD.format(user.replace("_", "-")))


def test_on_a_real_redis_the_intake_user_cannot_write_an_internal_stream(acl_redis):
    intake = _as(acl_redis, "intake")
    assert intake.xadd(streams.SUBMIT_PROCUREMENT, {wire.DATA: "{}"})
    for stream in (streams.LOAN_REQUESTED, streams.PROCUREMENT_SUBMITTED, streams.LOAN_APPROVED, "anything"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            intake.xadd(stream, {wire.DATA: "{}"})
    for command in (("XRANGE", streams.SUBMIT_PROCUREMENT, "-", "+"), ("KEYS", "*"), ("FLUSHALL",),
                    ("XGROUP", "DESTROY", streams.SUBMIT_PROCUREMENT, "applications"), ("ACL", "LIST")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            intake.execute_command(*command)
    anonymous = redis.Redis(port=acl_redis)
    assert anonymous.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        anonymous.xadd(streams.SUBMIT_PROCUREMENT, {wire.DATA: "{}"})
    # a service user cannot write what another service publishes and it does not consume
    with pytest.raises(redis.exceptions.NoPermissionError):
        _as(acl_redis, "origin_verification").xadd(streams.LOAN_APPROVED, {wire.DATA: "{}"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        _as(acl_redis, "applications").execute_command("FLUSHALL")


async def test_on_a_real_redis_the_applications_service_does_its_job_as_its_own_user(acl_redis, tmp_path):
    url = f"redis://applications:{PASSWORD.format('applications')}@127.0.0.1:{acl_redis}/0"
    app = build("applications", tmp_path, "", redis_url=url)
    async with running(app) as (client, rt):
        client.headers.pop("Authorization", None)
        assert (await client.get("/health/ready", headers=headers("operator"))).status_code in (200, 503)
        # the Redis guard (recovery after Redis loses writes) can do its job as this user too
        assert rt.guard is not None
        checks = rt.guard.checks
        assert rt.guard.started and await rt.guard.check_once() is False
        assert rt.guard.checks > checks
        # an external system submits through the intake user; the service consumes it and publishes on
        body = proposal(financing=[])
        intake = _as(acl_redis, "intake")
        await xadd_sync(intake, body)

        async def verifying() -> bool:
            r = await client.get(f"/procurements/by-reference/{body['reference']}", headers=headers("operator"))
            return r.status_code == 200 and r.json()["status"] == "verifying"

        await wait_for(verifying, message="the case, submitted through the intake user, published on")
        admin = _as(acl_redis, "admin")
        assert admin.xlen(streams.PROCUREMENT_SUBMITTED) == 1
        # the HTTP intake and a dead-letter replay work too
        r = await client.post("/procurements", json=proposal(financing=[]), headers=headers("operator"))
        assert r.status_code == 201
        bad = proposal(financing=[])
        bad["participants"] = ["PL", "ZZ"]
        await xadd_sync(intake, bad)

        async def letter() -> int | None:
            items = (await client.get("/dead-letters", headers=headers("operator"))).json()["items"]
            return items[0]["id"] if items else None

        dl = await wait_for(letter, message="the invalid proposal dead-lettered")
        assert (await client.post(f"/dead-letters/{dl}/replay", json={"payload": proposal(financing=[])},
                                  headers=headers("operator"))).status_code == 200
        # the replay is in the audit chain; its head is anchored under the lease the replicas share
        assert await governance_api.publish_anchor(rt) is True
        assert admin.exists(f"{streams.AUDIT_ANCHORS}:applications:lease")
        assert int(admin.get(f"{streams.AUDIT_ANCHORS}:applications:seq")) >= 1


async def xadd_sync(client: redis.Redis, body: dict) -> None:
    client.xadd(streams.SUBMIT_PROCUREMENT, {wire.DATA: json.dumps(body)})


def test_the_deployments_use_this_acl_file_and_give_each_service_its_own_user():
    import yaml

    root = ACL.parents[2]
    redis_cm = next(d for d in yaml.safe_load_all((root / "infra/k8s/20-redis.yaml").read_text())
                    if d["kind"] == "ConfigMap")
    assert redis_cm["data"]["users.acl"] == ACL.read_text()
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    assert "--aclfile" in compose["redis"]["command"]
    for name, svc in compose.items():
        if "build" in svc and svc["build"]["args"]["SERVICE"] != "console":  # the console uses no Redis
            service = svc["build"]["args"]["SERVICE"]
            assert svc["environment"]["REDIS_URL"].startswith(f"redis://{service}:"), name
