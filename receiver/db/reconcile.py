"""The reconciler's rows: its lease and last results (reconciler_state, one row), the
instances absent from the last complete poll (reconcile_absent), and the stored
instances a poll is compared with.

One replica at a time: a replica CLAIMS the lease (a conditional UPDATE of the one row:
free or expired, and the last poll at least `gap` ago, on the database's clock), polls the
peers without holding any transaction, then APPLIES the result under the row's lock only
if it still holds the lease. A replica that died holding it is replaced once the lease
expires. The absent state is in the database, so it survives a change of replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.ingest import stored_role
from receiver.db.json import dumps
from receiver.db.tables import Alert, ReconcileAbsent
from receiver.db.tables import ReconcilerState as StateRow
from receiver.domain.alerts import AlertInstance, AlertStatus

_ROW = 1
InstanceKey = tuple[str, datetime]

_CLAIM = text(
    """
    UPDATE reconciler_state
    SET lease_owner = :owner,
        lease_until = clock_timestamp() + make_interval(secs => :lease_seconds)
    WHERE id = 1
      AND (lease_until IS NULL OR lease_until < clock_timestamp() OR lease_owner = :owner)
      AND (last_poll_at IS NULL
           OR last_poll_at <= clock_timestamp() - make_interval(secs => :gap_seconds))
    RETURNING id
    """
)
_FINISH = text(
    """
    UPDATE reconciler_state
    SET lease_owner = NULL, lease_until = NULL, last_poll_at = clock_timestamp(),
        last_complete_at = CASE WHEN :complete THEN clock_timestamp() ELSE last_complete_at END,
        last_failed = CAST(:failed AS jsonb), last_changes = :changes,
        total_fired = total_fired + :fired, total_resolved = total_resolved + :resolved
    WHERE id = 1
    """
)


@dataclass(frozen=True)
class ReconcilerRecord:
    """reconciler_state as /readyz and the metrics read it."""

    last_poll_at: datetime | None
    last_complete_at: datetime | None
    last_failed: list[dict[str, str]]
    last_changes: int
    total_fired: int
    total_resolved: int
    lease_owner: str | None
    absent: int


async def claim(
    session: AsyncSession, *, owner: str, lease_seconds: float, gap_seconds: float
) -> bool:
    """Take the lease if it is free (or expired, or ours) and a poll is due."""
    await session.execute(
        pg_insert(StateRow).values(id=_ROW).on_conflict_do_nothing(index_elements=[StateRow.id])
    )
    params = {"owner": owner, "lease_seconds": lease_seconds, "gap_seconds": gap_seconds}
    return (await session.execute(_CLAIM, params)).first() is not None


async def lock_if_owner(session: AsyncSession, *, owner: str) -> bool:
    """Lock the row; True when `owner` still holds an unexpired lease."""
    row = (
        await session.execute(
            text(
                "SELECT lease_owner = :owner AND lease_until >= clock_timestamp()"
                " FROM reconciler_state WHERE id = 1 FOR UPDATE"
            ),
            {"owner": owner},
        )
    ).scalar_one_or_none()
    return bool(row)


async def finish(
    session: AsyncSession,
    *,
    complete: bool,
    failed: Sequence[dict[str, str]],
    fired: int,
    resolved: int,
) -> None:
    """Record the poll and give the lease back."""
    await session.execute(
        _FINISH,
        {
            "complete": complete,
            "failed": dumps(list(failed)),
            "changes": fired + resolved,
            "fired": fired,
            "resolved": resolved,
        },
    )


async def absent(session: AsyncSession) -> frozenset[InstanceKey]:
    rows = await session.execute(select(ReconcileAbsent.fingerprint, ReconcileAbsent.starts_at))
    return frozenset((fp, starts_at) for fp, starts_at in rows.tuples())


async def replace_absent(
    session: AsyncSession,
    keys: Iterable[InstanceKey],
    *,
    previous: frozenset[InstanceKey],
    now: datetime,
) -> None:
    """The absent state after a complete poll: keep the rows still absent (their
    absent_since), drop the others, add the new ones."""
    keys = frozenset(keys)
    gone = previous - keys
    if gone:
        await session.execute(
            delete(ReconcileAbsent).where(
                or_(
                    *(
                        (ReconcileAbsent.fingerprint == fp) & (ReconcileAbsent.starts_at == sa)
                        for fp, sa in sorted(gone)
                    )
                )
            )
        )
    new = keys - previous
    if new:
        await session.execute(
            insert(ReconcileAbsent),
            [{"fingerprint": fp, "starts_at": sa, "absent_since": now} for fp, sa in sorted(new)],
        )


async def stored_instances(
    session: AsyncSession, fingerprints: Iterable[str]
) -> list[AlertInstance]:
    """Every stored firing instance with a reconciled role (isolating or platform), and
    every stored instance, in any status, of `fingerprints`."""
    rows = await session.execute(
        select(Alert.__table__).where(
            or_(
                (Alert.status == AlertStatus.FIRING.value) & (Alert.isolating | Alert.platform),
                Alert.fingerprint.in_(sorted(set(fingerprints))),
            )
        )
    )
    return [_instance(r) for r in rows.mappings()]


def _instance(row: Any) -> AlertInstance:
    role = stored_role(
        isolating=row["isolating"], platform=row["platform"], tenant_id=row["tenant_id"]
    )
    return AlertInstance(
        fingerprint=row["fingerprint"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        status=AlertStatus(row["status"]),
        labels=row["labels"],
        annotations=row["annotations"],
        generator_url=row["generator_url"],
        role=role,
        tenant_id=row["tenant_id"],
    )


async def read(session: AsyncSession) -> ReconcilerRecord | None:
    row = (await session.execute(select(StateRow).where(StateRow.id == _ROW))).scalar_one_or_none()
    if row is None:
        return None
    count = await session.scalar(select(func.count()).select_from(ReconcileAbsent))
    return ReconcilerRecord(
        last_poll_at=row.last_poll_at,
        last_complete_at=row.last_complete_at,
        last_failed=list(row.last_failed or []),
        last_changes=row.last_changes,
        total_fired=row.total_fired,
        total_resolved=row.total_resolved,
        lease_owner=row.lease_owner,
        absent=int(count or 0),
    )
