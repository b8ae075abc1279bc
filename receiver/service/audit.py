"""Audit entries, gathered during a unit of work and written in one statement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import AuditLog

SYSTEM = "system"
ALERTMANAGER = "alertmanager"


@dataclass
class AuditTrail:
    """Collects the rows of one transaction; `flush` writes them with one INSERT."""

    delivery_id: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        action: str,
        *,
        actor: str,
        tenant_id: str | None = None,
        incident_id: str | None = None,
        **details: Any,
    ) -> None:
        self.rows.append(
            {
                "actor": actor,
                "action": action,
                "tenant_id": tenant_id,
                "incident_id": incident_id,
                "delivery_id": self.delivery_id,
                "details": details,
            }
        )

    async def flush(self, session: AsyncSession) -> None:
        if self.rows:
            await session.execute(insert(AuditLog), self.rows)
            self.rows = []
