"""Prometheus metrics. One registry per application, so tests can build many apps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from receiver.cache.breaker_view import BreakerView
from receiver.domain.breaker import BreakerState, counts_as_isolated


class BreakerCollector(Collector):
    """Breaker state and trips per tenant, read from the in-memory view at scrape time."""

    def __init__(self, view: BreakerView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        state = GaugeMetricFamily(
            "receiver_breaker_state",
            "1 for the breaker's current state, per tenant (closed tenants never seen are absent)",
            labels=["tenant_id", "state"],
        )
        trips = GaugeMetricFamily(
            "receiver_breaker_trips",
            "Trips of the tenant's breaker since it was first seen (monotonic)",
            labels=["tenant_id"],
        )
        isolated = GaugeMetricFamily(
            "receiver_breakers_isolated", "Tenants isolated now (open, half_open, forced_open)"
        )
        count = 0
        for row in self._view.all():
            b = self._view.get(row.tenant_id, now=now)
            for s in BreakerState:
                state.add_metric([b.tenant_id, s.value], 1.0 if b.state is s else 0.0)
            trips.add_metric([b.tenant_id], float(b.trips))
            count += counts_as_isolated(b.state)
        isolated.add_metric([], float(count))
        yield state
        yield trips
        yield isolated


class Metrics:
    def __init__(self, view: BreakerView) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "receiver_webhook_deliveries",
            "Webhook deliveries committed",
            ["status"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "receiver_webhook_alerts",
            "Alert instances received, by what they changed (new, changed, duplicate)",
            ["result"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "receiver_webhook_rejections",
            "Requests refused before any change, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.processing = Histogram(
            "receiver_webhook_processing_seconds",
            "Time from a webhook's arrival to its answer, commit included",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.transitions = Counter(
            "receiver_breaker_transitions",
            "Breaker state changes committed by this replica",
            ["to"],
            registry=self.registry,
        )
        self.registry.register(BreakerCollector(view))
