"""The heartbeat's one row (heartbeat_state): when the receiver first started on this
database, the last heartbeat, and the open "pipeline silent" incident while lost."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import HeartbeatState as HeartbeatRow
from receiver.domain.heartbeat import HeartbeatState

_ROW = 1


def _state(row: Any) -> HeartbeatState:
    return HeartbeatState(
        first_started_at=row.first_started_at,
        last_heartbeat_at=row.last_heartbeat_at,
        lost_at=row.lost_at,
        incident_id=row.incident_id,
    )


async def ensure_started(session: AsyncSession, *, now: datetime) -> None:
    """The first start of a receiver on this database is when silence is counted from
    until a heartbeat arrives; later starts change nothing."""
    await session.execute(
        pg_insert(HeartbeatRow)
        .values(id=_ROW, first_started_at=now)
        .on_conflict_do_nothing(index_elements=[HeartbeatRow.id])
    )


async def lock(session: AsyncSession, *, now: datetime, skip_locked: bool) -> HeartbeatState | None:
    """The row, locked (created first if missing); None when another transaction holds
    it and `skip_locked`."""
    await ensure_started(session, now=now)
    stmt = (
        select(HeartbeatRow).where(HeartbeatRow.id == _ROW).with_for_update(skip_locked=skip_locked)
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    return None if row is None else _state(row)


async def read(session: AsyncSession) -> HeartbeatState | None:
    row = (
        await session.execute(select(HeartbeatRow).where(HeartbeatRow.id == _ROW))
    ).scalar_one_or_none()
    return None if row is None else _state(row)


async def record_beat(session: AsyncSession, *, at: datetime) -> None:
    """A heartbeat arrived: the pipeline works (the lost state, if any, is over)."""
    await session.execute(
        update(HeartbeatRow)
        .where(HeartbeatRow.id == _ROW)
        .values(last_heartbeat_at=at, lost_at=None, incident_id=None)
    )


async def set_lost(session: AsyncSession, *, at: datetime, incident_id: str) -> None:
    await session.execute(
        update(HeartbeatRow)
        .where(HeartbeatRow.id == _ROW)
        .values(lost_at=at, incident_id=incident_id)
    )
