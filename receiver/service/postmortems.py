"""Postmortems: what people write about an incident (root cause, Five Whys, action items
owned by teams, what went well, the false-positive flag), and the Markdown document
rendered from that, the incident and its audit rows (receiver.domain.postmortem)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db import postmortems as rows
from receiver.db.audit import AuditTrail
from receiver.db.transaction import in_transaction
from receiver.domain import incident as domain
from receiver.domain.incident_detail import postmortem_input
from receiver.domain.postmortem import PostmortemFields, render_postmortem
from receiver.errors import InvalidInput
from receiver.service.incidents.reads import find_incident, load_detail


async def update_postmortem(
    *,
    sessions: async_sessionmaker[AsyncSession],
    incident_id: str,
    root_cause: str | None,
    five_whys: Sequence[str],
    action_items: Sequence[Mapping[str, object]],
    what_went_well: Sequence[str],
    false_positive: bool,
    actor: str,
) -> PostmortemFields:
    """Replace the incident's postmortem fields (PUT semantics), audited as
    `incident.postmortem_updated`. Action items are validated first: a bad one changes
    nothing (InvalidInput, 400, naming the field)."""
    try:
        items = domain.validate_action_items(action_items)
    except domain.IncidentError as exc:
        raise InvalidInput(str(exc)) from exc

    async def work(session: AsyncSession) -> PostmortemFields:
        await find_incident(session, incident_id, lock=True)
        await rows.save(
            session,
            incident_id,
            root_cause=root_cause,
            five_whys=five_whys,
            action_items=items,
            what_went_well=what_went_well,
            false_positive=false_positive,
            updated_by=actor,
        )
        audit = AuditTrail()
        audit.add(
            "incident.postmortem_updated",
            actor=actor,
            incident_id=incident_id,
            root_cause=root_cause is not None and bool(root_cause.strip()),
            five_whys=len(five_whys),
            action_items=[
                {"owner_team": a.owner_team, "due": a.due.isoformat(), "status": a.status}
                for a in items
            ],
            what_went_well=len(what_went_well),
            false_positive=false_positive,
        )
        await audit.flush(session)
        stored = await rows.stored(session, incident_id)
        assert stored is not None
        return stored

    return await in_transaction(sessions, work, what="postmortem update")


async def postmortem_markdown(
    *, sessions: async_sessionmaker[AsyncSession], incident_id: str, now: datetime
) -> str:
    async def work(session: AsyncSession) -> str:
        detail, timeline = await load_detail(session, incident_id, now=now)
        return render_postmortem(postmortem_input(detail, timeline), now=now)

    return await in_transaction(sessions, work, what="postmortem")
