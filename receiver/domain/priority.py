"""Incident priority and response SLA, from the affected tenants' tiers and their number.

The rules are the contract in DESIGN.md ("Incidents"): P0 if any affected tenant is
platinum, ten or more tenants are affected, or a platform alert fires; P1 if any is gold or
five to nine tenants are affected; P2 otherwise. The SLA is the strictest affected tier's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from receiver.domain.tiers import Priority, Tier

SLA: dict[Tier, timedelta] = {
    Tier.PLATINUM: timedelta(minutes=15),
    Tier.GOLD: timedelta(minutes=60),
    Tier.SILVER: timedelta(hours=4),
    Tier.BRONZE: timedelta(hours=8),
}

# Tenant counts at which a failure stops looking like one tenant's problem.
P0_TENANT_COUNT = 10
P1_TENANT_COUNT = 5

# A P0 pages people whatever the tiers involved, so it gets the platinum response time.
P0_SLA = SLA[Tier.PLATINUM]

DEFAULT_TIER = Tier.BRONZE


def tier_or_default(tier: Tier | str | None) -> Tier:
    """The tenant's tier, or bronze for a tenant nobody has configured (or a bad value).

    Alerts can name tenants the receiver has never been told about; they still need a
    priority and an SLA, and the contract treats them as bronze.
    """
    if isinstance(tier, Tier):
        return tier
    if tier is None:
        return DEFAULT_TIER
    try:
        return Tier(tier.strip().lower())
    except ValueError:
        return DEFAULT_TIER


def compute_priority(*, tiers: Sequence[Tier | None], platform_alert: bool) -> Priority:
    """Priority of an incident from its affected tenants' tiers (one entry per tenant).

    The caller passes one entry per distinct tenant: the count is part of the rule.
    """
    resolved = [tier_or_default(t) for t in tiers]
    count = len(resolved)
    if platform_alert or count >= P0_TENANT_COUNT or Tier.PLATINUM in resolved:
        return Priority.P0
    if count >= P1_TENANT_COUNT or Tier.GOLD in resolved:
        return Priority.P1
    return Priority.P2


def escalate(current: Priority | None, computed: Priority) -> Priority:
    """The more urgent of the incident's current priority and the newly computed one.

    Never de-escalates: people have already been paged at the current level, and a
    tenant recovering does not make the incident less serious (resolving it does).
    """
    if current is None or computed.more_urgent_than(current):
        return computed
    return current


def response_sla(*, tiers: Sequence[Tier | None], priority: Priority) -> timedelta:
    """Time allowed before someone must acknowledge the incident.

    `priority` is the incident's (possibly escalated) priority, so a P0 reached by count,
    by a platform alert or by the mass-isolation guard gets the P0 response time even if
    every affected tenant is bronze.
    """
    if not tiers:
        # Platform-only incident: no tenant tier to go by, and a platform alert is P0.
        return P0_SLA
    strictest = min(SLA[tier_or_default(t)] for t in tiers)
    if priority is Priority.P0:
        return min(strictest, P0_SLA)
    return strictest


def ack_due_at(
    *, opened_at: datetime, tiers: Sequence[Tier | None], priority: Priority
) -> datetime:
    """When the incident must be acknowledged by (`opened_at` must be timezone-aware)."""
    if opened_at.tzinfo is None or opened_at.utcoffset() is None:
        # A naive time would be silently read as local time by the database.
        raise ValueError("opened_at must be timezone-aware")
    return opened_at + response_sla(tiers=tiers, priority=priority)


def incident_priority(
    current: Priority | None, *, tiers: Sequence[Tier | None], platform: bool, suppressed: bool
) -> Priority:
    """The incident's priority now: computed from its tenants and links, P0 when the
    mass-isolation guard suppressed a trip (the failure is shared, DESIGN.md), and never
    below `current`."""
    computed = compute_priority(tiers=tiers, platform_alert=platform)
    if suppressed:
        computed = Priority.P0
    return escalate(current, computed)


def tier_text(tier: Tier | None) -> str:
    """A tenant's tier in audit rows and reasons."""
    return tier.value if tier is not None else "unregistered, handled as bronze"


def priority_reason(
    priority: Priority, *, tiers: Sequence[Tier | None], platform: bool, suppressed: bool
) -> str:
    """Why the incident is at `priority`, in the words of the rule that put it there."""
    effective = [tier_or_default(t) for t in tiers]
    n = len(effective)
    tenants = f"{n} tenant{'s' if n != 1 else ''} affected"
    if priority is Priority.P0:
        if platform:
            return f"a platform alert fires ({tenants})"
        if suppressed:
            return f"the mass-isolation guard suppressed a trip ({tenants})"
        if Tier.PLATINUM in effective:
            return f"a platinum tenant is affected ({tenants})"
        return f"{tenants}, {P0_TENANT_COUNT} or more"
    if priority is Priority.P1:
        if Tier.GOLD in effective:
            return f"a gold tenant is affected ({tenants})"
        return f"{tenants}, {P1_TENANT_COUNT} or more"
    return f"{tenants}, none platinum or gold"
