"""The API documents are complete and right, checked by independent tools:
- OpenAPI: schemathesis fuzzes every admin endpoint of the applications service (running for real on a
  local port) with the operator token: no 5xx, status codes, content types and bodies as documented;
- AsyncAPI: the official AsyncAPI parser (npm `@asyncapi/parser`, tests/tools/asyncapi) validates each
  service's /asyncapi.json; every stream is a channel and every payload is described."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from safe_procurement.services.testing.inprocess import running
from safe_procurement.shared.kit import wire
from tests import dbs
from tests.builders import proposal
from tests.integration.helpers import FAST
from tests.integration.test_auth_matrix import SERVICES, build

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tests" / "tools" / "asyncapi"
OPERATOR = {"Authorization": "Bearer dev-operator"}


# --- AsyncAPI ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def asyncapi_validator() -> list[str]:
    """`node validate.mjs`, with the parser installed into tests/tools/asyncapi/node_modules once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node/npm not on PATH: the AsyncAPI documents cannot be checked by @asyncapi/parser")
    if not (TOOL / "node_modules" / "@asyncapi" / "parser").exists():
        install = [npm, "ci" if (TOOL / "package-lock.json").exists() else "install", "--no-audit", "--no-fund"]
        done = subprocess.run(install, cwd=TOOL, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"npm could not install @asyncapi/parser: {done.stderr[-2000:]}")
            pytest.skip(f"npm could not install @asyncapi/parser (offline?): {done.stderr[-500:]}")
    return [node, str(TOOL / "validate.mjs")]


async def test_every_services_asyncapi_document_is_valid_for_the_asyncapi_parser_and_complete(
    tmp_path, prefix, redis_client, asyncapi_validator
):
    files: dict[str, Path] = {}
    for service, (main_module, _config) in SERVICES.items():
        try:
            __import__(main_module)
        except ModuleNotFoundError:
            continue  # not built yet
        app = build(service, tmp_path / service, prefix, safe_tokens=None, safe_env="dev")
        async with running(app) as (client, rt):
            r = await client.get("/asyncapi.json", headers={"Authorization": ""})
            assert r.status_code == 200
            doc = r.json()
        _complete(service, doc, set(rt.messaging.subscriptions) | set(rt.spec.publishes), prefix)
        files[service] = tmp_path / f"{service}.asyncapi.json"
        files[service].write_text(json.dumps(doc))
    assert "applications" in files
    # one parser run for all documents (the parser takes seconds to load its rule sets)
    done = await asyncio.to_thread(subprocess.run, [*asyncapi_validator, *map(str, files.values())],
                                   capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout or "{}")
    errors = {service: [d for d in report.get(str(path), [{"severity": "error", "message": "not parsed"}])
                        if d["severity"] == "error"] for service, path in files.items()}
    assert done.returncode == 0 and not any(errors.values()), errors or done.stderr


def _complete(service: str, doc: dict[str, Any], streams_: set[str], prefix: str) -> None:
    """Every stream read or written is a channel; every payload is a described schema."""
    assert doc["asyncapi"].startswith("3.")
    channels = {c["address"].removeprefix(prefix) for c in doc["channels"].values()}
    assert streams_ <= channels, (service, streams_ - channels)
    schemas = doc["components"]["schemas"]
    for name, message in doc["components"]["messages"].items():
        ref = message["payload"].get("$ref", "")
        assert ref.startswith("#/components/schemas/"), (service, name, message["payload"])
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert schema.get("description"), f"{service} {name}: payload {ref} has no description"
        if "event_id" in schema.get("properties", {}):
            undocumented = [p for p, s in schema["properties"].items() if not s.get("description")
                            and p in ("event_id", "event_type", "occurred_at", "correlation_id", "causation_id",
                                      "schema_version", "producer", "trace_context")]
            assert not undocumented, (service, name, undocumented)
    for channel in doc["channels"].values():
        assert channel.get("description"), (service, channel["address"])


# --- OpenAPI, fuzzed by schemathesis ------------------------------------------------------------------------


def _free_port() -> int:
    for port in range(18500, 18600):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18500-18599")


@contextmanager
def _served(service: str, tmp_path, prefix: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A service on a real local port (uvicorn in a thread, lifespan included); yields its base URL."""
    import uvicorn

    main = importlib.import_module(f"safe_procurement.services.{service}.main")
    config = importlib.import_module(f"safe_procurement.services.{service}.config")
    app = main.build_app(config.Settings(database_url=dbs.url(tmp_path, service), stream_prefix=prefix,
                                         consumer_name="t1", **FAST))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{service}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{service} did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def served_applications(tmp_path, prefix, redis_url) -> Iterator[str]:
    """The applications service on a real local port; its streams are deleted afterwards."""
    try:
        with _served("applications", tmp_path, prefix) as base:
            yield base
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _seed(base: str, prefix: str, redis_url: str) -> dict[str, str]:
    """A case and a dead letter, so that reads by id find something too."""
    import requests

    body = proposal()
    case = requests.post(f"{base}/procurements", json=body, headers=OPERATOR, timeout=10).json()
    bad = proposal(participants=["PL", "ZZ"])
    redis.Redis.from_url(redis_url).xadd(f"{prefix}applications.submit-procurement", {wire.DATA: json.dumps(bad)})
    return {"case_id": case["id"], "reference": case["reference"]}


def test_schemathesis_finds_no_server_error_and_no_undocumented_response_on_any_endpoint(
    served_applications, prefix, redis_url
):
    base = served_applications
    seeded = _seed(base, prefix, redis_url)
    tested, failures = _fuzz(base, seeded, examples_per_operation=25)
    assert {"POST /procurements", "GET /procurements/{case_id}", "GET /dead-letters", "GET /audit",
            "POST /dead-letters/{dl_id}/replay", "GET /procurements/{case_id}/explain"} <= set(tested)
    assert not failures, "\n\n".join(failures)


async def test_every_openapi_operation_is_documented_and_secured_as_the_contract_says(tmp_path, prefix, redis_url):
    for service in SERVICES:
        app = build(service, tmp_path / service, prefix)
        doc = app.openapi()
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        for path, item in doc["paths"].items():
            for method, op in item.items():
                label = f"{service}: {method.upper()} {path}"
                assert op.get("description") or op.get("summary"), f"{label} has no docstring"
                open_ = path in ("/health/live", "/health/ready", "/metrics", "/asyncapi.json")
                assert ("security" not in op) == open_, label
                if not open_:
                    assert "401" in op["responses"], label
                    if any(scopes for req in op["security"] for scopes in req.values()):
                        assert "403" in op["responses"], label


# requests sent and 5xx answers seen by the schemathesis runs of this session (printed with -s)
CALLS: dict[str, int] = {}
SERVER_ERRORS: list[str] = []


def _fuzz(base: str, seeded: dict[str, str], *, examples_per_operation: int) -> tuple[list[str], list[str]]:
    """Fuzz every operation of the service at `base` with the operator token; collect every failure."""
    import hypothesis
    import schemathesis
    from schemathesis import checks

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    selected = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                checks.response_schema_conformance, checks.response_headers_conformance]
    failures: list[str] = []
    tested: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path in ("/metrics",):  # Prometheus text: no JSON schema to conform to; still must not 5xx
            pass
        label = f"{op.method.upper()} {op.path}"
        tested.append(label)
        examples = 10 if op.path == "/procurements" and op.method == "post" else examples_per_operation
        strategy = op.as_strategy()

        @hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        @hypothesis.given(case=strategy)
        def fuzz(case: Any) -> None:
            if seeded.get("case_id") and "case_id" in (case.path_parameters or {}) \
                    and hash(str(case.path_parameters)) % 3 == 0:
                case.path_parameters["case_id"] = seeded["case_id"]  # hit a real case now and then
            response = case.call(base_url=base, headers=OPERATOR, timeout=10)
            called = f"{case.method.upper()} {case.path}"
            CALLS[called] = CALLS.get(called, 0) + 1
            if response.status_code >= 500 and not (case.path == "/health/ready" and response.status_code == 503):
                SERVER_ERRORS.append(f"{called}: {response.status_code}")
            if case.path == "/health/ready" and response.status_code == 503:
                return  # not ready (e.g. no registry data yet) is a documented answer, not a server error
            case.validate_response(response, checks=selected)

        started = time.monotonic()
        try:
            fuzz()
        except Exception as e:  # collect every operation's failure, report them all
            failures.append(f"{label}: {type(e).__name__}: {str(e)[:1500]}")
        assert time.monotonic() - started < 60, f"{label} took too long"
    print(f"schemathesis at {base}: {len(tested)} operations, {sum(CALLS.values())} requests in this session so far, "
          f"{len(SERVER_ERRORS)} answered 5xx (a not-ready 503 from /health/ready aside)")
    return tested, failures


@pytest.fixture(params=["origin_verification", "partner_registry", "loan_disbursement"])
def served_service(request, tmp_path, prefix, redis_url) -> Iterator[str]:
    """Another service on a real local port."""
    with _served(request.param, tmp_path, prefix) as base:
        yield base


def test_schemathesis_finds_no_server_error_on_the_other_services_admin_endpoints(served_service):
    tested, failures = _fuzz(served_service, {}, examples_per_operation=12)
    assert "GET /dead-letters" in tested and len(tested) >= 8, tested
    assert not failures, "\n\n".join(failures)
