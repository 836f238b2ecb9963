"""The pytest plugin as another project uses it: it deletes its streams, and when Redis or a port cannot be
used it fails with one line naming the cause (not a uvicorn traceback in a log file)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import redis

from safe_procurement.services.testing.plugin import StackError, make_stack
from tests.builders import proposal

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_stack_deletes_its_streams_when_it_stops(tmp_path, redis_url):
    stack = await __import__("asyncio").to_thread(make_stack(tmp_path, redis_url=redis_url).start)
    r = redis.Redis.from_url(redis_url)
    try:
        body = proposal(tag="HYG")
        async with stack.client() as client:
            case = await client.wait_for_status((await client.submit(body)).json()["id"], timeout=60)
        assert case["status"] == "loan_approved"
        assert list(r.scan_iter(match=f"{stack.prefix}*")), "the stack wrote no streams?"
    finally:
        stack.stop()
    assert list(r.scan_iter(match=f"{stack.prefix}*")) == []
    r.close()


def test_a_taken_port_is_named_before_anything_starts(tmp_path, redis_url):
    stack = make_stack(tmp_path, redis_url=redis_url)
    port = 8003 + stack.port_offset
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with pytest.raises(StackError, match=rf"^port {port} on 127.0.0.1 is in use \(partner_registry#1\)$"):
            stack.start()
    assert stack.proc is None


def test_without_redis_the_fixture_fails_with_one_line(tmp_path):
    """A user's own project: the plugin loaded by its entry point, REDIS_URL pointing at nothing."""
    (tmp_path / "test_theirs.py").write_text("def test_uses_the_platform(safe_stack):\n    pass\n")
    port = free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_theirs.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout
    lines = [x for x in r.stdout.splitlines() if "safe_stack:" in x]
    assert lines and f"safe_stack: Redis unreachable at redis://127.0.0.1:{port}/0" in lines[0], r.stdout
    assert "Traceback" not in r.stdout and "uvicorn" not in r.stdout
