"""Prometheus metrics. One registry per application, so tests can build many apps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from receiver.cache.breaker_view import BreakerView
from receiver.domain.analytics import StoreCounts
from receiver.domain.breaker import BreakerState, counts_as_isolated
from receiver.domain.notification import Channel
from receiver.domain.tiers import Priority

# Label values that exist from the start (at 0), so that rate() sees their first change
# and the dashboard's panels have series before anything happened.
WEBHOOK_REJECTIONS = (
    "unauthorized",
    "invalid_input",
    "invalid_payload",
    "payload_too_large",
    "unsupported_media_type",
)
OUTBOX_STATUSES = ("pending", "failed")


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


class StoreCollector(Collector):
    """Outbox backlog and unresolved incidents: database-wide counts, refreshed by a loop
    every few seconds (receiver/app.py) and read here at scrape time. Every replica reports
    the same numbers: aggregate them with max(), not sum()."""

    def __init__(self) -> None:
        self.counts: StoreCounts | None = None

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        if counts is None:  # not read yet (or the database was away since the start)
            return
        outbox = GaugeMetricFamily(
            "receiver_outbox_notifications",
            "Notifications in the outbox waiting to be sent (pending) or given up (failed)",
            labels=["channel", "status"],
        )
        for channel in Channel:
            for status in OUTBOX_STATUSES:
                n = counts.outbox.get((channel.value, status), 0)
                outbox.add_metric([channel.value, status], float(n))
        yield outbox
        yield GaugeMetricFamily(
            "receiver_outbox_oldest_pending_seconds",
            "Age of the oldest pending notification (0: none pending)",
            value=counts.oldest_pending_seconds,
        )
        unresolved = GaugeMetricFamily(
            "receiver_incidents_unresolved",
            "Incidents open or acknowledged, by priority",
            labels=["priority"],
        )
        for p in Priority:
            unresolved.add_metric([p.value], float(counts.unresolved_incidents.get(p.value, 0)))
        yield unresolved


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
        self.detection = Histogram(
            "receiver_detection_seconds",
            "From an isolating alert's startsAt to the breaker trip it caused",
            buckets=(5, 10, 15, 20, 25, 30, 35, 40, 45, 60, 90, 120, 300, 900),
            registry=self.registry,
        )
        self.registry.register(BreakerCollector(view))
        self.store = StoreCollector()
        self.registry.register(self.store)
        for reason in WEBHOOK_REJECTIONS:
            self.rejections.labels(reason=reason)
        for status in ("firing", "resolved"):
            self.deliveries.labels(status=status)
        for state in BreakerState:
            self.transitions.labels(to=state.value)
        self._truth_metrics()

    def _truth_metrics(self) -> None:
        """The truth from Alertmanager: reconciliation and the heartbeat."""
        self.reconcile_last_success = Gauge(
            "receiver_reconcile_last_success_timestamp_seconds",
            "Unix time of this replica's last complete reconciliation (every peer answered);"
            " one replica reconciles at a time, so take max() over replicas",
            registry=self.registry,
        )
        self.reconcile_polls = Counter(
            "receiver_reconcile_polls",
            "Reconciliation polls applied by this replica: complete, or incomplete (a peer"
            " failed, nothing changed)",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_changes = Counter(
            "receiver_reconcile_changes",
            "Alert instances reconciliation changed, by direction (fired: never recorded,"
            " resolved: absent from two complete polls)",
            ["direction"],
            registry=self.registry,
        )
        self.reconcile_peer_errors = Counter(
            "receiver_reconcile_peer_errors",
            "Polls of an Alertmanager peer that failed (connection, timeout, non-2xx, bad body)",
            ["peer"],
            registry=self.registry,
        )
        self.heartbeat_since: datetime | None = None
        heartbeat_age = Gauge(
            "receiver_heartbeat_age_seconds",
            "Seconds since the last heartbeat (or, none ever seen, since the receiver first"
            " started on this database); NaN when the heartbeat is off or not read yet",
            registry=self.registry,
        )
        heartbeat_age.set_function(self._heartbeat_age)

    def _heartbeat_age(self) -> float:
        if self.heartbeat_since is None:
            return float("nan")
        return (datetime.now(UTC) - self.heartbeat_since).total_seconds()

    def count_reconciliation(
        self, *, complete: bool, fired: int, resolved: int, failed_peers: Sequence[str]
    ) -> None:
        """Count one applied poll."""
        for peer in failed_peers:
            self.reconcile_peer_errors.labels(peer=peer).inc()
        if complete:
            self.reconcile_last_success.set_to_current_time()
        self.reconcile_polls.labels(result="complete" if complete else "incomplete").inc()
        self.reconcile_changes.labels(direction="fired").inc(fired)
        self.reconcile_changes.labels(direction="resolved").inc(resolved)

    def know_peers(self, peers: Sequence[str]) -> None:
        """Every configured peer's error series exists from the start, at 0."""
        for peer in peers:
            self.reconcile_peer_errors.labels(peer=peer)
        for direction in ("fired", "resolved"):
            self.reconcile_changes.labels(direction=direction)
