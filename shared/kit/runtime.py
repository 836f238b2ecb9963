"""The one runtime type of the kit: what a service declares (`ServiceSpec`) and what a running process holds
(`Runtime`), built by `safe_procurement.shared.kit.app.create_app` from the service's bootstrap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from faststream.redis import RedisBroker
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from safe_procurement.shared.kit import recovery
from safe_procurement.shared.kit.auth import Principal, TokenStore
from safe_procurement.shared.kit.budget import Budget
from safe_procurement.shared.kit.messaging import Messaging
from safe_procurement.shared.kit.metrics import Metrics
from safe_procurement.shared.kit.outbox import AfterPublish, OutboxRelay
from safe_procurement.shared.kit.settings import ServiceSettings
from safe_procurement.shared.kit.tables import utcnow
from safe_procurement.shared.kit.uow import UnitOfWork

D = TypeVar("D")

Hook = Callable[["Runtime"], Awaitable[None]]


@dataclass
class ServiceSpec(Generic[D]):
    """What a service is: its name, settings, typed dependencies (its bootstrap's), routes, streams and hooks."""

    name: str
    title: str
    description: str
    settings: ServiceSettings
    migrations: str
    deps: D = None  # type: ignore[assignment]  # the service's own dependencies (services/<svc>/bootstrap.py)
    routers: list[APIRouter] = field(default_factory=list)
    publishes: dict[str, type[BaseModel]] = field(default_factory=dict)
    on_startup: list[Hook] = field(default_factory=list)
    after_publish: AfterPublish | None = None
    gauges: Callable[[Runtime], Awaitable[dict[str, dict[tuple[str, ...], float]]]] | None = None
    background: list[Callable[[Runtime], Awaitable[None]]] = field(default_factory=list)
    openapi_models: list[type[BaseModel]] = field(default_factory=list)
    # Participants of a case this service knows (member-state scoping of dead letters whose payload does
    # not name them); None when unknown.
    participants_of: Callable[[Runtime, str], Awaitable[set[str] | None]] | None = None
    # The hottest requests, served before FastAPI's routing and dependency resolution (see ServiceApp):
    # (method, path) → (the role check, the handler). The route stays declared on a router too, for the
    # OpenAPI document, and calls the same handler.
    direct_routes: dict[tuple[str, str], DirectRoute] = field(default_factory=dict)
    # (session, *, batch) → the service's unit of work: what message handlers get with each message
    unit_of_work: Callable[..., UnitOfWork] = UnitOfWork


# a direct route: the role check (e.g. auth.require_operator), then the handler
DirectRoute = tuple[Callable[[Principal], Principal], Callable[[Request, Principal], Awaitable[Response]]]



@dataclass
class Runtime(Generic[D]):
    """Everything a route or hook may need, built once per process: the kit's parts and the service's own
    dependencies (`deps`), each a typed field. Building them does no I/O (the engine and the Redis client
    connect on first use); the lifespan starts and stops them, and may start them again."""

    spec: ServiceSpec[D]
    deps: D
    settings: ServiceSettings
    tokens: TokenStore  # the bearer tokens the service accepts (shared/kit/auth.py)
    messaging: Messaging
    broker: RedisBroker
    metrics: Metrics
    engine: AsyncEngine
    factory: async_sessionmaker[AsyncSession]
    redis: Redis
    relay: OutboxRelay
    guard: recovery.RedisGuard | None = None  # None with REDIS_GUARD_INTERVAL_MS=0
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # the time approvals and SLA clocks read (tests move it forward)
    clock: Callable[[], datetime] = utcnow
    # service checks answered on /health/ready beside the kit's own, by name
    ready_probes: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    # per-process limits of expensive requests, by name (shared/kit/budget.py)
    budgets: dict[str, Budget] = field(default_factory=dict)
    # the audit chain position last anchored (governance_api)
    anchor_seq: int | None = None

    def wake_relay(self) -> None:
        self.relay.wake()



def runtime_of(request: Request) -> Runtime[Any]:
    return request.app.state.runtime  # type: ignore[no-any-return]
