"""Postmortem queries: the fields people write, and their action items in order."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import ActionItemRow, Postmortem
from receiver.domain.incident import ActionItem
from receiver.domain.postmortem import PostmortemFields


async def stored(session: AsyncSession, incident_id: str) -> PostmortemFields | None:
    """The postmortem fields as stored, or None if nobody has written any."""
    row = (
        await session.execute(
            select(Postmortem.__table__).where(Postmortem.incident_id == incident_id)
        )
    ).one_or_none()
    if row is None:
        return None
    items = await session.execute(
        select(
            ActionItemRow.description,
            ActionItemRow.owner_team,
            ActionItemRow.due,
            ActionItemRow.status,
        )
        .where(ActionItemRow.incident_id == incident_id)
        .order_by(ActionItemRow.position)
    )
    return PostmortemFields(
        root_cause=row.root_cause,
        five_whys=list(row.five_whys),
        action_items=[
            ActionItem(description=d, owner_team=t, due=due, status=s)
            for d, t, due, s in items.tuples()
        ],
        what_went_well=list(row.what_went_well),
        false_positive=row.false_positive,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


async def save(
    session: AsyncSession,
    incident_id: str,
    *,
    root_cause: str | None,
    five_whys: Sequence[str],
    action_items: Sequence[ActionItem],
    what_went_well: Sequence[str],
    false_positive: bool,
    updated_by: str,
) -> None:
    """Replace every field and the action items (PUT semantics)."""
    values = {
        "root_cause": root_cause,
        "five_whys": list(five_whys),
        "what_went_well": list(what_went_well),
        "false_positive": false_positive,
        "updated_by": updated_by,
    }
    stmt = pg_insert(Postmortem).values(incident_id=incident_id, **values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Postmortem.incident_id],
            set_={**values, "updated_at": func.now()},
        )
    )
    await session.execute(delete(ActionItemRow).where(ActionItemRow.incident_id == incident_id))
    if action_items:
        await session.execute(
            insert(ActionItemRow),
            [
                {
                    "incident_id": incident_id,
                    "position": i,
                    "description": a.description,
                    "owner_team": a.owner_team,
                    "due": a.due,
                    "status": a.status,
                }
                for i, a in enumerate(action_items, start=1)
            ],
        )
