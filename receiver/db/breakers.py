"""Breaker rows: every query on them, the NOTIFY channel every replica listens on, and the
codec between stored rows, NOTIFY payloads and domain values.

A breaker row is locked (SELECT ... FOR UPDATE) before it is changed, so two replicas
handling two copies of one alert make exactly one transition; every change is announced
with NOTIFY so that every replica's in-memory view follows on commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Text, all_, any_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db import json
from receiver.db.tables import Alert, Tenant
from receiver.db.tables import Breaker as BreakerRow
from receiver.domain.breaker import Breaker, BreakerState, counts_as_isolated

NOTIFY_CHANNEL = "receiver_breakers"
COLUMNS = (
    "tenant_id",
    "state",
    "opened_at",
    "trips",
    "streak",
    "half_open_at",
    "probe_successes",
    "probe_failures",
    "alert_firing",
    "resolved_at",
    "changed_at",
)
# Trips are decided one at a time across the whole platform (an advisory transaction
# lock), or two replicas could each see room under the mass-isolation guard and together
# exceed it.
GUARD_LOCK = 7262022
_BREAKER_COLUMNS = [BreakerRow.__table__.c[name] for name in COLUMNS]
_ISOLATED_STATES = [s.value for s in BreakerState if counts_as_isolated(s)]


@dataclass(frozen=True)
class Versioned:
    """A breaker row as stored, with its version: what replicas' views hold."""

    version: int
    breaker: Breaker


# --- codec ---------------------------------------------------------------------------------


def breaker_from_row(row: Mapping[Any, Any]) -> Breaker:
    values = {name: row[name] for name in COLUMNS}
    values["state"] = BreakerState(values["state"])
    return Breaker(**values)


def _breaker_from_values(values: Sequence[Any]) -> Breaker:
    """A row of _BREAKER_COLUMNS (cheaper than a mapping: lock_breakers reads thousands)."""
    fields = dict(zip(COLUMNS, values, strict=True))
    fields["state"] = BreakerState(fields["state"])
    return Breaker(**fields)


def breaker_to_json(b: Breaker) -> dict[str, Any]:
    return {name: getattr(b, name) for name in COLUMNS}


def notification_payload(v: Versioned) -> str:
    return json.dumps({"version": v.version, **breaker_to_json(v.breaker)})


def versioned_from_notification(payload: str | bytes) -> Versioned:
    data = json.loads(payload)
    values = {name: data.get(name) for name in COLUMNS}
    for name in ("opened_at", "half_open_at", "resolved_at", "changed_at"):
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    values["state"] = BreakerState(values["state"])
    return Versioned(version=int(data["version"]), breaker=Breaker(**values))


# --- the guard lock ------------------------------------------------------------------------


async def lock_guard(session: AsyncSession) -> None:
    """Wait for the guard lock; held until the transaction ends."""
    await session.execute(select(func.pg_advisory_xact_lock(GUARD_LOCK)))


async def try_lock_guard(session: AsyncSession) -> bool:
    """Take the guard lock if it is free; False (without waiting) when it is not."""
    return bool(await session.scalar(select(func.pg_try_advisory_xact_lock(GUARD_LOCK))))


# --- reads and writes inside a transaction -------------------------------------------------


# Tenant lists travel as one array parameter, whatever their length: an IN list or a
# multi-row VALUES of 10,000 tenants costs seconds of SQLAlchemy compilation and psycopg
# query conversion per delivery, each statement built anew (bench/: 10,000-alert delivery).
_CREATE_MISSING = text(
    """
    INSERT INTO breakers (tenant_id) SELECT unnest(CAST(:tenants AS text[]))
    ON CONFLICT (tenant_id) DO NOTHING
    """
)


def _tenants(name: str = "tenants") -> Any:
    return bindparam(name, type_=ARRAY(Text))


async def lock_breakers(session: AsyncSession, tenants: Sequence[str]) -> dict[str, Breaker]:
    """Create missing rows and lock all of them, in tenant order (no deadlocks)."""
    ordered = sorted(set(tenants))
    await session.execute(_CREATE_MISSING, {"tenants": ordered})
    rows = await session.execute(
        select(*_BREAKER_COLUMNS)
        .where(BreakerRow.tenant_id == any_(_tenants()))
        .order_by(BreakerRow.tenant_id)
        .with_for_update(),
        {"tenants": ordered},
    )
    return {row[0]: _breaker_from_values(row) for row in rows.tuples()}


async def lock_due(session: AsyncSession, *, now: datetime, limit: int) -> list[Breaker]:
    """Rows whose next check is due, oldest first, locked. SKIP LOCKED lets several
    replicas sweep at once without waiting on each other or taking one row twice."""
    rows = await session.execute(
        select(BreakerRow.__table__)
        .where(BreakerRow.next_check_at <= now)
        # tenant_id breaks ties: which of two suppressed trips retried at one moment goes
        # first is then the same in every sweep (and in a what-if replay).
        .order_by(BreakerRow.next_check_at, BreakerRow.tenant_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [breaker_from_row(row) for row in rows.mappings()]


async def guard_counts(session: AsyncSession, exclude: Sequence[str]) -> tuple[int, int]:
    """(tenants isolated other than `exclude`, known tenants)."""
    isolated = await session.scalar(
        select(func.count())
        .select_from(BreakerRow)
        .where(
            BreakerRow.state.in_(_ISOLATED_STATES),
            BreakerRow.tenant_id != all_(_tenants("exclude")),
        ),
        {"exclude": sorted(set(exclude))},
    )
    known = await session.scalar(select(func.count()).select_from(Tenant))
    return int(isolated or 0), int(known or 0)


async def firing_isolating_tenants(session: AsyncSession, tenants: Sequence[str]) -> set[str]:
    """Those of `tenants` with an isolating alert still firing."""
    rows = await session.execute(
        select(Alert.tenant_id)
        .where(Alert.status == "firing", Alert.isolating, Alert.tenant_id == any_(_tenants()))
        .distinct(),
        {"tenants": sorted(set(tenants))},
    )
    return {t for (t,) in rows.tuples() if t is not None}


async def set_override(
    session: AsyncSession, tenant_id: str, *, reason: str | None, actor: str | None
) -> None:
    """Who forced the breaker and why, for SQL readers (None, None clears it)."""
    await session.execute(
        update(BreakerRow)
        .where(BreakerRow.tenant_id == tenant_id)
        .values(override_reason=reason, override_actor=actor)
    )


async def set_next_check(session: AsyncSession, tenants: Sequence[str], *, at: datetime) -> None:
    await session.execute(
        update(BreakerRow).where(BreakerRow.tenant_id == any_(_tenants())).values(next_check_at=at),
        {"tenants": sorted(set(tenants))},
    )


# One statement for any number of changed breakers (a grouped delivery can trip hundreds):
# SQLAlchemy caches it and psycopg prepares it, as audit.py does for audit rows.
_UPDATE_BREAKERS = text(
    """
    UPDATE breakers AS b
    SET state = v.state, opened_at = v.opened_at, trips = v.trips, streak = v.streak,
        half_open_at = v.half_open_at, probe_successes = v.probe_successes,
        probe_failures = v.probe_failures, alert_firing = v.alert_firing,
        resolved_at = v.resolved_at, changed_at = v.changed_at,
        next_check_at = v.next_check_at, version = b.version + 1, updated_at = now()
    FROM unnest(
        CAST(:tenant_id AS text[]), CAST(:state AS text[]), CAST(:opened_at AS timestamptz[]),
        CAST(:trips AS int[]), CAST(:streak AS int[]), CAST(:half_open_at AS timestamptz[]),
        CAST(:probe_successes AS int[]), CAST(:probe_failures AS int[]),
        CAST(:alert_firing AS boolean[]), CAST(:resolved_at AS timestamptz[]),
        CAST(:changed_at AS timestamptz[]), CAST(:next_check_at AS timestamptz[])
    ) AS v(tenant_id, state, opened_at, trips, streak, half_open_at, probe_successes,
           probe_failures, alert_firing, resolved_at, changed_at, next_check_at)
    WHERE b.tenant_id = v.tenant_id
    RETURNING b.tenant_id, b.version
    """
)


async def save_breakers(
    session: AsyncSession, rows: Sequence[tuple[Breaker, datetime | None]]
) -> list[Versioned]:
    """Write locked rows, each with its next check time, and announce each with one NOTIFY.

    Returns the rows with their new versions, in the order given."""
    if not rows:
        return []
    columns: dict[str, list[Any]] = {name: [] for name in (*COLUMNS, "next_check_at")}
    for b, next_check_at in rows:
        for name in COLUMNS:
            columns[name].append(getattr(b, name))
        columns["next_check_at"].append(next_check_at)
    columns["state"] = [state.value for state in columns["state"]]
    result = await session.execute(_UPDATE_BREAKERS, columns)
    versions = dict(result.tuples().all())
    saved = [Versioned(versions[b.tenant_id], b) for b, _ in rows]
    payloads = [notification_payload(v) for v in saved]
    # Delivered to every listener at commit, in commit order, and never if we roll back.
    notify = func.pg_notify(
        NOTIFY_CHANNEL, func.unnest(bindparam("payloads", payloads, type_=ARRAY(Text)))
    )
    await session.execute(select(notify))
    return saved


# --- the listener's connection (psycopg, autocommit) ---------------------------------------


async def listen(conn: psycopg.AsyncConnection[Any]) -> None:
    """Subscribe `conn` to breaker changes (before loading rows: no change is lost)."""
    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")


async def load_all(conn: psycopg.AsyncConnection[Any]) -> list[Versioned]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM breakers")
        rows = await cur.fetchall()
    return [Versioned(r["version"], breaker_from_row(r)) for r in rows]


async def ping(conn: psycopg.AsyncConnection[Any]) -> None:
    """A round trip that proves the connection is alive."""
    await conn.execute("SELECT 1")
