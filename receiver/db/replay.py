"""The what-if replay's reads: the recorded inputs, as the receiver saw them, turned into
the domain's `History` (receiver/domain/replay.py). SELECT only, in one read-only snapshot.

Where each input comes from (the audit log is the record of what the receiver decided on,
each row with the receiver's own clock in `details.at`; older rows without it fall back
to `occurred_at`, the database's clock):

- alert instances that changed: `alert.fired`, `alert.resolved` (superseded ones
  included) and `alert.reconciled` rows, grouped by delivery (one transaction), with the
  instance's role from `alerts` (isolating, platform); `alert.duplicate` rows only make
  their tenant known, as the delivery did;
- operator overrides: `breaker.override`;
- tenant registrations and tiers: `tenant.configured`, and `tenants` for tenants that no
  row names;
- probe outcomes: `probe_outcomes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tenants import parse_tier
from receiver.domain.alerts import AlertRole
from receiver.domain.breaker import OverrideAction
from receiver.domain.replay import (
    AlertChange,
    Delivery,
    History,
    Input,
    OperatorOverride,
    ProbeReport,
    TenantConfigured,
)
from receiver.domain.tiers import Tier

ALERT_ACTIONS = ("alert.fired", "alert.resolved", "alert.reconciled", "alert.duplicate")
ACTIONS = (*ALERT_ACTIONS, "breaker.override", "tenant.configured")
# occurred_at is the database's clock, `at` the receiver's: rows are read a little past
# `until` and sorted out by `at`.
CLOCK_SLACK = timedelta(hours=1)

_AUDIT = text(
    """
    SELECT l.id, l.delivery_id, l.action, l.actor, l.tenant_id, l.occurred_at, l.details,
           a.isolating, a.platform
    FROM audit_log AS l
    LEFT JOIN alerts AS a
      ON l.action LIKE 'alert.%'
     AND a.fingerprint = l.details->>'fingerprint'
     AND a.starts_at = CAST(l.details->>'startsAt' AS timestamptz)
    WHERE l.action = ANY(CAST(:actions AS text[])) AND l.occurred_at <= :bound
    ORDER BY l.id
    """
)
_OUTCOMES = text(
    """
    SELECT id, tenant_id, received_at, success, failure FROM probe_outcomes
    WHERE received_at <= :until ORDER BY id
    """
)
_TENANTS = text("SELECT tenant_id, tier FROM tenants WHERE created_at <= :bound")


async def begin_snapshot(session: AsyncSession) -> None:
    """The transaction's first statement: one consistent, read-only view of the record."""
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


async def load_history(session: AsyncSession, *, until: datetime) -> History:
    bound = until + CLOCK_SLACK
    audit = (await session.execute(_AUDIT, {"actions": list(ACTIONS), "bound": bound})).all()
    outcomes = (await session.execute(_OUTCOMES, {"until": until})).all()
    tenants = (await session.execute(_TENANTS, {"bound": bound})).all()
    inputs: list[Input] = [
        ProbeReport(at=r.received_at, seq=r.id, tenant_id=r.tenant_id, success=r.success,
                    failure=r.failure)
        for r in outcomes
    ]  # fmt: skip
    inputs += _deliveries([r for r in audit if r.action in ALERT_ACTIONS])
    for r in audit:
        if r.action == "breaker.override" and r.tenant_id is not None:
            override = _override(r)
            if override is not None:
                inputs.append(override)
        elif r.action == "tenant.configured" and r.tenant_id is not None:
            inputs.append(
                TenantConfigured(
                    at=_at(r.details, r.occurred_at),
                    seq=r.id,
                    tenant_id=r.tenant_id,
                    tier=_tier(r.details.get("tier")),
                )
            )
    inputs = [i for i in inputs if i.at <= until]
    named = {getattr(i, "tenant_id", None) for i in inputs}
    for i in inputs:
        if isinstance(i, Delivery):
            named |= i.tenants
    unnamed = {r.tenant_id: parse_tier(r.tier) for r in tenants if r.tenant_id not in named}
    return History(inputs=tuple(inputs), known=frozenset(unnamed), tiers=unnamed)


# --- rows -> inputs ------------------------------------------------------------------------


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


def _tier(value: object) -> Tier | None:
    try:
        return Tier(str(value)) if value else None
    except ValueError:
        return None


def _role(row: Any) -> AlertRole:
    if row.platform:
        return AlertRole.PLATFORM
    if row.isolating:
        return AlertRole.ISOLATING
    return AlertRole.TENANT if row.tenant_id else AlertRole.OTHER


def _change(row: Any) -> AlertChange | None:
    """The instance change an audit row records; None for a copy that changed nothing."""
    details = row.details
    if row.action == "alert.duplicate":
        return None
    if row.action == "alert.reconciled":
        firing = details.get("to") == "firing"
    else:
        firing = row.action == "alert.fired"
    try:
        starts_at = datetime.fromisoformat(str(details["startsAt"]))
    except (KeyError, ValueError):
        return None
    return AlertChange(
        fingerprint=str(details.get("fingerprint", "")),
        starts_at=starts_at,
        tenant_id=row.tenant_id,
        role=_role(row),
        firing=firing,
    )


@dataclass
class _Group:
    at: datetime
    seq: int
    changes: list[AlertChange]
    tenants: set[str]


def _deliveries(rows: Sequence[Any]) -> list[Delivery]:
    """One Delivery per transaction: a webhook's rows share its delivery_id; rows written
    outside a webhook (reconciliation) share their moment and actor."""
    groups: dict[object, _Group] = {}
    for r in rows:
        at = _at(r.details, r.occurred_at)
        key: object = r.delivery_id if r.delivery_id is not None else (at, r.actor)
        group = groups.setdefault(key, _Group(at=at, seq=r.id, changes=[], tenants=set()))
        if r.tenant_id:
            group.tenants.add(r.tenant_id)
        change = _change(r)
        if change is not None:
            group.changes.append(change)
    return [
        Delivery(at=g.at, seq=g.seq, changes=tuple(g.changes), tenants=frozenset(g.tenants))
        for g in groups.values()
    ]


def _override(row: Any) -> OperatorOverride | None:
    try:
        action = OverrideAction(row.details.get("action"))
    except ValueError:
        return None
    return OperatorOverride(
        at=_at(row.details, row.occurred_at),
        seq=row.id,
        tenant_id=row.tenant_id,
        action=action,
        reason=str(row.details.get("reason") or "replayed override"),
    )
