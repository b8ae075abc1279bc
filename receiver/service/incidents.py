"""Incident use cases (filled in by the incidents work)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from receiver.config import ServiceConfig
from receiver.domain.alerts import AlertInstance
from receiver.service.audit import AuditTrail

if TYPE_CHECKING:
    from receiver.service.breakers import BreakerChange, BreakerChanges


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
    return []


async def after_breaker_changes(
    session: AsyncSession,
    *,
    changes: Sequence[BreakerChange],
    config: ServiceConfig,
    now: datetime,
    audit: AuditTrail,
) -> None:
    return None
