"""Reconciliation with Alertmanager's own API: the pure diff (DESIGN.md, "The truth from
Alertmanager").

Every poll the reconciler reads `GET /api/v2/alerts` from every peer of the Alertmanager
cluster and compares the union of the answers with what the receiver stored:

- an alert with a role (isolating or platform) that some peer holds and the receiver has
  never recorded (truncated by `max_alerts`, a delivery given up on) is recorded as fired;
- a stored `firing` instance with a role that is absent from two consecutive COMPLETE
  polls (every peer answered) is resolved;
- a poll in which any peer failed changes nothing and does not advance the absent state
  (the next complete poll counts as the one right after the last complete poll).

Silenced and inhibited alerts still count as active: a silence stops pages, not
isolation. The API reports them with `status.state` "suppressed" (and `silencedBy` /
`inhibitedBy`); "unprocessed" ones are alerts the dispatcher has not looked at yet.
Alertmanager leaves alerts whose `endsAt` has passed out of the answer, so every alert a
peer returns is active whatever its state.

Identity is (fingerprint, startsAt), compared at MILLISECOND precision in UTC: the API
writes startsAt with three fractional digits (go-openapi's DateTime, truncated; checked
against Alertmanager 0.25), the webhook with up to nine, PostgreSQL stores six. See
`instance_key`.

Nothing here performs I/O or reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus, role_of

InstanceKey = tuple[str, datetime]

# The roles the reconciler acts on; tenant-only and role-less alerts (the heartbeat
# among them) are left to the webhook.
RECONCILED_ROLES = frozenset({AlertRole.ISOLATING, AlertRole.PLATFORM})

RECONCILER_ACTOR = "reconciler"
AUDIT_ACTION = "alert.reconciled"


def instance_key(fingerprint: str, starts_at: datetime) -> InstanceKey:
    """(fingerprint, startsAt) as the reconciler compares them: UTC, truncated to whole
    milliseconds, the precision of Alertmanager's API v2.

    Two instances of one fingerprint never start within the same millisecond (a new
    instance needs a resolve and a new evaluation first), so nothing is conflated."""
    utc = starts_at.astimezone(UTC)
    return (fingerprint, utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000))


def at_api_precision(alert: AlertInstance) -> AlertInstance:
    """The instance with startsAt truncated as `instance_key` truncates it: what ingest
    stores, so that a webhook copy and a reconciled copy are one row."""
    _, starts_at = instance_key(alert.fingerprint, alert.starts_at)
    return alert if starts_at == alert.starts_at else replace(alert, starts_at=starts_at)


class PeerAlertState(StrEnum):
    ACTIVE = "active"
    SUPPRESSED = "suppressed"  # silenced or inhibited: still active for the breakers
    UNPROCESSED = "unprocessed"  # received, not yet through the dispatcher


@dataclass(frozen=True)
class PeerAlert:
    """One alert of a peer's `GET /api/v2/alerts` answer (gettableAlert)."""

    fingerprint: str
    starts_at: datetime
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    ends_at: datetime | None = None
    updated_at: datetime | None = None
    generator_url: str = ""
    # The API's status.state. Kept as text: a state a newer Alertmanager adds still
    # counts as active, since the API never returns an alert that has ended.
    state: str = PeerAlertState.ACTIVE.value
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    receivers: tuple[str, ...] = ()

    @property
    def key(self) -> InstanceKey:
        return instance_key(self.fingerprint, self.starts_at)

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True)
class PeerOk:
    """A peer answered; `alerts` is everything it holds (active, silenced, inhibited,
    unprocessed)."""

    peer: str
    alerts: tuple[PeerAlert, ...]


@dataclass(frozen=True)
class PeerFailed:
    """A peer did not answer usefully (connection error, timeout, non-2xx, bad JSON)."""

    peer: str
    reason: str


PeerAnswer = PeerOk | PeerFailed


@dataclass(frozen=True)
class ReconcileChange:
    """One instance the reconciler changes: one `alert.reconciled` audit row.

    `instance` is ready for the ingest path: for a fired alert a new FIRING instance built
    from the peer's copy (startsAt at the API's millisecond precision); for a resolved one
    the stored instance with status RESOLVED and `ends_at` None (the service stamps the
    end with its commit time: when it ended is unknown, only that it did)."""

    instance: AlertInstance
    from_status: AlertStatus | None  # None: the receiver had never recorded it
    to_status: AlertStatus
    peer_state: str | None = None  # for a fired alert: its state at the peers
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()

    @property
    def key(self) -> InstanceKey:
        return instance_key(self.instance.fingerprint, self.instance.starts_at)

    def audit_details(self) -> dict[str, object]:
        """`details` of the audit row: fingerprint, startsAt, from, to (DESIGN.md); `from`
        is null for an alert the receiver had never recorded."""
        details: dict[str, object] = {
            "fingerprint": self.instance.fingerprint,
            # A datetime, as the ingest path writes it: the db JSON helper formats both
            # the same way, so SQL users compare one spelling.
            "startsAt": self.instance.starts_at,
            "alertname": self.instance.alertname,
            "from": self.from_status.value if self.from_status is not None else None,
            "to": self.to_status.value,
        }
        if self.to_status is AlertStatus.FIRING:
            details["peerState"] = self.peer_state
            if self.silenced_by:
                details["silencedBy"] = list(self.silenced_by)
            if self.inhibited_by:
                details["inhibitedBy"] = list(self.inhibited_by)
        else:
            details["reason"] = "absent from two consecutive complete polls"
        return details


@dataclass(frozen=True)
class Reconciliation:
    """The diff of one poll and the state to carry to the next one.

    `absent` holds the stored firing instances that were absent from this complete poll
    and are not resolved by it (after an incomplete poll: the previous state, unchanged).
    Carry it only once the changes are committed; if the commit fails, keep the previous
    state and the next poll decides again."""

    complete: bool
    changes: tuple[ReconcileChange, ...]
    absent: frozenset[InstanceKey]
    failed: tuple[PeerFailed, ...] = ()

    @property
    def fired(self) -> tuple[ReconcileChange, ...]:
        return tuple(c for c in self.changes if c.to_status is AlertStatus.FIRING)

    @property
    def resolved(self) -> tuple[ReconcileChange, ...]:
        return tuple(c for c in self.changes if c.to_status is AlertStatus.RESOLVED)


def reported_fingerprints(answers: Iterable[PeerAnswer]) -> frozenset[str]:
    """Fingerprints the peers hold: the service loads every stored instance of these (any
    status) beside the firing ones, so that `reconcile` knows what was ever recorded."""
    return frozenset(
        a.fingerprint for answer in answers if isinstance(answer, PeerOk) for a in answer.alerts
    )


def active_union(
    answers: Iterable[PeerAnswer], *, tenant_label: str
) -> dict[InstanceKey, PeerAlert] | None:
    """The union of the peers' alerts with a role, newest instance per fingerprint, or
    None when a peer failed (or there is no peer): such a poll proves nothing.

    Alertmanager holds one alert per fingerprint; peers that disagree are out of sync and
    the newest startsAt is the truth (an older instance is superseded by it). Copies of
    one instance at several peers are one entry (the most recently updated copy, so its
    annotations are the newest)."""
    answers = list(answers)
    ok = [a for a in answers if isinstance(a, PeerOk)]
    if not answers or len(ok) != len(answers):
        return None
    newest: dict[str, PeerAlert] = {}
    for answer in ok:
        for alert in answer.alerts:
            if role_of(alert.labels, tenant_label=tenant_label) not in RECONCILED_ROLES:
                continue
            seen = newest.get(alert.fingerprint)
            if seen is None or _preferred(alert, seen):
                newest[alert.fingerprint] = alert
    return {alert.key: alert for alert in newest.values()}


def _preferred(candidate: PeerAlert, current: PeerAlert) -> bool:
    """Whether `candidate` replaces `current` (same fingerprint): newer instance first,
    then the later update, then a fixed order, so the peers' order never matters."""
    return _rank(candidate) > _rank(current)


def _rank(alert: PeerAlert) -> tuple[datetime, datetime, tuple[tuple[str, str], ...], str]:
    floor = datetime.min.replace(tzinfo=UTC)
    updated = alert.updated_at.astimezone(UTC) if alert.updated_at is not None else floor
    return (alert.key[1], updated, tuple(sorted(alert.annotations.items())), alert.state)


def reconcile(
    stored: Iterable[AlertInstance],
    answers: Sequence[PeerAnswer],
    previously_absent: frozenset[InstanceKey],
    *,
    tenant_label: str,
) -> Reconciliation:
    """One poll's diff.

    `stored`: every stored FIRING instance (those without a reconciled role are ignored)
    and every stored instance, in any status, of the fingerprints the peers report
    (`reported_fingerprints`): an instance the receiver recorded as resolved is never
    fired again from a peer's stale copy, and neither is an instance older than one
    already recorded for its fingerprint. `previously_absent`: the `absent` of the last
    complete poll's result (empty at start).
    """
    failed = tuple(a for a in answers if isinstance(a, PeerFailed))
    union = active_union(answers, tenant_label=tenant_label)
    if union is None:
        return Reconciliation(complete=False, changes=(), absent=previously_absent, failed=failed)

    known: set[InstanceKey] = set()
    newest_known: dict[str, datetime] = {}
    firing: dict[InstanceKey, AlertInstance] = {}
    for instance in stored:
        key = instance_key(instance.fingerprint, instance.starts_at)
        known.add(key)
        if key[0] not in newest_known or key[1] > newest_known[key[0]]:
            newest_known[key[0]] = key[1]
        if instance.status is AlertStatus.FIRING and instance.role in RECONCILED_ROLES:
            firing[key] = instance

    changes: list[ReconcileChange] = []
    for key, alert in union.items():
        if key in known or key[1] < newest_known.get(key[0], key[1]):
            continue  # recorded already, or older than an instance recorded since
        changes.append(_fired(alert, tenant_label=tenant_label))

    absent_now = frozenset(key for key in firing if key not in union)
    to_resolve = absent_now & previously_absent
    changes.extend(
        ReconcileChange(
            instance=_as_resolved(firing[key]),
            from_status=AlertStatus.FIRING,
            to_status=AlertStatus.RESOLVED,
        )
        for key in to_resolve
    )
    changes.sort(key=lambda c: (c.key, c.to_status.value))
    return Reconciliation(
        complete=True,
        changes=tuple(changes),
        absent=absent_now - to_resolve,
        failed=(),
    )


def _fired(alert: PeerAlert, *, tenant_label: str) -> ReconcileChange:
    labels = dict(alert.labels)
    instance = AlertInstance(
        fingerprint=alert.fingerprint,
        starts_at=alert.key[1],
        ends_at=None,
        status=AlertStatus.FIRING,
        labels=labels,
        annotations=dict(alert.annotations),
        generator_url=alert.generator_url,
        role=role_of(labels, tenant_label=tenant_label),
        tenant_id=labels.get(tenant_label) or None,
    )
    return ReconcileChange(
        instance=instance,
        from_status=None,
        to_status=AlertStatus.FIRING,
        peer_state=alert.state,
        silenced_by=alert.silenced_by,
        inhibited_by=alert.inhibited_by,
    )


def _as_resolved(instance: AlertInstance) -> AlertInstance:
    return replace(instance, status=AlertStatus.RESOLVED, ends_at=None)
