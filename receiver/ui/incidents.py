"""Incidents: the list with its filters and SLA clocks, and one incident's page with its
tenants, priority history, timeline, runbooks, the acknowledge and resolve forms and the
postmortem (rendered from its Markdown, and editable)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from receiver import keys
from receiver.domain.incident import IncidentStatus
from receiver.domain.tiers import Priority
from receiver.service import console, postmortems
from receiver.service import incidents as incident_service
from receiver.ui import present
from receiver.ui.forms import (
    action_items_text,
    incident_action_form,
    incident_filter,
    postmortem_form,
)
from receiver.ui.render import page


def _id(request: web.Request) -> str:
    return request.match_info["incident_id"]


def _back(incident_id: str, anchor: str = "") -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/ui/incidents/{incident_id}{anchor}")


async def incident_list(request: web.Request) -> web.Response:
    q = incident_filter(request)
    records = await incident_service.list_incidents(
        sessions=request.app[keys.SESSIONS],
        status=IncidentStatus(q.status) if q.status else None,
        priority=Priority(q.priority) if q.priority else None,
        tenant_id=q.tenant,
        since=q.since,
        until=q.until,
        limit=q.limit,
    )
    return page(request, "incidents.html", incidents=records, q=q)


async def incident_page(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    p = await console.incident_page(
        sessions=request.app[keys.SESSIONS], incident_id=_id(request), now=now
    )
    return page(
        request,
        "incident.html",
        d=p.detail,
        rec=p.detail.record,
        history=present.priority_history(p.timeline),
        timeline=present.timeline_rows(p.timeline),
        postmortem_html=present.markdown_html(p.postmortem_markdown),
        pm=p.detail.postmortem,
        action_items_text=action_items_text(p.detail.postmortem.action_items)
        if p.detail.postmortem
        else "",
    )


async def acknowledge(request: web.Request) -> web.Response:
    return await _command(request, incident_service.acknowledge_incident)


async def resolve(request: web.Request) -> web.Response:
    return await _command(request, incident_service.resolve_incident)


async def _command(request: web.Request, command: incident_service.PersonCommand) -> web.Response:
    body = await incident_action_form(request)
    await command(
        sessions=request.app[keys.SESSIONS],
        incident_id=_id(request),
        actor=body.actor,
        note=body.note or None,
        config=request.app[keys.CONFIG],
        now=datetime.now(UTC),
    )
    raise _back(_id(request))


async def save_postmortem(request: web.Request) -> web.Response:
    body = await postmortem_form(request)
    await postmortems.update_postmortem(
        sessions=request.app[keys.SESSIONS],
        incident_id=_id(request),
        root_cause=body.root_cause or None,
        five_whys=body.five_whys,
        action_items=body.action_items,
        what_went_well=body.what_went_well,
        false_positive=body.false_positive,
        actor=body.actor,
    )
    raise _back(_id(request), "#postmortem")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/incidents", incident_list)
    app.router.add_get("/ui/incidents/{incident_id}", incident_page)
    app.router.add_post("/ui/incidents/{incident_id}/acknowledge", acknowledge)
    app.router.add_post("/ui/incidents/{incident_id}/resolve", resolve)
    app.router.add_post("/ui/incidents/{incident_id}/postmortem", save_postmortem)
