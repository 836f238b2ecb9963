"""The composition root every service uses: settings → engine, Redis, broker, messaging, relay → FastAPI.

A service describes itself with a `ServiceSpec`; `create_app` wires the rest. No I/O happens before the
FastAPI lifespan starts, so tests can build apps freely."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream.redis import RedisBroker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.kit import approvals, db, governance_api, logs, recovery, signing
from safe_procurement.shared.kit.auth import TokenStore, authenticate
from safe_procurement.shared.kit.messaging import Messaging
from safe_procurement.shared.kit.metrics import Metrics
from safe_procurement.shared.kit.outbox import OutboxRelay
from safe_procurement.shared.kit.runtime import DirectRoute, Runtime, ServiceSpec, runtime_of

__all__ = ["DirectRoute", "Runtime", "ServiceSpec", "create_app", "make_broker", "make_redis", "runtime_of", "validation_errors"]
from safe_procurement.shared.kit.settings import ServiceSettings
from safe_procurement.shared.kit.strict import StrictJson
from safe_procurement.shared.kit.web import ops_router

log = logging.getLogger("safe.app")

class ServiceApp(FastAPI):
    """FastAPI, with a few direct routes served without its machinery.

    A direct route (POST /procurements, the hottest request) skips the middleware stack, routing over every
    route, dependency resolution and response wrapping, which cost most of that request's CPU
    (docs/performance-history.md). It keeps what a request there gets from the stack: the body limit and NUL
    refusal (BodyLimit), a server span continuing the caller's trace, the same 401/403 for a missing or weak
    token, the same JSON for an HTTPException, 422 for JSON nested too deeply, and a 500 for an unexpected
    error; a test sends every kind of request both ways and compares the answers."""

    def __init__(self, *, direct: dict[tuple[str, str], DirectRoute], body_limit: int, **fastapi: Any) -> None:
        super().__init__(**fastapi)
        self.direct = dict(direct)
        self.body_limit = body_limit

    http_metrics: Metrics | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.http_metrics is None:
            await self._http(scope, receive, send)
            return
        status = 500
        started_at = time.perf_counter()

        async def counting_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._http(scope, receive, counting_send)
        finally:
            # the route template (/procurements/{case_id}), never the raw path: one series per route
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                scope["path"] if (scope["method"], scope["path"]) in self.direct else "unmatched")
            labels = (self.http_metrics.service, scope["method"], template, str(status))
            self.http_metrics.http_requests.labels(*labels).inc()
            self.http_metrics.http_duration.labels(*labels).observe(time.perf_counter() - started_at)

    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        route = self.direct.get((scope["method"], scope["path"]))
        if route is not None:
            await self._direct(route, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _direct(self, route: DirectRoute, scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = self
        role, handler = route

        async def handle(scope: Any, receive: Any, send: Any) -> None:
            request = Request(scope, receive)
            try:
                response = await handler(request, role(authenticate(request)))
            except HTTPException as e:
                response = JSONResponse({"detail": e.detail}, status_code=e.status_code, headers=e.headers)
            except RecursionError:
                response = JSONResponse({"detail": "JSON nested too deeply"}, status_code=422)
            await response(scope, receive, send)

        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await Tracing(BodyLimit(StrictJson(handle), self.body_limit))(scope, receive, tracking_send)
        except Exception:
            log.exception("request failed", extra={"method": scope["method"], "path": scope["path"]})
            if not started:
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)


def _redis_nodes(url: str, default_port: int) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """`scheme://[user:pass@]h1:p1,h2:p2[/db]` (or a bare `h1:p1,h2:p2`) → the nodes and connection options.

    Used for Sentinel (`redis+sentinel://s1:26379,s2:26379/0`: the nodes are the sentinels, the credentials
    and db are the master's) and Cluster (`redis://n1:6379,n2:6379`: the nodes are startup nodes)."""
    from urllib.parse import unquote

    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        scheme, rest = "", url.strip()
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    hostlist, _, path = rest.partition("/")
    userinfo, _, hostlist = hostlist.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hostlist.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, tail = item[1:].partition("]")
            port = tail.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        nodes.append((host, int(port) if port else default_port))
    if not nodes:
        raise ValueError(f"no Redis host in REDIS_URL {url!r}")
    options: dict[str, Any] = {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if has_password:
            options["password"] = unquote(password)
    db = path.strip("/")
    if db.isdigit():
        options["db"] = int(db)
    if scheme.split("+")[0] == "rediss":
        options["ssl"] = True
    return nodes, options


def make_broker(settings: ServiceSettings, metrics: Metrics) -> RedisBroker:
    """FastStream broker for the configured Redis topology (single, sentinel or cluster). No I/O here.

    - single: `REDIS_URL` as is.
    - sentinel: `REDIS_URL` lists the sentinels (`redis+sentinel://s1:26379,s2:26379/0` or `s1:26379,s2:26379`),
      `REDIS_SENTINEL_MASTER` names the master group; the broker discovers the master and follows failovers.
    - cluster: `REDIS_URL` lists one or more startup nodes (`redis://n1:6379,n2:6379`); the rest is discovered.
    """
    from faststream.redis.opentelemetry import RedisTelemetryMiddleware

    middlewares = (metrics.faststream_middleware(), RedisTelemetryMiddleware())
    common: dict[str, Any] = {
        "middlewares": middlewares, "graceful_timeout": settings.shutdown_timeout_s, "logger": None,
    }
    if settings.redis_mode in ("sentinel", "cluster"):
        from faststream.redis import RedisClusterBroker, RedisSentinelBroker

        sentinel = settings.redis_mode == "sentinel"
        nodes, options = _redis_nodes(settings.redis_url, 26379 if sentinel else 6379)
        scheme = "rediss" if options.get("ssl") else "redis"
        auth = ""
        if "username" in options or "password" in options:
            from urllib.parse import quote

            auth = quote(options.get("username", ""), safe="")
            if "password" in options:
                auth += ":" + quote(options["password"], safe="")
            auth += "@"
        db = f"/{options['db']}" if sentinel and "db" in options else ""
        first_host, first_port = nodes[0]
        host = f"[{first_host}]" if ":" in first_host else first_host
        # For Sentinel the URL only carries the master's credentials and db (its host is not dialled); for
        # Cluster it is the first startup node.
        url = f"{scheme}://{auth}{host}:{first_port}{db}"
        if sentinel:
            return RedisSentinelBroker(
                url, sentinels=nodes, sentinel_master_name=settings.redis_sentinel_master, **common,
            )
        return RedisClusterBroker(url, startup_nodes=nodes[1:], **common)
    if settings.redis_mode != "single":
        raise ValueError(f"REDIS_MODE must be single, sentinel or cluster, not {settings.redis_mode!r}")
    return RedisBroker(settings.redis_url, **common)


def make_redis(settings: ServiceSettings) -> Redis:
    """The plain redis-py client (outbox relay, consumer groups, health) for the same topology. No I/O here."""
    if settings.redis_mode == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        nodes, options = _redis_nodes(settings.redis_url, 26379)
        # The options (credentials, db, TLS) are the master's; the sentinels are dialled with socket options only.
        sentinel = Sentinel(nodes, health_check_interval=30, socket_keepalive=True, **options)
        return sentinel.master_for(settings.redis_sentinel_master)
    if settings.redis_mode == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes, options = _redis_nodes(settings.redis_url, 6379)
        options.pop("db", None)  # a cluster has only db 0
        return RedisCluster(  # type: ignore[return-value]
            startup_nodes=[ClusterNode(h, p) for h, p in nodes], health_check_interval=30, socket_keepalive=True,
            **options,
        )
    if settings.redis_mode != "single":
        raise ValueError(f"REDIS_MODE must be single, sentinel or cluster, not {settings.redis_mode!r}")
    return Redis.from_url(settings.redis_url, health_check_interval=30, socket_keepalive=True)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body larger than {limit} bytes")


class BodyLimit:
    """413 for a body over the limit: at once when Content-Length says so, else (chunked transfer) as soon
    as the bytes received pass the limit, so a body without a length cannot exhaust memory either."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"") \
                or b"\x00" in scope.get("query_string", b""):
            await JSONResponse(_NUL_DETAIL, status_code=422)(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await JSONResponse({"detail": f"body larger than {limit} bytes"}, status_code=413)(scope, receive, send)
                    return
        received = 0
        started = False

        tail = b""

        async def limited_receive() -> Any:
            nonlocal received, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(limit)
                # NUL cannot be stored in PostgreSQL text: refuse it up front (a chunk may split "\u0000")
                window = tail + chunk
                if b"\\u0000" in window or b"\x00" in window:
                    raise NulInBody()
                tail = window[-5:]
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await JSONResponse({"detail": f"body larger than {limit} bytes"}, status_code=413)(scope, receive, send)
        except NulInBody:
            if started:
                raise
            await JSONResponse(_NUL_DETAIL, status_code=422)(scope, receive, send)


class NulInBody(Exception):
    pass


_NUL_DETAIL = {"detail": [{"loc": ["body"], "field": "body", "type": "nul_character",
                           "msg": "NUL characters (\\u0000) are not accepted in any field"}]}


class Tracing:
    """An OpenTelemetry server span per HTTP request (continues an incoming `traceparent`), so the events a
    request writes to the outbox carry its trace context. Around every request for FastAPI versions without
    telemetry; around the direct routes (ServiceApp) always."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(("/health", "/metrics")):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()
                   if k in (b"traceparent", b"tracestate")}
        with logs.server_span(scope.get("method", ""), scope.get("path", ""), headers) as span:

            async def send_status(message: Any) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, send_status)


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        out.append({"loc": loc, "field": ".".join(p for p in loc if p != "body") or "body",
                    "msg": err.get("msg"), "type": err.get("type")})
    return out


def _messaging(spec: ServiceSpec, *, factory: async_sessionmaker[AsyncSession], redis: Redis,
               keyring: signing.Keyring, relay: OutboxRelay) -> Messaging:
    """The service's messaging, configured from its settings. A batch that emitted events publishes them right
    after its commit on its own connection (`SAFE_PUBLISH_AFTER_BATCH=0`: the relay task does, woken)."""
    settings = spec.settings
    after_batch = os.environ.get("SAFE_PUBLISH_AFTER_BATCH", "1") != "0"
    return Messaging(
        service=spec.name,
        factory=factory,
        redis=redis,
        keyring=keyring,
        consumer_name=settings.consumer_name,
        prefix=settings.stream_prefix,
        batch_size=settings.batch_size,
        poll_interval_ms=settings.poll_interval_ms,
        max_attempts=settings.max_attempts,
        retry_backoff_ms=settings.retry_backoff_ms,
        retry_backoff_max_ms=settings.retry_backoff_max_ms,
        claim_idle_ms=settings.claim_idle_ms,
        reclaim_interval_ms=settings.reclaim_interval_ms,
        on_emitted=relay.wake,
        publish_after_commit=relay.publish_after_commit if after_batch else None,
        unit_of_work=spec.unit_of_work,
    )


def _guard(spec: ServiceSpec, engine: AsyncEngine, redis: Redis, relay: OutboxRelay) -> recovery.RedisGuard | None:
    """The Redis guard (shared/kit/recovery.py), or None with REDIS_GUARD_INTERVAL_MS=0."""
    settings = spec.settings
    if settings.redis_guard_interval_ms <= 0:
        return None
    return recovery.RedisGuard(
        service=spec.name, redis=redis, engine=engine, streams_published=spec.publishes,
        republish=relay.publish_rows, prefix=settings.stream_prefix,
        interval_s=settings.redis_guard_interval_ms / 1000, margin_s=settings.redis_guard_margin_ms / 1000,
        fallback_window_s=settings.redis_guard_fallback_window_s,
    )


def _runtime(spec: ServiceSpec, redis: Redis | None) -> Runtime:
    """Every part of the service, without I/O. Refuses to build a service outside dev without its tokens
    (first), then without its event keys."""
    settings = spec.settings
    tokens = TokenStore(settings.safe_tokens, dev=settings.is_dev)
    keyring = signing.Keyring(settings.safe_event_keys, service=spec.name, key_id=settings.event_key_id,
                              dev=settings.is_dev)
    engine = db.make_engine(settings.database_url)
    factory = db.session_factory(engine)
    redis = make_redis(settings) if redis is None else redis
    relay = OutboxRelay(
        engine, redis, prefix=settings.stream_prefix, interval_s=settings.relay_interval_ms / 1000,
        after_publish=spec.after_publish, postgres=not db.is_sqlite(settings.database_url), sign=keyring.sign,
    )
    metrics = Metrics(spec.name)
    return Runtime(
        spec=spec, deps=spec.deps, settings=settings, tokens=tokens,
        messaging=_messaging(spec, factory=factory, redis=redis, keyring=keyring, relay=relay),
        broker=make_broker(settings, metrics), metrics=metrics, engine=engine, factory=factory, redis=redis,
        relay=relay, guard=_guard(spec, engine, redis, relay),
    )


def create_app(spec: ServiceSpec, *, messaging_setup: Callable[[Messaging, Runtime], None],
               redis: Redis | None = None) -> FastAPI:
    """The service's app: its runtime (see `_runtime`), subscriptions, routes and lifespan. `redis`: the client
    to use instead of the one the settings describe (a test's stand-in)."""
    settings = spec.settings
    runtime = _runtime(spec, redis)
    messaging, broker, metrics = runtime.messaging, runtime.broker, runtime.metrics
    messaging_setup(messaging, runtime)
    governance_api.register(messaging, runtime)
    messaging.attach(broker)
    for stream, model in spec.publishes.items():
        broker.publisher(
            stream=messaging.key(stream), schema=model, title=f"{stream}:publish",
            description=(model.__doc__ or "").strip(),
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        relay_task = await _start(spec, runtime)
        try:
            yield
        finally:
            await _stop(runtime, relay_task)

    app = ServiceApp(direct=spec.direct_routes, body_limit=settings.max_body_bytes, title=spec.title,
                     description=spec.description, version="1.0.0", lifespan=lifespan)
    app.state.runtime = runtime
    app.http_metrics = metrics
    metrics.subscriptions = lambda: messaging.subscriptions.values()
    app.add_middleware(StrictJson)  # inside BodyLimit: the size is checked before the body is buffered
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    try:  # FastAPI ≥ 0.16x opens a server span per request itself (continuing an incoming traceparent)
        import fastapi.telemetry  # noqa: F401
    except ImportError:
        app.add_middleware(Tracing)

    _install_error_handlers(app)

    app.include_router(ops_router(runtime))
    app.include_router(governance_api.router(runtime))
    app.include_router(approvals.router(runtime))
    for router in spec.routers:
        app.include_router(router)

    _install_openapi(app, spec)
    return app


async def _start(spec: ServiceSpec, runtime: Runtime) -> asyncio.Task[None]:
    """The lifespan's start, what does I/O: migrations, guard, hooks, groups, broker, background tasks; the relay's
    task is returned (it stops last)."""
    settings, messaging, broker = spec.settings, runtime.messaging, runtime.broker
    logs.configure(spec.name, settings.log_level, per_message=settings.log_messages)
    logs.configure_tracing(spec.name)
    logs.instrument(runtime.engine)  # Redis and SQLAlchemy spans, only when tracing is configured
    await db.migrate(settings.database_url, spec.migrations)
    if runtime.guard is not None:
        # its first look comes before this run publishes anything: rows already published are then a
        # previous run's, and missing markers mean Redis lost them while the service was down
        try:
            await runtime.guard.start()
        except Exception:  # Redis not answering yet: the guard's loop takes its first look later
            log.warning("redis guard: first look failed; retried in the background", exc_info=True)
    for hook in spec.on_startup:
        await hook(runtime)
    messaging.begin_start()
    await messaging.ensure_groups()
    await broker.start()
    messaging.start_background()
    relay_task = runtime.relay.start()
    runtime.tasks.append(relay_task)
    runtime.tasks.append(asyncio.create_task(governance_api.anchor_loop(runtime), name="audit-anchors"))
    if runtime.guard is not None:
        runtime.tasks.append(asyncio.create_task(runtime.guard.run(), name="redis-guard"))
    for bg in spec.background:
        runtime.tasks.append(asyncio.create_task(bg(runtime), name=bg.__name__))
    if os.environ.get("SAFE_GC_FREEZE") == "1":  # set by safe_procurement.services.runner.tune_gc in a service process
        gc.collect()
        gc.freeze()
    log.info("service started", extra={"port": settings.port, "consumer": settings.consumer_name})
    return relay_task


async def _stop(runtime: Runtime, relay_task: asyncio.Task[None]) -> None:
    """The lifespan's end: no new work, in-flight handlers finish, then the tasks, the relay, the connections.
    The engine and the Redis client stay usable: a disposed pool and a closed client connect again on use."""
    settings, messaging, broker = runtime.settings, runtime.messaging, runtime.broker
    log.info("service stopping")
    messaging.begin_stop()  # before the broker stops, or the group keeper restarts its subscribers
    await broker.stop()  # waits up to graceful_timeout for in-flight handlers
    await messaging.stop(settings.shutdown_timeout_s)
    if runtime.guard is not None:
        runtime.guard.stop()
    others = [t for t in runtime.tasks if t is not relay_task]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    # The relay is not cancelled mid-transaction (on SQLite that leaves the write lock held by a
    # connection nobody closes); it finishes its round, then the final flush runs.
    await runtime.relay.stop(relay_task, timeout=settings.shutdown_timeout_s)
    runtime.tasks.clear()
    await runtime.redis.aclose()
    await runtime.engine.dispose()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(RecursionError)
    async def _on_too_deep(_: Request, exc: RecursionError) -> JSONResponse:
        # a JSON body nested deeper than the parser's recursion limit: bad input, not a server error
        return JSONResponse({"detail": "JSON nested too deeply"}, status_code=422)


def _install_openapi(app: FastAPI, spec: ServiceSpec) -> None:
    """The OpenAPI document with the models the spec names beside the routes' own, and the error answers."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in spec.openapi_models:
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in js.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas[model.__name__] = js
            document_errors(app, doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/metrics", "/asyncapi.json"})

_PROBLEM = {
    "title": "Problem", "type": "object", "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "What went wrong, in words"}},
    "description": "An error with a message",
}
_FIELD_ERROR = {
    "title": "FieldError", "type": "object", "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "description": "Where the error is (body, query, path… then the field path)"},
        "field": {"type": "string", "description": "The offending field as a dotted path"},
        "msg": {"type": "string", "description": "What is wrong with it"},
        "type": {"type": "string", "description": "Error type"},
    },
    "description": "One offending field",
}
_VALIDATION_PROBLEM = {
    "title": "ValidationProblem", "type": "object", "required": ["detail"],
    "properties": {"detail": {"anyOf": [{"type": "string"},
                                        {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}],
                              "description": "Every offending field (or one message)"}},
    "description": "Invalid input: every offending field is listed",
}


def _problem(description: str, ref: str = "Problem") -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def document_errors(app: FastAPI, doc: dict[str, Any]) -> None:
    """Complete the OpenAPI document with what the kit adds to every route: bearer auth (401/403), the
    kit's 422 shape, 413 and 415 for bodies and 404 for resources by id."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update({"Problem": _PROBLEM, "FieldError": _FIELD_ERROR, "ValidationProblem": _VALIDATION_PROBLEM})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path, item in doc.get("paths", {}).items():
        for _method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            if "422" in responses or op.get("parameters") or op.get("requestBody"):
                responses["422"] = _problem("Invalid input: every offending field is listed", "ValidationProblem")
            if op.get("requestBody"):
                responses.setdefault("413", _problem("Body larger than the service accepts"))
                # shared/kit/strict.py: the body is JSON or nothing; duplicate keys, NaN, exponents, NUL: 422
                responses.setdefault("415", _problem("The body is not application/json", "ValidationProblem"))
            if path in OPEN_PATHS:
                continue
            op.setdefault("security", [{"bearer": []}])
            responses.setdefault("401", _problem("Missing or unknown bearer token"))
            roles = sorted({r for req in op["security"] for scopes in req.values() for r in scopes})
            if roles:
                responses.setdefault("403", _problem(f"Known token, wrong role (needs {' or '.join(roles)})"))
            if "{" in path:
                responses.setdefault("404", _problem("No such resource (or not visible to this Member State)"))
