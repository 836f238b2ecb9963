"""The Prometheus metrics of one service process: HTTP, streams, outbox, dead letters, service gauges."""

from __future__ import annotations

from typing import Any

from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily


class _SubscriptionCounters:
    """The consumers' running totals (kept as plain ints on each subscription, on the hot path) exposed as
    Prometheus counters, read at scrape time: `safe_messages_processed_total` and friends."""

    FAMILIES = (
        ("safe_messages_processed", "Messages handled (incl. duplicates)", "processed"),
        ("safe_messages_failed", "Handler failures (before retry)", "failed"),
        ("safe_messages_duplicates", "Duplicate deliveries skipped by the inbox", "duplicates"),
        ("safe_message_batches", "Batches handled (processed / batches: the mean batch size)", "batches"),
    )

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Any:
        subs = list(self.metrics.subscriptions()) if self.metrics.subscriptions else []
        for name, doc, attr in self.FAMILIES:
            family = CounterMetricFamily(name, doc, labels=["service", "stream"])
            for sub in subs:
                family.add_metric([self.metrics.service, sub.stream], getattr(sub, attr))
            yield family

    def describe(self) -> Any:
        return []


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        # the process's own metrics (process_*, python_gc_*, python_info), as on the default registry
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.subscriptions: Any = None  # set by the app: () -> the subscriptions whose totals are counted
        self.registry.register(_SubscriptionCounters(self))
        self.http_requests = Counter("http_requests", "HTTP requests answered, per route template and status",
                                     ["service", "method", "route", "status"], registry=self.registry)
        self.http_duration = Histogram("http_request_duration_seconds",
                                       "Time to answer an HTTP request, per route template and status",
                                       ["service", "method", "route", "status"], registry=self.registry)
        labels = ["service", "stream"]
        self.pending = Gauge("safe_stream_pending", "Entries delivered but not acknowledged", labels, registry=self.registry)
        self.lag = Gauge("safe_stream_lag", "Entries not yet delivered to the group", labels, registry=self.registry)
        self.oldest = Gauge(
            "safe_stream_oldest_pending_age_seconds", "Age of the oldest pending entry", labels, registry=self.registry
        )
        self.length = Gauge("safe_stream_length", "Entries in the stream", labels, registry=self.registry)
        self.dead = Gauge("safe_dead_letters_open", "Open dead letters", ["service"], registry=self.registry)
        self.outbox = Gauge("safe_outbox_unsent", "Outbox rows not yet published", ["service"], registry=self.registry)
        self.custom: dict[str, Gauge] = {}

    def faststream_middleware(self) -> RedisPrometheusMiddleware:
        return RedisPrometheusMiddleware(registry=self.registry, app_name=self.service)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
        if name not in self.custom:
            self.custom[name] = Gauge(name, doc, ["service", *labels], registry=self.registry)
        return self.custom[name]


