"""A service process logs JSON only, from the first line: uvicorn's and alembic's lines included, a quiet
start (no alembic INFO chatter), and a failed start (port taken, no tokens outside dev) is JSON too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(tmp_path, port: int, prefix: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNER_REGISTRY_")}
    env.update({"PARTNER_REGISTRY_PORT": str(port), "REDIS_URL": redis_url, "SAFE_STREAM_PREFIX": prefix,
                "PARTNER_REGISTRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/pr.db", "SAFE_ENV": "dev",
                "SAFE_LOG_LEVEL": "INFO"})
    return env


def json_lines(text: str) -> list[dict]:
    lines = [x for x in text.splitlines() if x.strip()]
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return out


def test_a_start_and_stop_log_json_only_and_quietly(tmp_path, redis_url, prefix):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "safe_procurement.services.partner_registry"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=service_env(tmp_path, port, prefix, redis_url))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = json_lines(out.decode())
    assert not [r for r in records if str(r.get("logger", "")).startswith("alembic") and r.get("level") == "INFO"]
    assert len(records) <= 15, records  # a quiet start


def test_a_port_in_use_is_reported_as_json(tmp_path, redis_url, prefix):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "safe_procurement.services.partner_registry"], capture_output=True, text=True,
                           env=service_env(tmp_path, port, prefix, redis_url), timeout=90)
    assert r.returncode != 0
    records = json_lines(r.stdout + r.stderr)
    assert any("address already in use" in json.dumps(rec).lower() or "errno 98" in json.dumps(rec).lower()
               for rec in records), records


def test_a_start_refused_without_tokens_outside_dev_is_reported_as_json(tmp_path, redis_url, prefix):
    env = service_env(tmp_path, free_port(), prefix, redis_url)
    env.pop("SAFE_TOKENS", None)
    env["SAFE_ENV"] = "production"
    r = subprocess.run([sys.executable, "-m", "safe_procurement.services.partner_registry"], capture_output=True,
                       text=True, env=env, timeout=90)
    assert r.returncode == 3
    records = json_lines(r.stdout + r.stderr)
    assert any("SAFE_TOKENS is required" in json.dumps(rec) for rec in records), records
