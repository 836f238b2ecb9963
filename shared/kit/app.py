"""The composition root every service uses: settings → engine, Redis, broker, messaging, relay → FastAPI.

A service describes itself with a `ServiceSpec`; `create_app` wires the rest. No I/O happens before the
FastAPI lifespan starts, so tests can build apps freely."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from faststream.redis import RedisBroker
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.middleware.base import BaseHTTPMiddleware

from shared.kit import db, logs
from shared.kit.auth import TokenStore
from shared.kit.messaging import Messaging
from shared.kit.outbox import AfterPublish, OutboxRelay
from shared.kit.settings import ServiceSettings
from shared.kit.web import Metrics, ops_router

log = logging.getLogger("safe.app")

Hook = Callable[["Runtime"], Awaitable[None]]


@dataclass
class ServiceSpec:
    name: str
    title: str
    description: str
    settings: ServiceSettings
    migrations: str
    routers: list[APIRouter] = field(default_factory=list)
    publishes: dict[str, type[BaseModel]] = field(default_factory=dict)
    on_startup: list[Hook] = field(default_factory=list)
    after_publish: AfterPublish | None = None
    gauges: Callable[[Runtime], Awaitable[dict[str, dict[tuple[str, ...], float]]]] | None = None
    background: list[Callable[[Runtime], Awaitable[None]]] = field(default_factory=list)
    openapi_models: list[type[BaseModel]] = field(default_factory=list)


@dataclass
class Runtime:
    """Everything a route or hook may need, built once per process."""

    spec: ServiceSpec
    settings: ServiceSettings
    messaging: Messaging
    broker: RedisBroker
    metrics: Metrics
    engine: AsyncEngine | None = None
    factory: async_sessionmaker[AsyncSession] | None = None
    redis: Redis | None = None
    relay: OutboxRelay | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()


def make_broker(settings: ServiceSettings, metrics: Metrics) -> RedisBroker:
    """FastStream broker for the configured Redis topology (single, sentinel or cluster)."""
    middlewares = (metrics.faststream_middleware(),)
    if settings.redis_mode == "sentinel":
        from faststream.redis import RedisSentinelBroker  # type: ignore[attr-defined]

        return RedisSentinelBroker(  # pragma: no cover - needs a sentinel deployment
            settings.redis_url, master_name=settings.redis_sentinel_master, middlewares=middlewares,
            graceful_timeout=settings.shutdown_timeout_s, logger=None,
        )
    if settings.redis_mode == "cluster":
        from faststream.redis import RedisClusterBroker  # type: ignore[attr-defined]

        return RedisClusterBroker(  # pragma: no cover - needs a cluster deployment
            settings.redis_url, middlewares=middlewares, graceful_timeout=settings.shutdown_timeout_s, logger=None,
        )
    return RedisBroker(
        settings.redis_url, middlewares=middlewares, graceful_timeout=settings.shutdown_timeout_s, logger=None
    )


def make_redis(settings: ServiceSettings) -> Redis:
    if settings.redis_mode == "cluster":
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(settings.redis_url)  # type: ignore[return-value]
    return Redis.from_url(settings.redis_url, health_check_interval=30, socket_keepalive=True)


class BodyLimit(BaseHTTPMiddleware):
    def __init__(self, app: Any, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def dispatch(self, request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return JSONResponse({"detail": f"body larger than {self.limit} bytes"}, status_code=413)
        return await call_next(request)


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        out.append({"loc": loc, "field": ".".join(p for p in loc if p != "body") or "body",
                    "msg": err.get("msg"), "type": err.get("type")})
    return out


def create_app(spec: ServiceSpec, *, messaging_setup: Callable[[Messaging, Runtime], None]) -> FastAPI:
    settings = spec.settings
    metrics = Metrics(spec.name)
    messaging = Messaging(
        service=spec.name,
        factory=None,  # type: ignore[arg-type]  # set in the lifespan
        consumer_name=settings.consumer_name,
        prefix=settings.stream_prefix,
        batch_size=settings.batch_size,
        poll_interval_ms=settings.poll_interval_ms,
        max_attempts=settings.max_attempts,
        retry_backoff_ms=settings.retry_backoff_ms,
        retry_backoff_max_ms=settings.retry_backoff_max_ms,
        claim_idle_ms=settings.claim_idle_ms,
        reclaim_interval_ms=settings.reclaim_interval_ms,
    )
    broker = make_broker(settings, metrics)
    runtime = Runtime(spec=spec, settings=settings, messaging=messaging, broker=broker, metrics=metrics)
    messaging.on_emitted = runtime.wake_relay
    messaging_setup(messaging, runtime)
    messaging.attach(broker)
    for stream, model in spec.publishes.items():
        broker.publisher(
            stream=messaging.key(stream), schema=model, title=f"{stream}:publish",
            description=(model.__doc__ or "").strip(),
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.configure(spec.name, settings.log_level, per_message=settings.log_messages)
        app.state.tokens = TokenStore(settings.safe_tokens, dev=settings.is_dev)  # refuses to start without tokens
        await db.migrate(settings.database_url, spec.migrations)
        runtime.engine = db.make_engine(settings.database_url)
        runtime.factory = db.session_factory(runtime.engine)
        messaging.factory = runtime.factory
        runtime.redis = make_redis(settings)
        runtime.relay = OutboxRelay(
            runtime.factory, runtime.redis, prefix=settings.stream_prefix,
            interval_s=settings.relay_interval_ms / 1000, after_publish=spec.after_publish,
            postgres=not db.is_sqlite(settings.database_url),
        )
        for hook in spec.on_startup:
            await hook(runtime)
        messaging.redis = runtime.redis
        await messaging.ensure_groups()
        await broker.start()
        await messaging.start_background(runtime.redis)
        runtime.tasks.append(asyncio.create_task(runtime.relay.run(), name="outbox-relay"))
        for bg in spec.background:
            runtime.tasks.append(asyncio.create_task(bg(runtime), name=bg.__name__))
        log.info("service started", extra={"port": settings.port, "consumer": settings.consumer_name})
        try:
            yield
        finally:
            log.info("service stopping")
            await broker.stop()  # waits up to graceful_timeout for in-flight handlers
            await messaging.stop(settings.shutdown_timeout_s)
            for t in runtime.tasks:
                t.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)
            await runtime.relay.stop()
            await runtime.redis.aclose()
            await runtime.engine.dispose()

    app = FastAPI(title=spec.title, description=spec.description, version="1.0.0", lifespan=lifespan)
    app.state.runtime = runtime
    app.state.settings = settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    app.include_router(ops_router(runtime))
    for router in spec.routers:
        app.include_router(router)

    if spec.openapi_models:
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
                app.openapi_schema = doc
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]
    return app


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]
