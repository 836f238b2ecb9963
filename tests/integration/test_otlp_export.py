"""Traces reach a collector by configuration only: a service process with the standard OTEL_* variables sends
OTLP/HTTP to a small receiver on loopback; the spans continue the caller's trace, carry the service's own
service.name, and the health probes make none."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.otlp import Receiver

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_service_exports_its_spans_over_otlp_http_with_the_callers_trace(tmp_path, redis_url, prefix):
    receiver = Receiver().start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARTNER_REGISTRY_", "OTEL_"))}
    env.update({
        "PARTNER_REGISTRY_PORT": str(port), "REDIS_URL": redis_url, "SAFE_STREAM_PREFIX": prefix, "SAFE_ENV": "dev",
        "PARTNER_REGISTRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/pr.db",
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "shared-name-the-service-overrides",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    proc = subprocess.Popen([sys.executable, "-m", "safe_procurement.services.partner_registry"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trace_id = secrets.token_hex(16)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "service exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        r = httpx.get(f"http://127.0.0.1:{port}/agreements",
                      headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
                               "Authorization": "Bearer dev-operator"})
        assert r.status_code < 500
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not [s for s in receiver.received() if s.trace_id == trace_id]:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        receiver.shutdown()
    spans = receiver.received()
    ours = [s for s in spans if s.trace_id == trace_id]
    assert ours, spans
    assert {s.service for s in ours} == {"partner_registry"}
    assert not [s for s in spans if "/health" in s.name], spans
