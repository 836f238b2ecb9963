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
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

pytestmark = pytest.mark.integration


class Receiver(ThreadingHTTPServer):
    """OTLP/HTTP (protobuf) on POST /v1/traces: keeps (service.name, trace id hex, span name) of every span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = ExportTraceServiceRequest.FromString(body)
                for rs in req.resource_spans:
                    attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            receiver.spans.append((attrs.get("service.name", ""), span.trace_id.hex(), span.name))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_service_exports_its_spans_over_otlp_http_with_the_callers_trace(tmp_path, redis_url, prefix):
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARTNER_REGISTRY_", "OTEL_"))}
    env.update({
        "PARTNER_REGISTRY_PORT": str(port), "REDIS_URL": redis_url, "SAFE_STREAM_PREFIX": prefix, "SAFE_ENV": "dev",
        "PARTNER_REGISTRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/pr.db",
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "shared-name-the-service-overrides",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    proc = subprocess.Popen([sys.executable, "-m", "services.partner_registry"], env=env,
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
        while time.monotonic() < deadline and not [s for s in receiver.spans if s[1] == trace_id]:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        receiver.shutdown()
    ours = [s for s in receiver.spans if s[1] == trace_id]
    assert ours, receiver.spans
    assert {s[0] for s in ours} == {"partner_registry"}
    assert not [s for s in receiver.spans if "/health" in s[2]], receiver.spans
