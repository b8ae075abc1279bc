"""Postmortems: what people write about an incident (root cause, Five Whys, action items
owned by teams, what went well, the false-positive flag), and the Markdown document
rendered from that, the incident and its audit rows (receiver.domain.postmortem)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db.audit import AuditTrail
from receiver.db.tables import ActionItemRow, Postmortem
from receiver.db.transaction import in_transaction
from receiver.domain import incident as domain
from receiver.domain.incident import ActionItem
from receiver.domain.postmortem import (
    PostmortemInput,
    TenantImpact,
    TimelineEntry,
    render_postmortem,
)
from receiver.domain.tiers import Priority
from receiver.errors import InvalidInput
from receiver.service import incidents as incident_service


async def stored(session: AsyncSession, incident_id: str) -> dict[str, Any] | None:
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
    return {
        "root_cause": row.root_cause,
        "five_whys": list(row.five_whys),
        "action_items": [
            {"description": d, "owner_team": t, "due": due.isoformat(), "status": s}
            for d, t, due, s in items.tuples()
        ],
        "what_went_well": list(row.what_went_well),
        "false_positive": row.false_positive,
        "updated_at": row.updated_at,
        "updated_by": row.updated_by,
    }


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
) -> dict[str, Any]:
    """Replace the incident's postmortem fields (PUT semantics), audited as
    `incident.postmortem_updated`. Action items are validated first: a bad one changes
    nothing (InvalidInput, 400, naming the field)."""
    try:
        items = domain.validate_action_items(action_items)
    except domain.IncidentError as exc:
        raise InvalidInput(str(exc)) from exc

    async def work(session: AsyncSession) -> dict[str, Any]:
        await incident_service.lock_incident(session, incident_id)
        values = {
            "root_cause": root_cause,
            "five_whys": list(five_whys),
            "what_went_well": list(what_went_well),
            "false_positive": false_positive,
            "updated_by": actor,
        }
        stmt = pg_insert(Postmortem).values(incident_id=incident_id, **values)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[Postmortem.incident_id],
                set_={**values, "updated_at": func.now()},
            )
        )
        await session.execute(delete(ActionItemRow).where(ActionItemRow.incident_id == incident_id))
        if items:
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
                    for i, a in enumerate(items, start=1)
                ],
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
        out = await stored(session, incident_id)
        assert out is not None
        return out

    return await in_transaction(sessions, work, what="postmortem update")


async def postmortem_markdown(
    *, sessions: async_sessionmaker[AsyncSession], incident_id: str, now: datetime
) -> str:
    async def work(session: AsyncSession) -> str:
        detail, timeline = await incident_service.load_detail(session, incident_id, now=now)
        return render_postmortem(_input(detail, timeline), now=now)

    return await in_transaction(sessions, work, what="postmortem")


def _input(
    detail: incident_service.IncidentDetail, timeline: Sequence[incident_service.TimelineRow]
) -> PostmortemInput:
    rec, pm = detail.record, detail.postmortem or {}
    hours = detail.impact.hours
    return PostmortemInput(
        incident_id=rec.id,
        title=rec.title,
        priority=Priority(rec.priority),
        status=rec.status.value,
        opened_at=rec.opened_at,
        acknowledged_at=rec.acknowledged_at,
        acknowledged_by=rec.acknowledged_by,
        resolved_at=rec.resolved_at,
        resolved_by=rec.resolved_by,
        first_alert_at=detail.first_alert_at,
        tenants=[
            TenantImpact(
                tenant_id=m.tenant_id,
                tier=m.tier,
                name=m.name,
                isolated_hours=hours.get(m.tenant_id, 0.0),
                cost=(m.hourly_cost or 0.0) * hours.get(m.tenant_id, 0.0),
            )
            for m in detail.members
        ],
        cost=detail.impact.cost,
        timeline=[
            TimelineEntry(
                at=r.occurred_at,
                actor=r.actor,
                action=r.action,
                summary=describe(r.action, r.details),
                tenant_id=r.tenant_id,
            )
            for r in timeline
        ],
        root_cause=pm.get("root_cause"),
        five_whys=pm.get("five_whys", []),
        action_items=[
            ActionItem(
                description=a["description"],
                owner_team=a["owner_team"],
                due=date.fromisoformat(a["due"]),
                status=a["status"],
            )
            for a in pm.get("action_items", [])
        ],
        what_went_well=pm.get("what_went_well", []),
        false_positive=bool(pm.get("false_positive", False)),
        ack_due_at=rec.ack_due_at,
        sla_breached=rec.sla_breached(detail.now),
        runbook_urls=detail.runbook_urls,
    )


def describe(action: str, d: Mapping[str, Any]) -> str:
    """One line for a timeline entry, from an audit row's action and details."""

    def note(prefix: str) -> str:
        text = d.get("note")
        return f"{prefix}: {text}" if text else prefix

    match action:
        case "incident.opened":
            return f"incident opened at {d.get('priority')}: {d.get('reason', '')}".rstrip(": ")
        case "incident.joined":
            return f"tenant joined ({d.get('cause')}, tier {d.get('tier')})"
        case "incident.escalated":
            return f"escalated {d.get('from')} to {d.get('to')}: {d.get('reason', '')}"
        case "incident.acknowledged":
            return note("acknowledged")
        case "incident.resolved":
            return note("resolved")
        case "incident.alert_linked":
            return f"alert {d.get('alertname')} linked: {d.get('reason', '')}"
        case "incident.postmortem_updated":
            return "postmortem updated"
        case "sla.breached":
            return f"not acknowledged by the due time {d.get('due')}"
        case "breaker.transition":
            return f"breaker {d.get('from')} to {d.get('to')}: {d.get('reason', '')}"
        case "breaker.suppressed":
            return (
                "trip suppressed by the mass-isolation guard "
                f"({d.get('isolated')} isolated, limit {d.get('limit')})"
            )
        case "breaker.override":
            return f"operator {d.get('action')}: {d.get('reason', '')}"
        case "alert.fired" | "alert.resolved":
            return f"alert {d.get('alertname')} {action.split('.')[1]}"
        case "notification.sent" | "notification.failed":
            outcome = action.split(".")[1]
            return f"{d.get('event', 'notification')} {outcome} via {d.get('channel')}"
    return action
