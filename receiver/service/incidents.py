"""Incident use cases: open, join, escalate and auto-resolve inside the transactions that
change alerts and breakers; acknowledge and resolve for people; the SLA check; reads.

Which tenants affect an incident: those whose breaker tripped, or whose trip the
mass-isolation guard suppressed, while it gathered tenants (DESIGN.md "Incidents").

Concurrency. Opening and joining run under one advisory transaction lock, taken after the
breaker rows are locked (the order ingest uses), so two webhooks for one failure event
never open two incidents. Incident rows are locked FOR NO KEY UPDATE before they change;
auto-resolve reads the members' breakers only after locking the incident, so a tenant
joining concurrently is either seen (no resolve) or joins a new incident.

The audit log is the incident's record: rows this transaction writes about a member
tenant (its alerts, breaker transitions) are tagged with the incident id before they are
flushed, so `audit_log WHERE incident_id = ...` is the whole story, and the isolation
spans behind the cost impact are read back from those breaker.transition rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, and_, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db.audit import SYSTEM, AuditTrail
from receiver.db.tables import (
    Alert,
    AuditLog,
    Breaker,
    Incident,
    IncidentAlert,
    IncidentCounter,
    IncidentTenant,
    Tenant,
)
from receiver.db.transaction import in_transaction
from receiver.domain import incident as domain
from receiver.domain import priority as priorities
from receiver.domain.alerts import AlertInstance, AlertRole
from receiver.domain.breaker import BreakerState, Suppressed, Transition, counts_as_isolated
from receiver.domain.incident import CostImpact, IncidentStatus, IsolationSpan
from receiver.domain.notification import IncidentMessage, NotificationEvent, TenantSummary
from receiver.domain.tiers import Priority, Tier
from receiver.errors import Conflict, NotFound
from receiver.service import outbox

if TYPE_CHECKING:
    from receiver.domain.breaker import BreakerChange, BreakerChanges

log = logging.getLogger(__name__)

# Opening and joining incidents is decided one delivery at a time across all replicas.
INCIDENT_LOCK = 7262023

TRIPPED = "tripped"
SUPPRESSED = "suppressed"
_FORCED = frozenset({BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED})
_CLOSED = frozenset({BreakerState.CLOSED, BreakerState.FORCED_CLOSED})
# Rows about a member tenant that belong in the incident's record.
_TAGGED_ACTIONS = frozenset(
    {
        "alert.fired",
        "alert.resolved",
        "breaker.transition",
        "breaker.suppressed",
        "breaker.override",
    }
)
AUTO_RESOLVE_NOTE = "every affected tenant's breaker is closed and no platform alert fires"


# --- records returned to the HTTP layer -------------------------------------------------


def sla_breached(
    *,
    ack_due_at: datetime,
    acknowledged_at: datetime | None,
    resolved_at: datetime | None,
    now: datetime,
) -> bool:
    """The first response (acknowledgement, else resolution, else none yet) came after
    the due time. The same rule as the `incident_summary` view's `sla_breached`."""
    first_response = acknowledged_at or resolved_at or now
    return first_response > ack_due_at


@dataclass(frozen=True)
class IncidentRecord:
    id: str
    title: str
    priority: Priority
    status: IncidentStatus
    opened_at: datetime
    ack_due_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    sla_breached_at: datetime | None
    tenants: tuple[str, ...] = ()

    def sla_breached(self, now: datetime) -> bool:
        return sla_breached(
            ack_due_at=self.ack_due_at,
            acknowledged_at=self.acknowledged_at,
            resolved_at=self.resolved_at,
            now=now,
        )

    def to_json(self, *, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "priority": self.priority.value,
            "status": self.status.value,
            "opened_at": self.opened_at,
            "ack_due_at": self.ack_due_at,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": self.resolved_at,
            "resolved_by": self.resolved_by,
            "sla_breached": self.sla_breached(now),
            "sla_breached_at": self.sla_breached_at,
            "tenants": list(self.tenants),
        }


def _record(row: Any, tenants: Sequence[str] = ()) -> IncidentRecord:
    return IncidentRecord(
        id=row.id,
        title=row.title,
        priority=Priority(row.priority),
        status=IncidentStatus(row.status),
        opened_at=row.opened_at,
        ack_due_at=row.ack_due_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        sla_breached_at=row.sla_breached_at,
        tenants=tuple(tenants),
    )


def _tier(value: str | None) -> Tier | None:
    """The configured tier, or None for a tenant nobody registered (handled as bronze)."""
    return Tier(value) if value else None


# --- hooks called inside the ingest and breaker transactions ---------------------------


async def apply_alert_transitions(
    session: AsyncSession,
    *,
    fired: Sequence[AlertInstance],
    resolved: Sequence[AlertInstance],
    breaker_changes: BreakerChanges,
    config: ServiceConfig,
    now: datetime,
    audit: AuditTrail,
) -> list[str]:
    """Incident effects of one webhook delivery; returns the incidents it touched.

    Trips and suppressed trips open or join incidents; platform alerts open, join or
    escalate to P0; other tenant alerts are linked to their tenant's open incident;
    recoveries (a breaker closing, a platform alert resolving) may resolve incidents."""
    flow = _Flow(session, config=config, now=now, audit=audit)
    failures = _failures(breaker_changes.changed)
    platform_fired = [a for a in fired if a.role is AlertRole.PLATFORM]
    await flow.open_or_join(failures, platform_fired)
    await flow.link_tenant_alerts(
        [a for a in fired if a.tenant_id and a.role is not AlertRole.PLATFORM]
    )
    await flow.tag_audit_rows()
    recovering = _closed_tenants(breaker_changes.changed)
    recovering |= {a.tenant_id for a in resolved if a.tenant_id and a.role is AlertRole.ISOLATING}
    await flow.auto_resolve(
        tenants=recovering,
        platform_alerts=[a.key for a in resolved if a.role is AlertRole.PLATFORM],
    )
    await flow.notify()
    return sorted(flow.touched)


async def after_breaker_changes(
    session: AsyncSession,
    *,
    changes: Sequence[BreakerChange],
    config: ServiceConfig,
    now: datetime,
    audit: AuditTrail,
) -> list[str]:
    """Incident effects of breaker changes made by probes, operators or the sweeper:
    a re-trip by failed probes opens or joins an incident; closing may resolve one."""
    if not changes:
        return []
    flow = _Flow(session, config=config, now=now, audit=audit)
    await flow.open_or_join(_failures(changes), [])
    await flow.tag_audit_rows()
    await flow.auto_resolve(tenants=_closed_tenants(changes), platform_alerts=[])
    await flow.notify()
    return sorted(flow.touched)


def _closed_tenants(changes: Iterable[BreakerChange]) -> set[str]:
    """Tenants whose breaker is closed after these changes: only they can let an incident
    resolve. (A trip never can, and checking the incident of every trip would read all of
    a large incident's members on each one.)"""
    return {c.breaker.tenant_id for c in changes if c.breaker.state in _CLOSED}


def _failures(changes: Iterable[BreakerChange]) -> dict[str, str]:
    """Tenants that failed in these changes: tripped (an automatic move into open, not an
    operator's release) or suppressed by the mass-isolation guard."""
    out: dict[str, str] = {}
    for change in changes:
        for event in change.events:
            if isinstance(event, Suppressed):
                out.setdefault(event.tenant_id, SUPPRESSED)
            elif (
                isinstance(event, Transition)
                and event.to_state is BreakerState.OPEN
                and event.from_state not in _FORCED
            ):
                out[event.tenant_id] = TRIPPED
    return out


@dataclass
class _Event:
    event: NotificationEvent
    incident_id: str
    previous: Priority | None = None
    actor: str | None = None
    note: str | None = None


@dataclass
class _Flow:
    """The incident side of one transaction: what it changed, and the notifications due."""

    session: AsyncSession
    config: ServiceConfig
    now: datetime
    audit: AuditTrail
    touched: set[str] = field(default_factory=set)
    events: list[_Event] = field(default_factory=list)
    # tenant -> its unresolved incident (None: none), as read or changed in this flow:
    # linking alerts and tagging audit rows ask the same question of the same tenants.
    _membership: dict[str, str | None] = field(default_factory=dict)

    async def memberships(self, tenants: Iterable[str]) -> dict[str, str]:
        """The unresolved incident of each tenant that has one (unlocked read)."""
        wanted = set(tenants)
        missing = wanted - self._membership.keys()
        if missing:
            found = await _unresolved_memberships(self.session, missing, lock=False)
            for tenant in missing:
                self._membership[tenant] = found.get(tenant)
        return {t: i for t in wanted if (i := self._membership[t]) is not None}

    # -- open / join / escalate ----------------------------------------------------------

    async def open_or_join(
        self, failures: Mapping[str, str], platform_fired: Sequence[AlertInstance]
    ) -> None:
        if not failures and not platform_fired:
            return
        session = self.session
        await session.execute(select(func.pg_advisory_xact_lock(INCIDENT_LOCK)))

        # A tenant already part of an unresolved incident stays with it: a re-trip is
        # more of the same failure, not a new one.
        members = await _unresolved_memberships(session, failures, lock=True)
        for tenant in failures:
            self._membership[tenant] = members.get(tenant)
        newcomers = {t: c for t, c in sorted(failures.items()) if t not in members}
        for tenant in sorted(set(failures) - set(newcomers)):
            await self._link_firing(members[tenant], [tenant])
            self.touched.add(members[tenant])

        # A platform alert firing again (a new instance of the same labels) while an
        # incident it belongs to is unresolved stays with that incident.
        linked = await _unresolved_platform_incidents(
            session, {a.fingerprint for a in platform_fired}
        )
        new_platform = [a for a in platform_fired if a.fingerprint not in linked]
        for a in platform_fired:
            if a.fingerprint in linked:
                await self._link(linked[a.fingerprint], [a.key], reason="platform alert fired")
                self.touched.add(linked[a.fingerprint])
        if not newcomers and not new_platform:
            return

        target = await self._correlated_incident()
        if target is None:
            await self._open(newcomers, new_platform)
        else:
            await self._join(target, newcomers, new_platform)

    async def _correlated_incident(self) -> Any | None:
        """The newest unresolved incident opened less than the correlation window ago."""
        window = self.config.correlation_window
        rows = await self.session.execute(
            select(Incident.__table__)
            .where(Incident.status != IncidentStatus.RESOLVED.value)
            .where(Incident.opened_at > self.now - window)
            .order_by(Incident.opened_at.desc(), Incident.id.desc())
            .with_for_update(key_share=True)
        )
        for row in rows:
            if domain.joins_open_incident(
                incident_opened_at=row.opened_at,
                incident_status=IncidentStatus(row.status),
                now=self.now,
                window=window,
            ):
                return row
        return None

    async def _open(self, newcomers: Mapping[str, str], platform: Sequence[AlertInstance]) -> None:
        session, now = self.session, self.now
        tiers = await _tiers(session, newcomers)
        priority = _priority(
            None,
            tiers=list(tiers.values()),
            platform=bool(platform),
            suppressed=SUPPRESSED in newcomers.values(),
        )
        incident_id = await _next_id(session, now)
        alertnames = await _firing_alertnames(session, newcomers)
        title = _title(newcomers, alertnames, [a.alertname for a in platform])
        due = priorities.ack_due_at(opened_at=now, tiers=list(tiers.values()), priority=priority)
        await session.execute(
            insert(Incident).values(
                id=incident_id,
                title=title,
                priority=priority.value,
                status=IncidentStatus.OPEN.value,
                opened_at=now,
                ack_due_at=due,
            )
        )
        self.audit.add(
            "incident.opened",
            actor=SYSTEM,
            incident_id=incident_id,
            priority=priority.value,
            title=title,
            tenants=sorted(newcomers),
            platform_alerts=[a.alertname for a in platform],
            ack_due_at=due,
            reason=_priority_reason(
                priority,
                tiers=list(tiers.values()),
                platform=bool(platform),
                suppressed=SUPPRESSED in newcomers.values(),
            ),
        )
        for details in await self._add_members(incident_id, newcomers, tiers, priority):
            details["ack_due_at"] = due
        await self._link(incident_id, [a.key for a in platform], reason=None)
        self.touched.add(incident_id)
        self.events.append(_Event(NotificationEvent.OPENED, incident_id))

    async def _join(
        self, row: Any, newcomers: Mapping[str, str], platform: Sequence[AlertInstance]
    ) -> None:
        incident_id = row.id
        tiers = await _tiers(self.session, newcomers)
        joined = await self._add_members(incident_id, newcomers, tiers, Priority(row.priority))
        if platform:
            await self._link(incident_id, [a.key for a in platform], reason="platform alert fired")
        self.touched.add(incident_id)
        what = [f"tenant {t} ({_tier_text(tiers[t])}, {c})" for t, c in newcomers.items()]
        what += [f"platform alert {a.alertname or a.fingerprint}" for a in platform]
        priority, due = await self._reprioritise(row, trigger=" and ".join(what) + " joined")
        # The join rows say what the incident is once they joined (a tightened due time
        # has no row of its own; an escalation follows as incident.escalated).
        for details in joined:
            details.update(priority=priority.value, ack_due_at=due)

    async def _add_members(
        self,
        incident_id: str,
        newcomers: Mapping[str, str],
        tiers: Mapping[str, Tier | None],
        priority: Priority,
    ) -> list[dict[str, Any]]:
        """Add the tenants; returns the details of their incident.joined audit rows."""
        if not newcomers:
            return []
        await self.session.execute(
            pg_insert(IncidentTenant)
            .values(
                [
                    {"incident_id": incident_id, "tenant_id": t, "joined_at": self.now, "cause": c}
                    for t, c in newcomers.items()
                ]
            )
            .on_conflict_do_nothing()
        )
        for tenant in newcomers:
            self._membership[tenant] = incident_id
        joined = []
        for tenant, cause in newcomers.items():
            self.audit.add(
                "incident.joined",
                actor=SYSTEM,
                tenant_id=tenant,
                incident_id=incident_id,
                cause=cause,
                tier=_tier_text(tiers[tenant]),
                priority=priority.value,
                reason=(
                    "breaker tripped"
                    if cause == TRIPPED
                    else "trip suppressed by the mass-isolation guard"
                ),
            )
            joined.append(self.audit.rows[-1]["details"])
        await self._link_firing(incident_id, list(newcomers))
        return joined

    async def _reprioritise(self, row: Any, *, trigger: str) -> tuple[Priority, datetime]:
        """Escalate (never de-escalate) from all members and links; tighten ack_due_at.
        Returns the priority and due time now."""
        session = self.session
        current = Priority(row.priority)
        if current is Priority.P0 and row.ack_due_at <= row.opened_at + priorities.P0_SLA:
            # Already as urgent and as tight as an incident gets: nothing a join can change,
            # and a large incident's members need not be read again on every join.
            return current, row.ack_due_at
        members = await _members(session, row.id)
        tiers = [m.tier for m in members]
        platform = await _has_platform_alert(session, row.id)
        suppressed = any(m.cause == SUPPRESSED for m in members)
        new = _priority(current, tiers=tiers, platform=platform, suppressed=suppressed)
        due = min(
            row.ack_due_at,
            priorities.ack_due_at(opened_at=row.opened_at, tiers=tiers, priority=new),
        )
        if new is current and due == row.ack_due_at:
            return new, due
        await session.execute(
            update(Incident)
            .where(Incident.id == row.id)
            .values(priority=new.value, ack_due_at=due, updated_at=func.now())
        )
        if new is not current:
            self.audit.add(
                "incident.escalated",
                actor=SYSTEM,
                incident_id=row.id,
                priority=new.value,
                ack_due_at=due,
                tenants=len(members),
                reason=f"{trigger}: "
                + _priority_reason(new, tiers=tiers, platform=platform, suppressed=suppressed),
                **{"from": current.value, "to": new.value},
            )
            self.events.append(_Event(NotificationEvent.ESCALATED, row.id, previous=current))
        return new, due

    # -- alerts ----------------------------------------------------------------------------

    async def _link_firing(self, incident_id: str, tenants: Sequence[str]) -> None:
        """Link the tenants' firing alerts (the ones that made them fail) to the incident."""
        rows = await self.session.execute(
            select(Alert.fingerprint, Alert.starts_at).where(
                Alert.tenant_id.in_(tenants), Alert.status == "firing"
            )
        )
        await self._link(incident_id, [(fp, s) for fp, s in rows.tuples()], reason=None)

    async def _link(
        self, incident_id: str, keys: Sequence[tuple[str, datetime]], *, reason: str | None
    ) -> None:
        """Link alert instances; with a `reason`, each new link is audited on its own."""
        if not keys:
            return
        result = await self.session.execute(
            pg_insert(IncidentAlert)
            .values(
                [
                    {
                        "incident_id": incident_id,
                        "fingerprint": fp,
                        "starts_at": s,
                        "linked_at": self.now,
                    }
                    for fp, s in sorted(set(keys))
                ]
            )
            .on_conflict_do_nothing()
            .returning(IncidentAlert.fingerprint, IncidentAlert.starts_at)
        )
        new = list(result.tuples())
        if reason is None or not new:
            return
        rows = await self.session.execute(
            select(Alert.fingerprint, Alert.starts_at, Alert.alertname, Alert.tenant_id).where(
                _alert_keys_in(new)
            )
        )
        for fp, starts_at, alertname, tenant in rows.tuples():
            self.audit.add(
                "incident.alert_linked",
                actor=SYSTEM,
                tenant_id=tenant,
                incident_id=incident_id,
                fingerprint=fp,
                startsAt=starts_at,
                alertname=alertname,
                reason=reason,
            )

    async def link_tenant_alerts(self, alerts: Sequence[AlertInstance]) -> None:
        """Alerts naming a member tenant (with or without an isolate label) that fired now
        join the record of the tenant's unresolved incident."""
        if not alerts:
            return
        tenants = {a.tenant_id for a in alerts if a.tenant_id}
        members = await self.memberships(tenants)
        by_incident: dict[str, list[tuple[str, datetime]]] = {}
        for a in alerts:
            if a.tenant_id in members:
                by_incident.setdefault(members[a.tenant_id], []).append(a.key)
        for incident_id, keys in sorted(by_incident.items()):
            await self._link(incident_id, keys, reason="alert fired for a tenant of the incident")
            self.touched.add(incident_id)

    async def tag_audit_rows(self) -> None:
        """Give this transaction's rows about member tenants their incident id."""
        tenants = {
            r["tenant_id"]
            for r in self.audit.rows
            if r["tenant_id"] and r["incident_id"] is None and r["action"] in _TAGGED_ACTIONS
        }
        if not tenants:
            return
        members = await self.memberships(tenants)
        for row in self.audit.rows:
            if row["incident_id"] is None and row["action"] in _TAGGED_ACTIONS:
                row["incident_id"] = members.get(row["tenant_id"])

    # -- resolve ---------------------------------------------------------------------------

    async def auto_resolve(
        self, *, tenants: Iterable[str], platform_alerts: Sequence[tuple[str, datetime]]
    ) -> None:
        """Resolve (actor `system`) the incidents of these tenants / platform alerts whose
        every affected tenant has recovered while no platform alert of theirs fires."""
        session = self.session
        candidates = set(
            (await _unresolved_memberships(session, set(tenants), lock=False)).values()
        )
        candidates |= set((await _unresolved_links(session, platform_alerts)).values())
        if not candidates:
            return
        # Lock first, then read the members: a tenant joining concurrently is then seen.
        rows = await session.execute(
            select(Incident.__table__)
            .where(Incident.id.in_(candidates), Incident.status != IncidentStatus.RESOLVED.value)
            .order_by(Incident.id)
            .with_for_update(key_share=True)
        )
        for row in rows.all():
            members = await _members(session, row.id)
            if not domain.should_auto_resolve(
                status=IncidentStatus(row.status),
                breaker_states_closed=[m.recovered for m in members],
                platform_alert_firing=await _has_platform_alert(session, row.id, firing=True),
            ):
                continue
            await _set_resolved(session, row.id, actor=SYSTEM, now=self.now)
            self._membership.clear()
            self.audit.add(
                "incident.resolved",
                actor=SYSTEM,
                incident_id=row.id,
                priority=row.priority,
                note=AUTO_RESOLVE_NOTE,
                automatic=True,
            )
            self.touched.add(row.id)
            self.events.append(
                _Event(NotificationEvent.RESOLVED, row.id, actor=SYSTEM, note=AUTO_RESOLVE_NOTE)
            )

    # -- notifications ---------------------------------------------------------------------

    async def notify(self) -> None:
        for e in self.events:
            msg = await build_message(
                self.session,
                incident_id=e.incident_id,
                event=e.event,
                previous=e.previous,
                actor=e.actor,
                note=e.note,
                config=self.config,
                now=self.now,
            )
            await outbox.enqueue(self.session, msg, enabled=self.config.enabled_channels)
        self.events.clear()


# --- queries shared by the flow, the commands and the reads ----------------------------


async def _unresolved_memberships(
    session: AsyncSession, tenants: Iterable[str], *, lock: bool
) -> dict[str, str]:
    """tenant -> its unresolved incident (a tenant is in at most one at a time)."""
    tenants = sorted(set(tenants))
    if not tenants:
        return {}
    stmt = (
        select(IncidentTenant.tenant_id, Incident.id)
        .join(Incident, Incident.id == IncidentTenant.incident_id)
        .where(
            IncidentTenant.tenant_id.in_(tenants),
            Incident.status != IncidentStatus.RESOLVED.value,
        )
        .order_by(Incident.opened_at, Incident.id)
    )
    if lock:
        stmt = stmt.with_for_update(of=Incident, key_share=True)
    rows = await session.execute(stmt)
    # Newest wins should two ever exist (they cannot under the incident lock).
    return dict(rows.tuples().all())


def _alert_keys_in(keys: Sequence[tuple[str, datetime]]) -> Any:
    return tuple_(Alert.fingerprint, Alert.starts_at).in_(list(keys))


async def _unresolved_links(
    session: AsyncSession, keys: Sequence[tuple[str, datetime]]
) -> dict[tuple[str, datetime], str]:
    """Alert instance -> unresolved incident it is linked to."""
    if not keys:
        return {}
    rows = await session.execute(
        select(IncidentAlert.fingerprint, IncidentAlert.starts_at, Incident.id)
        .join(Incident, Incident.id == IncidentAlert.incident_id)
        .where(
            tuple_(IncidentAlert.fingerprint, IncidentAlert.starts_at).in_(list(keys)),
            Incident.status != IncidentStatus.RESOLVED.value,
        )
    )
    return {(fp, s): i for fp, s, i in rows.tuples()}


async def _unresolved_platform_incidents(
    session: AsyncSession, fingerprints: Iterable[str]
) -> dict[str, str]:
    """Platform alert fingerprint -> the unresolved incident an instance of it is in."""
    fingerprints = sorted(set(fingerprints))
    if not fingerprints:
        return {}
    rows = await session.execute(
        select(IncidentAlert.fingerprint, Incident.id)
        .join(Incident, Incident.id == IncidentAlert.incident_id)
        .where(
            IncidentAlert.fingerprint.in_(fingerprints),
            Incident.status != IncidentStatus.RESOLVED.value,
        )
        .order_by(Incident.opened_at, Incident.id)
        .with_for_update(of=Incident, key_share=True)
    )
    return dict(rows.tuples().all())


async def _tiers(session: AsyncSession, tenants: Iterable[str]) -> dict[str, Tier | None]:
    tenants = sorted(set(tenants))
    if not tenants:
        return {}
    rows = await session.execute(
        select(Tenant.tenant_id, Tenant.tier).where(Tenant.tenant_id.in_(tenants))
    )
    known = {t: _tier(tier) for t, tier in rows.tuples()}
    return {t: known.get(t) for t in tenants}


async def _firing_alertnames(session: AsyncSession, tenants: Iterable[str]) -> list[str]:
    rows = await session.execute(
        select(Alert.alertname)
        .where(Alert.tenant_id.in_(sorted(set(tenants))), Alert.status == "firing")
        .distinct()
        .order_by(Alert.alertname)
    )
    return [n for (n,) in rows.tuples() if n]


@dataclass(frozen=True)
class Member:
    tenant_id: str
    cause: str
    joined_at: datetime
    tier: Tier | None
    name: str | None
    hourly_cost: float | None
    admin_email: str | None
    breaker_state: BreakerState
    alert_firing: bool

    @property
    def recovered(self) -> bool:
        """Closed (forced_closed counts). A suppressed tenant was never isolated, so its
        closed breaker says nothing: it has recovered when its isolating alert stopped."""
        if self.breaker_state not in _CLOSED:
            return False
        return not (self.cause == SUPPRESSED and self.alert_firing)


async def _members(session: AsyncSession, incident_id: str) -> list[Member]:
    rows = await session.execute(
        select(
            IncidentTenant.tenant_id,
            IncidentTenant.cause,
            IncidentTenant.joined_at,
            Tenant.tier,
            Tenant.name,
            Tenant.hourly_cost,
            Tenant.admin_email,
            Breaker.state,
            Breaker.alert_firing,
        )
        .join(Tenant, Tenant.tenant_id == IncidentTenant.tenant_id)
        .outerjoin(Breaker, Breaker.tenant_id == IncidentTenant.tenant_id)
        .where(IncidentTenant.incident_id == incident_id)
        .order_by(IncidentTenant.joined_at, IncidentTenant.tenant_id)
    )
    return [
        Member(
            tenant_id=r.tenant_id,
            cause=r.cause,
            joined_at=r.joined_at,
            tier=_tier(r.tier),
            name=r.name,
            hourly_cost=float(r.hourly_cost) if r.hourly_cost is not None else None,
            admin_email=r.admin_email,
            breaker_state=BreakerState(r.state or BreakerState.CLOSED.value),
            alert_firing=bool(r.alert_firing),
        )
        for r in rows
    ]


async def _has_platform_alert(
    session: AsyncSession, incident_id: str, *, firing: bool = False
) -> bool:
    stmt = (
        select(func.count())
        .select_from(IncidentAlert)
        .join(
            Alert,
            and_(
                Alert.fingerprint == IncidentAlert.fingerprint,
                Alert.starts_at == IncidentAlert.starts_at,
            ),
        )
        .where(IncidentAlert.incident_id == incident_id, Alert.platform)
    )
    if firing:
        stmt = stmt.where(Alert.status == "firing")
    return bool(await session.scalar(stmt))


async def _next_id(session: AsyncSession, now: datetime) -> str:
    """INC-YYYYMMDD-NNNN from the day's counter row; the upsert's row lock makes the
    number unique however many replicas open incidents at once."""
    day = now.astimezone(UTC).date()
    upsert = pg_insert(IncidentCounter).values(day=day, last=1)
    stmt = upsert.on_conflict_do_update(
        index_elements=[IncidentCounter.day], set_={"last": IncidentCounter.last + 1}
    ).returning(IncidentCounter.last)
    seq = int((await session.execute(stmt)).scalar_one())
    return domain.format_incident_id(day, seq)


def _priority(
    current: Priority | None, *, tiers: Sequence[Tier | None], platform: bool, suppressed: bool
) -> Priority:
    computed = priorities.compute_priority(tiers=tiers, platform_alert=platform)
    if suppressed:
        # The mass-isolation guard refused a trip: the failure is shared (DESIGN.md).
        computed = Priority.P0
    return priorities.escalate(current, computed)


def _tier_text(tier: Tier | None) -> str:
    return tier.value if tier is not None else "unregistered, handled as bronze"


def _priority_reason(
    priority: Priority, *, tiers: Sequence[Tier | None], platform: bool, suppressed: bool
) -> str:
    """Why the incident is at `priority`, in the words of the rule that put it there."""
    effective = [priorities.tier_or_default(t) for t in tiers]
    n = len(effective)
    tenants = f"{n} tenant{'s' if n != 1 else ''} affected"
    if priority is Priority.P0:
        if platform:
            return f"a platform alert fires ({tenants})"
        if suppressed:
            return f"the mass-isolation guard suppressed a trip ({tenants})"
        if Tier.PLATINUM in effective:
            return f"a platinum tenant is affected ({tenants})"
        return f"{tenants}, {priorities.P0_TENANT_COUNT} or more"
    if priority is Priority.P1:
        if Tier.GOLD in effective:
            return f"a gold tenant is affected ({tenants})"
        return f"{tenants}, {priorities.P1_TENANT_COUNT} or more"
    return f"{tenants}, none platinum or gold"


def _title(tenants: Mapping[str, str], alertnames: Sequence[str], platform: Sequence[str]) -> str:
    what = ", ".join(alertnames[:3]) or "probe failures"
    names = sorted(tenants)
    if platform and not names:
        return f"Platform alert {', '.join(sorted(set(platform))[:3])} firing"
    if len(names) == 1:
        (tenant,) = names
        if tenants[tenant] == SUPPRESSED:
            return f"Tenant {tenant} failing ({what}), isolation suppressed by the guard"
        title = f"Tenant {tenant} isolated: {what}"
    else:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        title = f"{len(names)} tenants failing ({shown}): {what}"
    if platform:
        title += f"; platform alert {', '.join(sorted(set(platform))[:3])} firing"
    return title


async def _set_resolved(
    session: AsyncSession, incident_id: str, *, actor: str, now: datetime
) -> None:
    await session.execute(
        update(Incident)
        .where(Incident.id == incident_id)
        .values(
            status=IncidentStatus.RESOLVED.value,
            resolved_at=now,
            resolved_by=actor,
            updated_at=func.now(),
        )
    )


async def _incident_row(session: AsyncSession, incident_id: str, *, lock: bool = False) -> Row[Any]:
    """The row, or NotFound for an unknown or malformed id (both 404)."""
    if domain.parse_incident_id(incident_id) is None:
        raise NotFound(f"no incident {incident_id[:40]!r}: identifiers look like INC-YYYYMMDD-NNNN")
    stmt = select(Incident.__table__).where(Incident.id == incident_id)
    if lock:
        stmt = stmt.with_for_update(key_share=True)
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise NotFound(f"no incident {incident_id!r}")
    return row


async def lock_incident(session: AsyncSession, incident_id: str) -> Row[Any]:
    """Lock the incident's row for a change (NotFound for unknown or malformed ids)."""
    return await _incident_row(session, incident_id, lock=True)


async def runbook_urls(session: AsyncSession, incident_id: str) -> list[str]:
    rows = await session.execute(
        select(Alert.annotations["runbook_url"].astext)
        .join(
            IncidentAlert,
            and_(
                Alert.fingerprint == IncidentAlert.fingerprint,
                Alert.starts_at == IncidentAlert.starts_at,
            ),
        )
        .where(IncidentAlert.incident_id == incident_id)
        .order_by(Alert.starts_at, Alert.fingerprint)
    )
    return list(dict.fromkeys(u for (u,) in rows.tuples() if u))


async def build_message(
    session: AsyncSession,
    *,
    incident_id: str,
    event: NotificationEvent,
    previous: Priority | None,
    actor: str | None,
    note: str | None,
    config: ServiceConfig,
    now: datetime,
) -> IncidentMessage:
    """What the channels are told about `event`, from the incident as it is now."""
    row = await _incident_row(session, incident_id)
    members = await _members(session, incident_id)
    base = (config.public_url or "").rstrip("/")
    return IncidentMessage(
        event=event,
        incident_id=row.id,
        title=row.title,
        priority=Priority(row.priority),
        previous_priority=previous,
        status=row.status,
        opened_at=row.opened_at,
        ack_due_at=row.ack_due_at,
        actor=actor,
        note=note,
        tenants=tuple(
            TenantSummary(
                tenant_id=m.tenant_id,
                tier=m.tier,
                name=m.name,
                breaker_state=m.breaker_state.value,
                admin_email=m.admin_email,
            )
            for m in members
        ),
        runbook_urls=tuple(await runbook_urls(session, incident_id)),
        incident_url=f"{base}/v1/incidents/{row.id}" if base else None,
        occurred_at=now,
    )


# --- people: acknowledge and resolve ---------------------------------------------------


async def acknowledge_incident(
    *,
    sessions: async_sessionmaker[AsyncSession],
    incident_id: str,
    actor: str,
    note: str | None,
    config: ServiceConfig,
    now: datetime,
) -> IncidentRecord:
    async def work(session: AsyncSession) -> IncidentRecord:
        row = await _incident_row(session, incident_id, lock=True)
        try:
            status = domain.acknowledge(IncidentStatus(row.status))
        except domain.IncidentError as exc:
            raise Conflict(f"cannot acknowledge {incident_id}: {exc}") from exc
        await session.execute(
            update(Incident)
            .where(Incident.id == incident_id)
            .values(
                status=status.value,
                acknowledged_at=now,
                acknowledged_by=actor,
                updated_at=func.now(),
            )
        )
        audit = AuditTrail()
        audit.add(
            "incident.acknowledged",
            actor=actor,
            incident_id=incident_id,
            priority=row.priority,
            note=note,
            ack_due_at=row.ack_due_at,
            within_sla=now <= row.ack_due_at,
        )
        await audit.flush(session)
        await _enqueue(
            session, incident_id, NotificationEvent.ACKNOWLEDGED, actor, note, config, now
        )
        return await _load_record(session, incident_id)

    return await in_transaction(sessions, work, what="incident acknowledgement")


async def resolve_incident(
    *,
    sessions: async_sessionmaker[AsyncSession],
    incident_id: str,
    actor: str,
    note: str | None,
    config: ServiceConfig,
    now: datetime,
) -> IncidentRecord:
    async def work(session: AsyncSession) -> IncidentRecord:
        row = await _incident_row(session, incident_id, lock=True)
        try:
            domain.resolve(IncidentStatus(row.status))
        except domain.IncidentError as exc:
            raise Conflict(f"cannot resolve {incident_id}: {exc}") from exc
        await _set_resolved(session, incident_id, actor=actor, now=now)
        audit = AuditTrail()
        audit.add(
            "incident.resolved",
            actor=actor,
            incident_id=incident_id,
            priority=row.priority,
            note=note,
            automatic=False,
        )
        await audit.flush(session)
        await _enqueue(session, incident_id, NotificationEvent.RESOLVED, actor, note, config, now)
        return await _load_record(session, incident_id)

    return await in_transaction(sessions, work, what="incident resolution")


async def _enqueue(
    session: AsyncSession,
    incident_id: str,
    event: NotificationEvent,
    actor: str | None,
    note: str | None,
    config: ServiceConfig,
    now: datetime,
) -> None:
    msg = await build_message(
        session,
        incident_id=incident_id,
        event=event,
        previous=None,
        actor=actor,
        note=note,
        config=config,
        now=now,
    )
    await outbox.enqueue(session, msg, enabled=config.enabled_channels)


# --- the SLA check ---------------------------------------------------------------------


async def check_sla_breaches(
    *,
    sessions: async_sessionmaker[AsyncSession],
    config: ServiceConfig,
    now: datetime,
    batch: int = 100,
) -> list[str]:
    """Flag, audit (`sla.breached`) and notify incidents still open past ack_due_at.

    SKIP LOCKED: replicas checking at once each take different incidents, and one being
    acknowledged right now is left to that transaction. Returns the incidents flagged."""

    async def work(session: AsyncSession) -> list[str]:
        rows = (
            await session.execute(
                select(Incident.__table__)
                .where(
                    Incident.status == IncidentStatus.OPEN.value,
                    Incident.sla_breached_at.is_(None),
                    Incident.ack_due_at <= now,
                )
                .order_by(Incident.ack_due_at, Incident.id)
                .limit(batch)
                .with_for_update(skip_locked=True, key_share=True)
            )
        ).all()
        if not rows:
            return []
        await session.execute(
            update(Incident)
            .where(Incident.id.in_([row.id for row in rows]))
            .values(sla_breached_at=now, updated_at=func.now())
        )
        audit = AuditTrail()
        for row in rows:
            audit.add(
                "sla.breached",
                actor=SYSTEM,
                incident_id=row.id,
                priority=row.priority,
                due=row.ack_due_at,
                overdue_seconds=round((now - row.ack_due_at).total_seconds(), 3),
            )
        await audit.flush(session)
        for row in rows:
            await _enqueue(session, row.id, NotificationEvent.SLA_BREACHED, None, None, config, now)
        return [row.id for row in rows]

    return await in_transaction(sessions, work, what="SLA check")


# --- reads -----------------------------------------------------------------------------


async def _tenant_lists(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[str]]:
    if not ids:
        return {}
    rows = await session.execute(
        select(IncidentTenant.incident_id, IncidentTenant.tenant_id)
        .where(IncidentTenant.incident_id.in_(list(ids)))
        .order_by(IncidentTenant.joined_at, IncidentTenant.tenant_id)
    )
    out: dict[str, list[str]] = {}
    for incident_id, tenant in rows.tuples():
        out.setdefault(incident_id, []).append(tenant)
    return out


async def _load_record(session: AsyncSession, incident_id: str) -> IncidentRecord:
    row = await _incident_row(session, incident_id)
    return _record(row, (await _tenant_lists(session, [incident_id])).get(incident_id, []))


async def list_incidents(
    *,
    sessions: async_sessionmaker[AsyncSession],
    status: IncidentStatus | None = None,
    priority: Priority | None = None,
    tenant_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[IncidentRecord]:
    """Newest first; `since`/`until` bound opened_at ([since, until))."""

    async def work(session: AsyncSession) -> list[IncidentRecord]:
        stmt = select(Incident.__table__).order_by(Incident.opened_at.desc(), Incident.id.desc())
        if status is not None:
            stmt = stmt.where(Incident.status == status.value)
        if priority is not None:
            stmt = stmt.where(Incident.priority == priority.value)
        if tenant_id is not None:
            stmt = stmt.where(
                Incident.id.in_(
                    select(IncidentTenant.incident_id).where(IncidentTenant.tenant_id == tenant_id)
                )
            )
        if since is not None:
            stmt = stmt.where(Incident.opened_at >= since)
        if until is not None:
            stmt = stmt.where(Incident.opened_at < until)
        rows = (await session.execute(stmt.limit(limit))).all()
        tenants = await _tenant_lists(session, [r.id for r in rows])
        return [_record(r, tenants.get(r.id, [])) for r in rows]

    return await in_transaction(sessions, work, what="incident list")


@dataclass(frozen=True)
class TimelineRow:
    id: int
    occurred_at: datetime
    actor: str
    action: str
    tenant_id: str | None
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def _timeline(session: AsyncSession, incident_id: str) -> list[TimelineRow]:
    rows = await session.execute(
        select(
            AuditLog.id,
            AuditLog.occurred_at,
            AuditLog.actor,
            AuditLog.action,
            AuditLog.tenant_id,
            AuditLog.details,
        )
        .where(AuditLog.incident_id == incident_id)
        .order_by(AuditLog.occurred_at, AuditLog.id)
    )
    return [
        TimelineRow(
            id=r.id,
            occurred_at=r.occurred_at,
            actor=r.actor,
            action=r.action,
            tenant_id=r.tenant_id,
            details=r.details,
        )
        for r in rows
    ]


async def incident_timeline(
    *, sessions: async_sessionmaker[AsyncSession], incident_id: str
) -> list[TimelineRow]:
    """The incident's audit rows, oldest first."""

    async def work(session: AsyncSession) -> list[TimelineRow]:
        await _incident_row(session, incident_id)
        return await _timeline(session, incident_id)

    return await in_transaction(sessions, work, what="incident timeline")


# --- isolation spans and cost ----------------------------------------------------------


def _at(details: Mapping[str, Any], fallback: datetime) -> datetime:
    value = details.get("at")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        if parsed.utcoffset() is not None:
            return parsed
    return fallback


def isolation_spans(
    members: Sequence[Member],
    transitions: Sequence[TimelineRow],
    *,
    resolved_at: datetime | None,
) -> list[IsolationSpan]:
    """When each member's breaker kept its traffic out during the incident.

    Read from the incident's breaker.transition rows: a move into open, half_open or
    forced_open starts a span, a move into closed or forced_closed ends it (half-open
    counts: the gateway admits only probes). A tenant already isolated when it joined
    (its first row starts from an isolated state) counts from joining. Spans still open
    end when the incident resolved, else at `now` (the domain's open span)."""
    spans: list[IsolationSpan] = []
    for m in members:
        rows = [r for r in transitions if r.tenant_id == m.tenant_id]
        start: datetime | None = None
        if rows and counts_as_isolated(BreakerState(rows[0].details.get("from", "closed"))):
            start = m.joined_at
        for r in rows:
            at = _at(r.details, r.occurred_at)
            isolated = counts_as_isolated(BreakerState(r.details.get("to", "closed")))
            if isolated and start is None:
                start = at
            elif not isolated and start is not None:
                spans.append(_span(m, start, at, resolved_at))
                start = None
        if start is not None:
            spans.append(_span(m, start, resolved_at, resolved_at))
    return spans


def _span(m: Member, start: datetime, end: datetime | None, cap: datetime | None) -> IsolationSpan:
    if cap is not None:
        start = min(start, cap)
        end = cap if end is None else min(end, cap)
    if end is not None:
        end = max(start, end)  # replica clocks a little apart
    return IsolationSpan(
        tenant_id=m.tenant_id, tier=m.tier, hourly_cost=m.hourly_cost, start=start, end=end
    )


async def platform_hourly_cost(session: AsyncSession) -> float:
    """What the whole platform down costs per hour: every tenant's hourly cost."""
    total = await session.scalar(select(func.coalesce(func.sum(Tenant.hourly_cost), 0)))
    return float(total or 0)


@dataclass(frozen=True)
class Impact:
    spans: list[IsolationSpan]
    hours: dict[str, float]
    cost: CostImpact
    platform_hourly_cost: float


async def impact(
    session: AsyncSession,
    *,
    members: Sequence[Member],
    timeline: Sequence[TimelineRow],
    resolved_at: datetime | None,
    now: datetime,
) -> Impact:
    transitions = [r for r in timeline if r.action == "breaker.transition"]
    spans = isolation_spans(members, transitions, resolved_at=resolved_at)
    platform = await platform_hourly_cost(session)
    return Impact(
        spans=spans,
        hours=domain.isolated_hours(spans, now=now),
        cost=domain.cost_impact(spans=spans, platform_hourly_cost=platform, now=now),
        platform_hourly_cost=platform,
    )


# --- one incident in full ---------------------------------------------------------------


@dataclass(frozen=True)
class IncidentAlertRecord:
    fingerprint: str
    starts_at: datetime
    ends_at: datetime | None
    status: str
    alertname: str
    tenant_id: str | None
    platform: bool
    isolating: bool
    labels: dict[str, Any]
    annotations: dict[str, Any]
    generator_url: str
    linked_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "runbook_url": self.annotations.get("runbook_url") or None}


async def incident_alerts(session: AsyncSession, incident_id: str) -> list[IncidentAlertRecord]:
    rows = await session.execute(
        select(
            Alert.fingerprint,
            Alert.starts_at,
            Alert.ends_at,
            Alert.status,
            Alert.alertname,
            Alert.tenant_id,
            Alert.platform,
            Alert.isolating,
            Alert.labels,
            Alert.annotations,
            Alert.generator_url,
            IncidentAlert.linked_at,
        )
        .join(
            IncidentAlert,
            and_(
                Alert.fingerprint == IncidentAlert.fingerprint,
                Alert.starts_at == IncidentAlert.starts_at,
            ),
        )
        .where(IncidentAlert.incident_id == incident_id)
        .order_by(Alert.starts_at, Alert.fingerprint)
    )
    return [IncidentAlertRecord(**r._mapping) for r in rows]


@dataclass(frozen=True)
class IncidentDetail:
    record: IncidentRecord
    members: list[Member]
    alerts: list[IncidentAlertRecord]
    runbook_urls: list[str]
    impact: Impact
    postmortem: dict[str, Any] | None
    now: datetime

    @property
    def first_alert_at(self) -> datetime | None:
        return min((a.starts_at for a in self.alerts), default=None)

    def to_json(self) -> dict[str, Any]:
        rec, imp, now = self.record, self.impact, self.now
        by_tenant_cost = {
            m.tenant_id: (m.hourly_cost or 0.0) * imp.hours.get(m.tenant_id, 0.0)
            for m in self.members
        }

        def seconds(start: datetime | None, end: datetime | None) -> float | None:
            return None if start is None or end is None else (end - start).total_seconds()

        return {
            **rec.to_json(now=now),
            "sla": {
                "ack_due_at": rec.ack_due_at,
                "response_seconds": (rec.ack_due_at - rec.opened_at).total_seconds(),
                "breached": rec.sla_breached(now),
                "breached_at": rec.sla_breached_at,
            },
            "tenants": [
                {
                    "tenant_id": m.tenant_id,
                    "name": m.name,
                    "tier": m.tier.value if m.tier else None,
                    "sla_tier": priorities.tier_or_default(m.tier).value,
                    "cause": m.cause,
                    "joined_at": m.joined_at,
                    "breaker_state": m.breaker_state.value,
                    "hourly_cost": m.hourly_cost,
                    "isolated_hours": imp.hours.get(m.tenant_id, 0.0),
                    "cost": by_tenant_cost[m.tenant_id],
                }
                for m in self.members
            ],
            "alerts": [a.to_json() for a in self.alerts],
            "runbook_urls": self.runbook_urls,
            "cost": {
                "contained": imp.cost.contained,
                "uncontained": imp.cost.uncontained,
                "hours": imp.cost.hours,
                "platform_hourly_cost": imp.platform_hourly_cost,
            },
            "durations": {
                "first_alert_at": self.first_alert_at,
                "time_to_detect_seconds": seconds(self.first_alert_at, rec.opened_at),
                "time_to_acknowledge_seconds": seconds(rec.opened_at, rec.acknowledged_at),
                "time_to_resolve_seconds": seconds(rec.opened_at, rec.resolved_at),
            },
            "postmortem": self.postmortem,
            "links": {
                "timeline": f"/v1/incidents/{rec.id}/timeline",
                "postmortem": f"/v1/incidents/{rec.id}/postmortem",
            },
        }


async def load_detail(
    session: AsyncSession, incident_id: str, *, now: datetime
) -> tuple[IncidentDetail, list[TimelineRow]]:
    from receiver.service import postmortems

    row = await _incident_row(session, incident_id)
    members = await _members(session, incident_id)
    record = _record(row, [m.tenant_id for m in members])
    timeline = await _timeline(session, incident_id)
    detail = IncidentDetail(
        record=record,
        members=members,
        alerts=await incident_alerts(session, incident_id),
        runbook_urls=await runbook_urls(session, incident_id),
        impact=await impact(
            session, members=members, timeline=timeline, resolved_at=row.resolved_at, now=now
        ),
        postmortem=await postmortems.stored(session, incident_id),
        now=now,
    )
    return detail, timeline


async def get_incident(
    *, sessions: async_sessionmaker[AsyncSession], incident_id: str, now: datetime
) -> IncidentDetail:
    async def work(session: AsyncSession) -> IncidentDetail:
        detail, _ = await load_detail(session, incident_id, now=now)
        return detail

    return await in_transaction(sessions, work, what="incident read")


# --- tenant health ---------------------------------------------------------------------


@dataclass(frozen=True)
class TenantHealth:
    tenant_id: str
    tenant: dict[str, Any] | None
    open_incident: IncidentRecord | None
    recent_alerts: list[dict[str, Any]]


async def tenant_health(
    *, sessions: async_sessionmaker[AsyncSession], tenant_id: str, alerts: int = 20
) -> TenantHealth:
    """The tenant's registration, its unresolved incident and its latest alerts (the
    breaker comes from the replica's in-memory view, in the handler)."""

    async def work(session: AsyncSession) -> TenantHealth:
        tenant = (
            await session.execute(
                select(Tenant.tier, Tenant.name, Tenant.hourly_cost, Tenant.admin_email).where(
                    Tenant.tenant_id == tenant_id
                )
            )
        ).one_or_none()
        member = await _unresolved_memberships(session, [tenant_id], lock=False)
        incident = await _load_record(session, member[tenant_id]) if member else None
        rows = await session.execute(
            select(
                Alert.fingerprint,
                Alert.starts_at,
                Alert.ends_at,
                Alert.status,
                Alert.alertname,
                Alert.isolating,
                Alert.annotations,
            )
            .where(Alert.tenant_id == tenant_id)
            .order_by(Alert.starts_at.desc(), Alert.fingerprint)
            .limit(alerts)
        )
        return TenantHealth(
            tenant_id=tenant_id,
            tenant=None
            if tenant is None
            else {
                "tier": tenant.tier,
                "name": tenant.name,
                "hourly_cost": float(tenant.hourly_cost)
                if tenant.hourly_cost is not None
                else None,
                "admin_email": tenant.admin_email,
            },
            open_incident=incident,
            recent_alerts=[dict(r._mapping) for r in rows],
        )

    return await in_transaction(sessions, work, what="tenant health")


__all__ = [
    "INCIDENT_LOCK",
    "IncidentDetail",
    "IncidentRecord",
    "TenantHealth",
    "TimelineRow",
    "acknowledge_incident",
    "after_breaker_changes",
    "apply_alert_transitions",
    "check_sla_breaches",
    "get_incident",
    "incident_timeline",
    "list_incidents",
    "resolve_incident",
    "tenant_health",
]
