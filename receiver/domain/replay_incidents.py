"""Incidents in a what-if replay: open, join, escalate and auto-resolve as
receiver/service/incidents/flow.py does inside each transaction, on plain values.

Pure. The live flow reads rows (memberships, the newest incident of the correlation
window, members' breakers and tiers, linked platform alerts); here the same questions are
asked of the run's `World`. Notifications, titles, SLA due times and alert links that
change no figure are left out; people acknowledging or resolving incidents are not
replayed (see README "What-if replay").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from receiver.domain import incident as rules
from receiver.domain import members as membership
from receiver.domain import priority as priorities
from receiver.domain.breaker import Breaker, BreakerChange
from receiver.domain.incident import IncidentStatus
from receiver.domain.members import SUPPRESSED, Member
from receiver.domain.replay_figures import IncidentOutcome
from receiver.domain.tiers import Priority, Tier

AlertKey = tuple[str, datetime]


class World(Protocol):
    """What the incident rules read of a run's state."""

    def breaker(self, tenant_id: str) -> Breaker: ...

    def tier(self, tenant_id: str) -> Tier | None: ...

    def platform_firing(self, key: AlertKey) -> bool: ...

    def firing_platform_of(self, tenant_id: str) -> list[AlertKey]:
        """Firing platform alerts that carry this tenant's label (the live flow links a
        member's firing alerts, whatever their role)."""
        ...


@dataclass
class SimIncident:
    seq: int
    opened_at: datetime
    priority: Priority
    members: dict[str, str] = field(default_factory=dict)  # tenant -> cause, joining order
    platform: set[AlertKey] = field(default_factory=set)  # linked platform alerts
    resolved_at: datetime | None = None

    @property
    def status(self) -> IncidentStatus:
        return IncidentStatus.RESOLVED if self.resolved_at else IncidentStatus.OPEN

    def outcome(self) -> IncidentOutcome:
        return IncidentOutcome(self.opened_at, self.priority, tuple(self.members))


@dataclass(frozen=True)
class PlatformAlert:
    key: AlertKey

    @property
    def fingerprint(self) -> str:
        return self.key[0]


class IncidentBook:
    """Every incident of one run."""

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self.incidents: list[SimIncident] = []
        self._member_of: dict[str, SimIncident] = {}  # tenant -> its unresolved incident

    def outcomes(self) -> list[IncidentOutcome]:
        return [i.outcome() for i in self.incidents]

    def transaction(
        self,
        world: World,
        *,
        changes: Sequence[BreakerChange],
        now: datetime,
        platform_fired: Sequence[AlertKey] = (),
        platform_resolved: Sequence[AlertKey] = (),
        resolved_tenants: Iterable[str] = (),
    ) -> None:
        """The incident side of one transaction (a delivery, outcomes, an override, a
        sweep), after its breaker changes were saved."""
        failures = membership.failures(changes)
        self._open_or_join(world, failures, [PlatformAlert(k) for k in platform_fired], now)
        recovering = membership.closed_tenants(changes) | set(resolved_tenants)
        self._auto_resolve(world, recovering, platform_resolved, now)

    # -- open / join / escalate --------------------------------------------------------

    def _unresolved(self) -> list[SimIncident]:
        return [i for i in self.incidents if i.resolved_at is None]

    def _open_or_join(
        self,
        world: World,
        failures: Mapping[str, str],
        platform: Sequence[PlatformAlert],
        now: datetime,
    ) -> None:
        if not failures and not platform:
            return
        for tenant in sorted(set(failures) & self._member_of.keys()):
            self._link_firing(world, self._member_of[tenant], [tenant])
        newcomers = {t: c for t, c in sorted(failures.items()) if t not in self._member_of}
        linked: dict[str, SimIncident] = {}
        for inc in sorted(self._unresolved(), key=lambda i: (i.opened_at, i.seq)):
            for fp, _ in inc.platform:
                linked[fp] = inc  # newest wins, as dict(rows) does in the live query
        new_platform = [a for a in platform if a.fingerprint not in linked]
        for a in platform:
            if a.fingerprint in linked:
                linked[a.fingerprint].platform.add(a.key)
        if not newcomers and not new_platform:
            return
        target = self._correlated(now)
        if target is None:
            self._open(world, newcomers, new_platform, now)
        else:
            self._join(world, target, newcomers, new_platform)

    def _correlated(self, now: datetime) -> SimIncident | None:
        """The newest unresolved incident opened less than the correlation window ago."""
        candidates = [i for i in self._unresolved() if i.opened_at > now - self.window]
        for inc in sorted(candidates, key=lambda i: (i.opened_at, i.seq), reverse=True):
            if rules.joins_open_incident(
                incident_opened_at=inc.opened_at,
                incident_status=inc.status,
                now=now,
                window=self.window,
            ):
                return inc
        return None

    def _open(
        self,
        world: World,
        newcomers: Mapping[str, str],
        platform: Sequence[PlatformAlert],
        now: datetime,
    ) -> None:
        priority = priorities.incident_priority(
            None,
            tiers=[world.tier(t) for t in newcomers],
            platform=bool(platform),
            suppressed=SUPPRESSED in newcomers.values(),
        )
        inc = SimIncident(seq=len(self.incidents) + 1, opened_at=now, priority=priority)
        self.incidents.append(inc)
        self._add_members(world, inc, newcomers)
        inc.platform.update(a.key for a in platform)

    def _join(
        self,
        world: World,
        inc: SimIncident,
        newcomers: Mapping[str, str],
        platform: Sequence[PlatformAlert],
    ) -> None:
        self._add_members(world, inc, newcomers)
        inc.platform.update(a.key for a in platform)
        # Escalates from all members and links, never de-escalates.
        inc.priority = priorities.incident_priority(
            inc.priority,
            tiers=[world.tier(t) for t in inc.members],
            platform=bool(inc.platform),
            suppressed=SUPPRESSED in inc.members.values(),
        )

    def _add_members(self, world: World, inc: SimIncident, newcomers: Mapping[str, str]) -> None:
        for tenant, cause in newcomers.items():
            inc.members[tenant] = cause
            self._member_of[tenant] = inc
        self._link_firing(world, inc, list(newcomers))

    def _link_firing(self, world: World, inc: SimIncident, tenants: Sequence[str]) -> None:
        for tenant in tenants:
            inc.platform.update(world.firing_platform_of(tenant))

    # -- resolve -------------------------------------------------------------------------

    def _auto_resolve(
        self,
        world: World,
        tenants: Iterable[str],
        platform_resolved: Sequence[AlertKey],
        now: datetime,
    ) -> None:
        candidates = {id(i): i for t in tenants if (i := self._member_of.get(t)) is not None}
        keys = set(platform_resolved)
        for inc in self._unresolved():
            if inc.platform & keys:
                candidates[id(inc)] = inc
        for inc in sorted(candidates.values(), key=lambda i: i.seq):
            closed = [
                _recovered(world, t, cause, inc.opened_at) for t, cause in inc.members.items()
            ]
            firing = any(world.platform_firing(k) for k in inc.platform)
            if rules.should_auto_resolve(
                status=inc.status, breaker_states_closed=closed, platform_alert_firing=firing
            ):
                inc.resolved_at = now
                for tenant in inc.members:
                    if self._member_of.get(tenant) is inc:
                        del self._member_of[tenant]


def _recovered(world: World, tenant: str, cause: str, joined_at: datetime) -> bool:
    """Member.recovered, the rule the live flow applies to each member's stored breaker."""
    b = world.breaker(tenant)
    member = Member(
        tenant_id=tenant,
        cause=cause,
        joined_at=joined_at,
        tier=world.tier(tenant),
        name=None,
        hourly_cost=None,
        admin_email=None,
        breaker_state=b.state,
        alert_firing=b.alert_firing,
    )
    return member.recovered
