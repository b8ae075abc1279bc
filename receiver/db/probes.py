"""Probe outcomes as they arrive: one row per gateway report (the what-if replay's input)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import ProbeOutcome
from receiver.domain.breaker import BreakerState


async def record(
    session: AsyncSession,
    *,
    tenant_id: str,
    received_at: datetime,
    success: int,
    failure: int,
    state_before: BreakerState,
    state_after: BreakerState,
) -> None:
    await session.execute(
        insert(ProbeOutcome).values(
            tenant_id=tenant_id,
            received_at=received_at,
            success=success,
            failure=failure,
            state_before=state_before.value,
            state_after=state_after.value,
        )
    )
