"""Audit entries, gathered during a unit of work and written in one statement."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.json import dumps

SYSTEM = "system"
ALERTMANAGER = "alertmanager"

# One constant statement over arrays, whatever the number of rows: SQLAlchemy caches it
# and psycopg prepares it once per connection. (The ORM's bulk insert it replaces fetched
# every row's id back and split the rows into one statement per set of non-NULL columns.)
# unnest keeps the order of the arrays, so ids and occurred_at (clock_timestamp) follow
# the order in which the effects were added.
_INSERT = text(
    """
    INSERT INTO audit_log (actor, action, tenant_id, incident_id, delivery_id, details)
    SELECT r.actor, r.action, r.tenant_id, r.incident_id, r.delivery_id, r.details::jsonb
    FROM unnest(
        CAST(:actor AS text[]), CAST(:action AS text[]), CAST(:tenant_id AS text[]),
        CAST(:incident_id AS text[]), CAST(:delivery_id AS bigint[]), CAST(:details AS text[])
    ) AS r(actor, action, tenant_id, incident_id, delivery_id, details)
    """
)


# Which delivery a row belongs to, from its tenant and details, when one trail serves
# several deliveries written together (service/ingest.py, group commit).
DeliveryOf = Callable[[str | None, Mapping[str, Any]], int | None]


@dataclass
class AuditTrail:
    """Collects the rows of one transaction; `flush` writes them with one INSERT.

    Every row carries `delivery_id`, or, with `delivery_of`, the delivery it names."""

    delivery_id: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    delivery_of: DeliveryOf | None = None

    def add(
        self,
        action: str,
        /,
        *,
        actor: str,
        tenant_id: str | None = None,
        incident_id: str | None = None,
        **details: Any,
    ) -> None:
        delivery_id = self.delivery_id
        if self.delivery_of is not None:
            delivery_id = self.delivery_of(tenant_id, details)
        self.rows.append(
            {
                "actor": actor,
                "action": action,
                "tenant_id": tenant_id,
                "incident_id": incident_id,
                "delivery_id": delivery_id,
                "details": details,
            }
        )

    async def flush(self, session: AsyncSession) -> None:
        if self.rows:
            rows = self.rows
            await session.execute(
                _INSERT,
                {
                    "actor": [r["actor"] for r in rows],
                    "action": [r["action"] for r in rows],
                    "tenant_id": [r["tenant_id"] for r in rows],
                    "incident_id": [r["incident_id"] for r in rows],
                    "delivery_id": [r["delivery_id"] for r in rows],
                    "details": [dumps(r["details"]) for r in rows],
                },
            )
            self.rows = []
