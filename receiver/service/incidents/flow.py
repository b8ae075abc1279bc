"""Incidents inside the transactions that change alerts and breakers: open, join,
escalate, link alerts and auto-resolve, then queue the notifications.

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

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from receiver.config import ServiceConfig
from receiver.db import incidents as rows
from receiver.db import tenants as tenant_rows
from receiver.db.audit import SYSTEM, AuditTrail
from receiver.db.incidents import AlertKey
from receiver.domain import incident as domain
from receiver.domain import members as membership
from receiver.domain import priority as priorities
from receiver.domain.alerts import AlertInstance, AlertRole
from receiver.domain.breaker import BreakerChange, BreakerChanges
from receiver.domain.incident import IncidentRecord, IncidentStatus
from receiver.domain.members import SUPPRESSED, TAGGED_ACTIONS
from receiver.domain.notification import NotificationEvent
from receiver.domain.tiers import Priority, Tier
from receiver.service.incidents import messages

AUTO_RESOLVE_NOTE = "every affected tenant's breaker is closed and no platform alert fires"


async def apply_alert_transitions(
    session: AsyncSession,
    *,
    fired: Sequence[AlertInstance],
    resolved: Sequence[AlertInstance],
    breaker_changes: BreakerChanges,
    config: ServiceConfig,
    now: datetime,
    audit: AuditTrail,
    deliveries: Sequence[Collection[str]] = (),
) -> list[str]:
    """Incident effects of one webhook delivery, or of several that share no tenant
    (group commit); returns the incidents touched.

    Trips and suppressed trips open or join incidents; platform alerts open, join or
    escalate to P0; other tenant alerts are linked to their tenant's open incident;
    recoveries (a breaker closing, a platform alert resolving) may resolve incidents.
    `deliveries`: each delivery's tenants, in arrival order, when there are several: the
    failures of each open an incident of their own where one delivery after the other
    would have (a correlation window of zero)."""
    flow = _Flow(session, config=config, now=now, audit=audit)
    failures = membership.failures(breaker_changes.changed)
    platform_fired = [a for a in fired if a.role is AlertRole.PLATFORM]
    await flow.open_or_join(failures, platform_fired, deliveries=deliveries)
    await flow.link_tenant_alerts(
        [a for a in fired if a.tenant_id and a.role is not AlertRole.PLATFORM]
    )
    await flow.tag_audit_rows()
    recovering = membership.closed_tenants(breaker_changes.changed)
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
    await flow.open_or_join(membership.failures(changes), [])
    await flow.tag_audit_rows()
    await flow.auto_resolve(tenants=membership.closed_tenants(changes), platform_alerts=[])
    await flow.notify()
    return sorted(flow.touched)


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
    # (incident, alert) links made in this flow: a tripping alert is linked when its
    # tenant joins, and need not be offered again as a member's alert.
    _linked: set[tuple[str, AlertKey]] = field(default_factory=set)

    async def memberships(self, tenants: Iterable[str]) -> dict[str, str]:
        """The unresolved incident of each tenant that has one (unlocked read)."""
        wanted = set(tenants)
        missing = wanted - self._membership.keys()
        if missing:
            found = await rows.unresolved_memberships(self.session, missing, lock=False)
            for tenant in missing:
                self._membership[tenant] = found.get(tenant)
        return {t: i for t in wanted if (i := self._membership[t]) is not None}

    # -- open / join / escalate ----------------------------------------------------------

    async def open_or_join(
        self,
        failures: Mapping[str, str],
        platform_fired: Sequence[AlertInstance],
        *,
        deliveries: Sequence[Collection[str]] = (),
    ) -> None:
        if not failures and not platform_fired:
            return
        session = self.session
        await rows.take_open_lock(session)

        # A tenant already part of an unresolved incident stays with it: a re-trip is
        # more of the same failure, not a new one.
        members = await rows.unresolved_memberships(session, failures, lock=True)
        for tenant in failures:
            self._membership[tenant] = members.get(tenant)
        newcomers = {t: c for t, c in sorted(failures.items()) if t not in members}
        for tenant in sorted(set(failures) - set(newcomers)):
            await self._link_firing(members[tenant], [tenant])
            self.touched.add(members[tenant])

        # A platform alert firing again (a new instance of the same labels) while an
        # incident it belongs to is unresolved stays with that incident.
        linked = await rows.lock_unresolved_platform_links(
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
        if target is not None:
            await self._join(target, newcomers, new_platform)
        elif len(deliveries) > 1 and not self._joins_what_it_opens():
            # One delivery after the other, each would have opened its own.
            for tenants in deliveries:
                if own := {t: c for t, c in newcomers.items() if t in tenants}:
                    await self._open(own, [])
        else:
            await self._open(newcomers, new_platform)

    def _joins_what_it_opens(self) -> bool:
        """Whether an incident opened now would take the next failure now (a correlation
        window above zero): then deliveries written together share the one they open."""
        return domain.joins_open_incident(
            incident_opened_at=self.now,
            incident_status=IncidentStatus.OPEN,
            now=self.now,
            window=self.config.correlation_window,
        )

    async def _correlated_incident(self) -> IncidentRecord | None:
        """The newest unresolved incident opened less than the correlation window ago."""
        window = self.config.correlation_window
        for found in await rows.lock_opened_since(self.session, self.now - window):
            if domain.joins_open_incident(
                incident_opened_at=found.opened_at,
                incident_status=found.status,
                now=self.now,
                window=window,
            ):
                return found
        return None

    async def _open(self, newcomers: Mapping[str, str], platform: Sequence[AlertInstance]) -> None:
        session, now = self.session, self.now
        tiers = await tenant_rows.tiers(session, newcomers)
        known = list(tiers.values())
        platform_fires, suppressed = bool(platform), SUPPRESSED in newcomers.values()
        priority = priorities.incident_priority(
            None, tiers=known, platform=platform_fires, suppressed=suppressed
        )
        day = now.astimezone(UTC).date()
        incident_id = domain.format_incident_id(day, await rows.next_seq(session, day))
        alertnames = await rows.firing_alertnames(session, newcomers)
        title = membership.incident_title(newcomers, alertnames, [a.alertname for a in platform])
        due = priorities.ack_due_at(opened_at=now, tiers=known, priority=priority)
        await rows.insert_incident(
            session,
            incident_id=incident_id,
            title=title,
            priority=priority,
            opened_at=now,
            ack_due_at=due,
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
            reason=priorities.priority_reason(
                priority, tiers=known, platform=platform_fires, suppressed=suppressed
            ),
        )
        for details in await self._add_members(incident_id, newcomers, tiers, priority):
            details["ack_due_at"] = due
        await self._link(incident_id, [a.key for a in platform], reason=None)
        self.touched.add(incident_id)
        self.events.append(_Event(NotificationEvent.OPENED, incident_id))

    async def _join(
        self,
        found: IncidentRecord,
        newcomers: Mapping[str, str],
        platform: Sequence[AlertInstance],
    ) -> None:
        tiers = await tenant_rows.tiers(self.session, newcomers)
        joined = await self._add_members(found.id, newcomers, tiers, found.priority)
        if platform:
            await self._link(found.id, [a.key for a in platform], reason="platform alert fired")
        self.touched.add(found.id)
        what = [f"tenant {t} ({priorities.tier_text(tiers[t])}, {c})" for t, c in newcomers.items()]
        what += [f"platform alert {a.alertname or a.fingerprint}" for a in platform]
        priority, due = await self._reprioritise(found, trigger=" and ".join(what) + " joined")
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
        await rows.add_members(self.session, incident_id, dict(newcomers), joined_at=self.now)
        joined = []
        for tenant, cause in newcomers.items():
            self._membership[tenant] = incident_id
            self.audit.add(
                "incident.joined",
                actor=SYSTEM,
                tenant_id=tenant,
                incident_id=incident_id,
                cause=cause,
                tier=priorities.tier_text(tiers[tenant]),
                priority=priority.value,
                reason=membership.join_reason(cause),
            )
            joined.append(self.audit.rows[-1]["details"])
        await self._link_firing(incident_id, list(newcomers))
        return joined

    async def _reprioritise(
        self, found: IncidentRecord, *, trigger: str
    ) -> tuple[Priority, datetime]:
        """Escalate (never de-escalate) from all members and links; tighten ack_due_at.
        Returns the priority and due time now."""
        session, current = self.session, found.priority
        if current is Priority.P0 and found.ack_due_at <= found.opened_at + priorities.P0_SLA:
            # Already as urgent and as tight as an incident gets: nothing a join can change,
            # and a large incident's members need not be read again on every join.
            return current, found.ack_due_at
        members = await rows.members(session, found.id)
        tiers = [m.tier for m in members]
        platform = await rows.has_platform_alert(session, found.id)
        suppressed = any(m.cause == SUPPRESSED for m in members)
        new = priorities.incident_priority(
            current, tiers=tiers, platform=platform, suppressed=suppressed
        )
        due = min(
            found.ack_due_at,
            priorities.ack_due_at(opened_at=found.opened_at, tiers=tiers, priority=new),
        )
        if new is current and due == found.ack_due_at:
            return new, due
        await rows.set_priority(session, found.id, priority=new, ack_due_at=due)
        if new is not current:
            self.audit.add(
                "incident.escalated",
                actor=SYSTEM,
                incident_id=found.id,
                priority=new.value,
                ack_due_at=due,
                tenants=len(members),
                reason=f"{trigger}: "
                + priorities.priority_reason(
                    new, tiers=tiers, platform=platform, suppressed=suppressed
                ),
                **{"from": current.value, "to": new.value},
            )
            self.events.append(_Event(NotificationEvent.ESCALATED, found.id, previous=current))
        return new, due

    # -- alerts ----------------------------------------------------------------------------

    async def _link_firing(self, incident_id: str, tenants: Sequence[str]) -> None:
        """Link the tenants' firing alerts (the ones that made them fail) to the incident."""
        keys = await rows.firing_alert_keys(self.session, tenants)
        await self._link(incident_id, keys, reason=None)

    async def _link(
        self, incident_id: str, keys: Sequence[AlertKey], *, reason: str | None
    ) -> None:
        """Link alert instances; with a `reason`, each new link is audited on its own."""
        keys = [k for k in keys if (incident_id, k) not in self._linked]
        self._linked.update((incident_id, k) for k in keys)
        new = await rows.link_alerts(self.session, incident_id, keys, linked_at=self.now)
        if reason is None or not new:
            return
        for fp, starts_at, alertname, tenant in await rows.alert_names(self.session, new):
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
        members = await self.memberships({a.tenant_id for a in alerts if a.tenant_id})
        by_incident: dict[str, list[AlertKey]] = {}
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
            if r["tenant_id"] and r["incident_id"] is None and r["action"] in TAGGED_ACTIONS
        }
        if not tenants:
            return
        members = await self.memberships(tenants)
        for row in self.audit.rows:
            if row["incident_id"] is None and row["action"] in TAGGED_ACTIONS:
                row["incident_id"] = members.get(row["tenant_id"])

    # -- resolve ---------------------------------------------------------------------------

    async def auto_resolve(
        self, *, tenants: Iterable[str], platform_alerts: Sequence[AlertKey]
    ) -> None:
        """Resolve (actor `system`) the incidents of these tenants / platform alerts whose
        every affected tenant has recovered while no platform alert of theirs fires."""
        session = self.session
        memberships = await rows.unresolved_memberships(session, set(tenants), lock=False)
        candidates = set(memberships.values())
        candidates |= set((await rows.unresolved_links(session, platform_alerts)).values())
        if not candidates:
            return
        # Lock first, then read the members: a tenant joining concurrently is then seen.
        for found in await rows.lock_unresolved(session, candidates):
            members = await rows.members(session, found.id)
            if not domain.should_auto_resolve(
                status=found.status,
                breaker_states_closed=[m.recovered for m in members],
                platform_alert_firing=await rows.has_platform_alert(session, found.id, firing=True),
            ):
                continue
            await rows.set_status(
                session, found.id, status=IncidentStatus.RESOLVED, actor=SYSTEM, at=self.now
            )
            self._membership.clear()
            self.audit.add(
                "incident.resolved",
                actor=SYSTEM,
                incident_id=found.id,
                priority=found.priority.value,
                note=AUTO_RESOLVE_NOTE,
                automatic=True,
            )
            self.touched.add(found.id)
            self.events.append(
                _Event(NotificationEvent.RESOLVED, found.id, actor=SYSTEM, note=AUTO_RESOLVE_NOTE)
            )

    # -- notifications ---------------------------------------------------------------------

    async def notify(self) -> None:
        for e in self.events:
            await messages.notify(
                self.session,
                e.incident_id,
                e.event,
                config=self.config,
                now=self.now,
                previous=e.previous,
                actor=e.actor,
                note=e.note,
            )
        self.events.clear()
