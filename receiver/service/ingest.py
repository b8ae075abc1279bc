"""ingest_deliveries: Alertmanager deliveries, one transaction for those that arrive
together (service/group_commit.py batches them; one delivery is a batch of one); and
`record_instances` and `follow_transitions`, the same logic for the reconciler's instances
(service/reconcile.py).

Alertmanager delivers at least once (retries, HA peers, repeat intervals), so every
effect hangs off an alert instance's *transition*, found by an atomic upsert keyed on
(fingerprint, starts_at): a copy that changes nothing is recorded as a duplicate and has
no effect, and a resolved instance is never turned back to firing.

Identity is compared at millisecond precision (Alertmanager's API v2 writes startsAt to
the millisecond, its webhook to the nanosecond): starts_at is truncated before anything
else, so a webhook copy of an instance the reconciler recorded is that instance.

An arriving instance SUPERSEDES every older instance of its fingerprint still stored as
firing (Alertmanager holds one alert per fingerprint): they are resolved in the same
transaction, with all their effects, so a lost resolved cannot keep a breaker open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db import breakers as breaker_rows
from receiver.db import ingest as ingest_rows
from receiver.db.audit import ALERTMANAGER, AuditTrail
from receiver.db.breakers import Versioned
from receiver.db.ingest import DeliveryRow, Known, Superseded
from receiver.db.transaction import database_now, in_transaction
from receiver.domain.alerts import (
    MAX_AHEAD,
    AlertInstance,
    AlertRole,
    AlertStatus,
    collapse_copies,
    independent_rounds,
    starts_too_far_ahead,
)
from receiver.domain.breaker import BreakerChanges
from receiver.domain.reconcile import at_api_precision
from receiver.service import breakers as breaker_service
from receiver.service import heartbeat as heartbeat_service
from receiver.service import incidents as incident_service

InstanceKey = tuple[str, datetime]
# (instances to write, tenants to register) -> the instances that changed, True: inserted.
Writer = Callable[[Sequence[AlertInstance], Sequence[str]], Awaitable[dict[InstanceKey, bool]]]

SUPERSEDED_REASON = "superseded"


@dataclass(frozen=True)
class WebhookDelivery:
    receiver: str
    status: str
    group_key: str
    group_labels: dict[str, str]
    external_url: str
    truncated_alerts: int
    alerts: Sequence[AlertInstance]


@dataclass(frozen=True)
class IngestResult:
    delivery_id: int
    alerts: int
    new: int
    changed: int
    duplicates: int
    stale: int
    truncated: int
    breakers: tuple[Versioned, ...] = ()
    transitions: int = 0
    incidents: tuple[str, ...] = field(default_factory=tuple)
    superseded: int = 0
    heartbeat: bool = False
    # The database's clock for this delivery: every decision and audit row used it.
    now: datetime | None = None


class AlertAuditor(Protocol):
    """How one path audits its instances (the webhook: alert.fired / alert.resolved /
    alert.duplicate; the reconciler: alert.reconciled)."""

    @property
    def actor(self) -> str: ...

    def changed(self, audit: AuditTrail, alert: AlertInstance, *, inserted: bool) -> None: ...

    def duplicate(self, audit: AuditTrail, alert: AlertInstance, *, stale: bool) -> None: ...


@dataclass
class Applied:
    """What a set of instances changed, and the effects that followed."""

    new: int = 0
    changed: int = 0
    duplicates: int = 0
    stale: int = 0
    fired: list[AlertInstance] = field(default_factory=list)
    resolved: list[AlertInstance] = field(default_factory=list)
    superseded: list[Superseded] = field(default_factory=list)
    changed_keys: set[InstanceKey] = field(default_factory=set)  # new or changed
    breaker_changes: BreakerChanges = field(default_factory=BreakerChanges)
    incidents: list[str] = field(default_factory=list)
    # Per instance, for `share`: True new, False changed, None a duplicate (True: stale).
    outcome: dict[InstanceKey, bool | None] = field(default_factory=dict)
    stale_keys: set[InstanceKey] = field(default_factory=set)

    def share(self, fingerprints: Collection[str]) -> Applied:
        """What was recorded of the instances of `fingerprints` (one delivery of a
        round), before breakers and incidents follow."""

        def mine(a: AlertInstance) -> bool:
            return a.fingerprint in fingerprints

        outcome = {k: v for k, v in self.outcome.items() if k[0] in fingerprints}
        return Applied(
            new=sum(v is True for v in outcome.values()),
            changed=sum(v is False for v in outcome.values()),
            duplicates=sum(v is None for v in outcome.values()),
            stale=sum(k[0] in fingerprints for k in self.stale_keys),
            fired=[a for a in self.fired if mine(a)],
            resolved=[a for a in self.resolved if mine(a)],
            superseded=[s for s in self.superseded if mine(s.instance)],
            changed_keys={k for k in self.changed_keys if k[0] in fingerprints},
            outcome=outcome,
            stale_keys={k for k in self.stale_keys if k[0] in fingerprints},
        )


def prepare(alerts: Sequence[AlertInstance]) -> list[AlertInstance]:
    """One entry per instance at the API's precision, in key (lock) order."""
    return collapse_copies(at_api_precision(a) for a in alerts)


def needs_guard(instances: Sequence[AlertInstance]) -> bool:
    """Trips are decided one at a time across the platform (the mass-isolation guard):
    take its lock before anything else when an isolating instance fires."""
    return any(a.role is AlertRole.ISOLATING and a.status is AlertStatus.FIRING for a in instances)


async def ingest_deliveries(
    *,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: Sequence[WebhookDelivery],
    config: ServiceConfig,
) -> list[IngestResult]:
    """Several deliveries in ONE transaction and one commit (group commit,
    service/group_commit.py), each with the result it would have had alone, one after
    the other: deliveries that share no alert fingerprint and no tenant cannot change
    each other's outcome and are recorded together, every statement over all of them
    (domain.alerts.independent_rounds); one that shares either with an earlier one is
    written after it and sees what it wrote (copies of one alert collapse into one
    transition, as across transactions)."""

    async def work(session: AsyncSession) -> list[IngestResult]:
        prepared = [prepare(d.alerts) for d in deliveries]
        # One guard lock for the whole batch, before anything else, as for one delivery.
        if any(needs_guard(p) for p in prepared):
            await breaker_rows.lock_guard(session)
        results: dict[int, IngestResult] = {}
        for members in independent_rounds(prepared):
            written = await _ingest_round(
                session, [(deliveries[i], prepared[i]) for i in members], config=config
            )
            results.update(zip(members, written, strict=True))
        return [results[i] for i in range(len(deliveries))]

    return await in_transaction(sessions, work, what="webhook delivery")


async def _ingest_round(
    session: AsyncSession,
    members: Sequence[tuple[WebhookDelivery, list[AlertInstance]]],
    *,
    config: ServiceConfig,
) -> list[IngestResult]:
    """Record the alerts of deliveries that cannot change each other's outcome
    (independent_rounds) with one statement set for all of them, then let breakers and
    incidents follow each delivery's transitions, one delivery after the other. The
    caller took the guard lock when an instance (prepared) needs it."""
    prepared = [p for _, p in members]
    ids, known = await ingest_rows.begin_deliveries(
        session, len(members), [a.fingerprint for p in prepared for a in p]
    )
    # The database's clock (read by begin_deliveries' statement, after the guard lock):
    # replicas whose clocks disagree still make the same decisions.
    now = await database_now(session)
    delivery_of = {a.fingerprint: i for i, p in zip(ids, prepared, strict=True) for a in p}
    # An alert's audit rows name the delivery that carried it; a breaker's or a member's,
    # the delivery of its tenant (tenants are not shared within a round); an incident's
    # own rows, the first delivery that touched it (_rows_by_delivery).
    audit = AuditTrail(delivery_id=ids[0])
    if len(ids) > 1:
        tenant_of = {a.tenant_id: i for i, p in zip(ids, prepared, strict=True) for a in p}

        def by_alert(tenant: str | None, details: Mapping[str, Any]) -> int | None:
            fingerprint = details.get("fingerprint")
            if fingerprint is not None and str(fingerprint) in delivery_of:
                return delivery_of[str(fingerprint)]
            return tenant_of.get(tenant) if tenant else None

        audit.delivery_of = by_alert
    rows = _delivery_rows(ids, members)

    async def write(
        fresh: Sequence[AlertInstance], tenants: Sequence[str]
    ) -> dict[InstanceKey, bool]:
        return await ingest_rows.write_deliveries(
            session,
            fresh,
            delivery_ids=[delivery_of[a.fingerprint] for a in fresh],
            deliveries=rows,
            tenants=tenants,
            now=now,
        )

    # No instance is in two members (independent_rounds): merged and sorted, one entry
    # per instance in the lock order.
    recorded = await record_instances(
        session,
        sorted((a for p in prepared for a in p), key=lambda a: a.key),
        known=known,
        write=write,
        auditor=WebhookAuditor(now=now),
        config=config,
        now=now,
        audit=audit,
    )
    results = await _follow_round(session, members, ids, recorded, audit, config=config, now=now)
    await audit.flush(session)
    return results


def _delivery_rows(
    ids: Sequence[int], members: Sequence[tuple[WebhookDelivery, list[AlertInstance]]]
) -> list[DeliveryRow]:
    return [
        DeliveryRow(
            id=delivery_id,
            receiver=d.receiver,
            status=d.status,
            group_key=d.group_key,
            group_labels=d.group_labels,
            external_url=d.external_url,
            alert_count=len(d.alerts),
            truncated_alerts=d.truncated_alerts,
        )
        for delivery_id, (d, _) in zip(ids, members, strict=True)
    ]


async def _follow_round(
    session: AsyncSession,
    members: Sequence[tuple[WebhookDelivery, list[AlertInstance]]],
    ids: Sequence[int],
    recorded: Applied,
    audit: AuditTrail,
    *,
    config: ServiceConfig,
    now: datetime,
) -> list[IngestResult]:
    """Breakers and incidents follow a recorded round's transitions all at once, as they
    follow one delivery that carries all its alerts (Alertmanager sends such deliveries
    whenever it groups alerts of several tenants): one guard decision, one statement set
    for the breakers and one incident flow for the whole round, instead of a dozen round
    trips per delivery with the guard lock held. Each delivery then gets its share: its
    instances' counts, its tenants' breaker changes, its audit rows and the incidents
    they name."""
    tenants_of = [{a.tenant_id for a in p if a.tenant_id} for _, p in members]
    await follow_transitions(
        session, recorded, config=config, now=now, audit=audit, deliveries=tenants_of
    )
    if len(ids) == 1:
        (delivery, instances), delivery_id = members[0], ids[0]
        return [
            await _finish(session, delivery_id, delivery, instances, recorded, config, now, audit)
        ]
    trails = _rows_by_delivery(audit.rows, ids)
    results = []
    for n, (delivery_id, (delivery, instances)) in enumerate(zip(ids, members, strict=True)):
        own = trails[delivery_id]
        applied = recorded.share({a.fingerprint for a in instances})
        tenants = tenants_of[n]
        applied.breaker_changes = BreakerChanges(
            [c for c in recorded.breaker_changes.changed if c.breaker.tenant_id in tenants]
        )
        applied.incidents = sorted({r["incident_id"] for r in own.rows if r["incident_id"]})
        results.append(
            await _finish(session, delivery_id, delivery, instances, applied, config, now, own)
        )
    # The log reads one delivery after the other.
    audit.rows = [row for delivery_id in ids for row in trails[delivery_id].rows]
    return results


def _rows_by_delivery(rows: Sequence[dict[str, Any]], ids: Sequence[int]) -> dict[int, AuditTrail]:
    """Each delivery's trail, in the order the rows were written. A row that names no
    alert of the round and none of its tenants (an incident opened, escalated or resolved)
    goes with the first delivery whose rows name its incident, else with the first."""
    first_of: dict[str, int] = {}
    order = {delivery_id: n for n, delivery_id in enumerate(ids)}
    for row in rows:
        incident, delivery_id = row["incident_id"], row["delivery_id"]
        if incident and delivery_id is not None:
            earlier = first_of.get(incident, delivery_id)
            first_of[incident] = min(earlier, delivery_id, key=order.__getitem__)
    trails = {delivery_id: AuditTrail(delivery_id=delivery_id) for delivery_id in ids}
    for row in rows:
        if row["delivery_id"] is None:
            row["delivery_id"] = first_of.get(row["incident_id"] or "", ids[0])
        trails[row["delivery_id"]].rows.append(row)
    return trails


async def _finish(
    session: AsyncSession,
    delivery_id: int,
    delivery: WebhookDelivery,
    instances: Sequence[AlertInstance],
    applied: Applied,
    config: ServiceConfig,
    now: datetime,
    audit: AuditTrail,
) -> IngestResult:
    """A delivery's heartbeat, its `delivery.accepted` row and its result."""
    beat = heartbeat_service.is_heartbeat_delivery(instances, config=config)
    if beat:
        await heartbeat_service.on_heartbeat(session, config=config, now=now, audit=audit)
    audit.add(
        "delivery.accepted",
        actor=ALERTMANAGER,
        alerts=len(delivery.alerts),
        truncated=delivery.truncated_alerts,
        groupKey=delivery.group_key,
        receiver=delivery.receiver,
        status=delivery.status,
        new=applied.new,
        changed=applied.changed,
        duplicates=applied.duplicates,
        superseded=len(applied.superseded),
    )
    changes = applied.breaker_changes
    return IngestResult(
        delivery_id=delivery_id,
        alerts=len(delivery.alerts),
        new=applied.new,
        changed=applied.changed,
        duplicates=applied.duplicates,
        stale=applied.stale,
        truncated=delivery.truncated_alerts,
        breakers=tuple(Versioned(c.version, c.breaker) for c in changes.changed),
        transitions=changes.transition_count,
        incidents=tuple(applied.incidents),
        superseded=len(applied.superseded),
        heartbeat=beat,
        now=now,
    )


async def record_instances(
    session: AsyncSession,
    instances: Sequence[AlertInstance],
    *,
    known: Known,
    write: Writer,
    auditor: AlertAuditor,
    config: ServiceConfig,
    now: datetime,
    audit: AuditTrail,
) -> Applied:
    """Record `instances` (prepared, guard lock taken when needed, `known` read after
    it), supersede older instances and audit them; `follow_transitions` then lets
    breakers and incidents follow. The caller flushes `audit`."""
    believable = _believable(instances, auditor=auditor, now=now, audit=audit)
    stale = stale_firings(believable, known)
    fresh = [a for a in believable if a.key not in stale]
    transitioned = await write(fresh, [a.tenant_id for a in believable if a.tenant_id])
    applied = _sort_alerts(
        believable, stale=stale, transitioned=transitioned, auditor=auditor, audit=audit
    )
    _audit_unusable_tenants(
        believable,
        applied.changed_keys,
        label=config.tenant_label,
        actor=auditor.actor,
        audit=audit,
    )
    applied.superseded = await _supersede(session, fresh, known=known, now=now)
    for s in applied.superseded:
        audit_superseded(audit, s, actor=auditor.actor)
        applied.resolved.append(s.instance)
    return applied


async def follow_transitions(
    session: AsyncSession,
    applied: Applied,
    *,
    config: ServiceConfig,
    now: datetime,
    audit: AuditTrail,
    deliveries: Sequence[Collection[str]] = (),
) -> None:
    """The second half: breakers, then incidents, follow the recorded transitions
    (`deliveries`: see incidents.apply_alert_transitions)."""
    applied.breaker_changes = await breaker_service.apply_alert_transitions(
        session,
        fired=applied.fired,
        resolved=applied.resolved,
        config=config,
        now=now,
        audit=audit,
    )
    applied.incidents = await incident_service.apply_alert_transitions(
        session,
        fired=applied.fired,
        resolved=applied.resolved,
        breaker_changes=applied.breaker_changes,
        config=config,
        now=now,
        audit=audit,
        deliveries=deliveries,
    )


def _believable(
    instances: Sequence[AlertInstance], *, auditor: AlertAuditor, now: datetime, audit: AuditTrail
) -> list[AlertInstance]:
    """The instances without those starting over MAX_AHEAD after `now` (the database's
    clock): those are audited and otherwise ignored, neither stored nor compared, so they
    trip nothing, supersede nothing and make no other instance stale. The delivery is
    still 200: a 4xx would make Alertmanager drop its other alerts with it."""
    kept = []
    for a in instances:
        if not starts_too_far_ahead(a, now=now):
            kept.append(a)
            continue
        audit.add(
            "alert.ignored",
            actor=auditor.actor,
            tenant_id=a.tenant_id,
            status=a.status.value,
            reason=f"startsAt is more than {MAX_AHEAD} ahead of the database clock ({now})",
            **alert_details(a),
        )
    return kept


def _audit_unusable_tenants(
    instances: Sequence[AlertInstance],
    changed: set[InstanceKey],
    *,
    label: str,
    actor: str,
    audit: AuditTrail,
) -> None:
    """An instance whose tenant label cannot be a tenant id is recorded without a tenant
    (no breaker effect); its first recording says so."""
    for a in instances:
        if a.tenant_problem is not None and a.key in changed:
            audit.add(
                "alert.unusable_tenant",
                actor=actor,
                label=label,
                problem=a.tenant_problem,
                value=a.labels.get(label, "")[:100],
                **alert_details(a),
            )


def stale_firings(instances: Sequence[AlertInstance], known: Known) -> set[InstanceKey]:
    """Firing copies of an instance older than one already recorded, or than another one
    arriving, for the same labels.

    Such a copy arrives when a delivery from before the alert resolved and fired again is
    retried late; letting it in would re-trip a breaker for a failure that is over."""
    newest = dict(known.newest)
    for a in instances:
        if a.fingerprint not in newest or a.starts_at > newest[a.fingerprint]:
            newest[a.fingerprint] = a.starts_at
    return {
        a.key
        for a in instances
        if a.status is AlertStatus.FIRING and newest[a.fingerprint] > a.starts_at
    }


async def _supersede(
    session: AsyncSession, fresh: Sequence[AlertInstance], *, known: Known, now: datetime
) -> list[Superseded]:
    """Resolve the stored firing instances older than an arriving one. Only asks the
    database when `known` says there is an older firing instance to resolve."""
    arrived = [
        a.key
        for a in fresh
        if a.fingerprint in known.oldest_firing and known.oldest_firing[a.fingerprint] < a.starts_at
    ]
    return await ingest_rows.supersede(session, arrived, now=now)


def audit_superseded(audit: AuditTrail, s: Superseded, *, actor: str) -> None:
    alert = s.instance
    audit.add(
        "alert.resolved",
        actor=actor,
        tenant_id=alert.tenant_id,
        fingerprint=alert.fingerprint,
        startsAt=alert.starts_at,
        alertname=alert.alertname,
        endsAt=alert.ends_at,
        reason=SUPERSEDED_REASON,
        supersededBy={"fingerprint": alert.fingerprint, "startsAt": s.by},
        seen_firing=True,
    )


def _sort_alerts(
    instances: Sequence[AlertInstance],
    *,
    stale: set[InstanceKey],
    transitioned: Mapping[InstanceKey, bool],
    auditor: AlertAuditor,
    audit: AuditTrail,
) -> Applied:
    """Count and audit each instance: a duplicate (stale, or a copy that changed
    nothing), or a transition to firing or to resolved."""
    out = Applied(stale=len(stale), stale_keys=set(stale))
    for alert in instances:
        key = alert.key
        inserted = transitioned.get(key)
        if key in stale or inserted is None:
            out.duplicates += 1
            out.outcome[key] = None
            auditor.duplicate(audit, alert, stale=key in stale)
            continue
        if inserted:
            out.new += 1
        else:
            out.changed += 1
        out.changed_keys.add(key)
        out.outcome[key] = inserted
        (out.fired if alert.status is AlertStatus.FIRING else out.resolved).append(alert)
        auditor.changed(audit, alert, inserted=inserted)
    return out


def alert_details(alert: AlertInstance) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint,
        "startsAt": alert.starts_at,
        "alertname": alert.alertname,
    }


@dataclass(frozen=True)
class WebhookAuditor:
    now: datetime
    actor: str = ALERTMANAGER

    def changed(self, audit: AuditTrail, alert: AlertInstance, *, inserted: bool) -> None:
        # `at`: the clock the decision used (occurred_at is the statement's); the what-if
        # replay places each input at it.
        details = {**alert_details(alert), "at": self.now}
        if alert.status is AlertStatus.FIRING:
            audit.add("alert.fired", actor=self.actor, tenant_id=alert.tenant_id, **details)
        else:
            audit.add(
                "alert.resolved",
                actor=self.actor,
                tenant_id=alert.tenant_id,
                endsAt=alert.ends_at or self.now,
                seen_firing=not inserted,
                **details,
            )

    def duplicate(self, audit: AuditTrail, alert: AlertInstance, *, stale: bool) -> None:
        details = {**alert_details(alert), "at": self.now}
        if stale:
            details = {
                "reason": "stale: a newer instance of these labels is already recorded",
                **details,
            }
        audit.add(
            "alert.duplicate",
            actor=self.actor,
            tenant_id=alert.tenant_id,
            status=alert.status.value,
            **details,
        )
