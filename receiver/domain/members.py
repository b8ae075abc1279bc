"""The tenants of an incident: which breaker changes make a tenant join one, why it
joined, when it has recovered, and the incident's title from them.

Which tenants affect an incident: those whose breaker tripped, or whose trip the
mass-isolation guard suppressed, while it gathered tenants (DESIGN.md "Incidents").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from receiver.domain.breaker import BreakerChange, BreakerState, Suppressed, Transition
from receiver.domain.tiers import Tier

# Why a tenant joined an incident (stored in incident_tenants.cause).
TRIPPED = "tripped"
SUPPRESSED = "suppressed"

_FORCED = frozenset({BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED})
_CLOSED = frozenset({BreakerState.CLOSED, BreakerState.FORCED_CLOSED})

# Audit rows about a member tenant that belong in the incident's record.
TAGGED_ACTIONS = frozenset(
    {
        "alert.fired",
        "alert.resolved",
        "alert.reconciled",
        "breaker.transition",
        "breaker.suppressed",
        "breaker.override",
    }
)


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

    def cost(self, isolated_hours: float) -> float:
        """What `isolated_hours` of isolation cost this tenant (no configured cost: 0)."""
        return (self.hourly_cost or 0.0) * isolated_hours


def failures(changes: Iterable[BreakerChange]) -> dict[str, str]:
    """Tenants that failed in these changes, with their cause: tripped (an automatic move
    into open, not an operator's release) or suppressed by the mass-isolation guard."""
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


def closed_tenants(changes: Iterable[BreakerChange]) -> set[str]:
    """Tenants whose breaker is closed after these changes: only they can let an incident
    resolve. (A trip never can, and checking the incident of every trip would read all of
    a large incident's members on each one.)"""
    return {c.breaker.tenant_id for c in changes if c.breaker.state in _CLOSED}


def join_reason(cause: str) -> str:
    return "breaker tripped" if cause == TRIPPED else "trip suppressed by the mass-isolation guard"


def incident_title(
    tenants: Mapping[str, str], alertnames: Sequence[str], platform: Sequence[str]
) -> str:
    """The title of an incident opened for `tenants` (tenant -> cause) whose firing alerts
    are `alertnames`, and for the platform alerts named `platform`."""
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
