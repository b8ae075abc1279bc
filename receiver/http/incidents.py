"""Incidents: list, read, acknowledge, resolve, timeline, postmortem."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from receiver import keys
from receiver.domain.incident import IncidentStatus
from receiver.domain.tiers import Priority
from receiver.http.auth import actor
from receiver.http.parsing import json_response, read_model
from receiver.http.query import parse_query
from receiver.http.schemas import (
    IncidentActionIn,
    IncidentDetailOut,
    IncidentListOut,
    IncidentOut,
    IncidentQuery,
    PostmortemIn,
    PostmortemOut,
    TimelineOut,
)
from receiver.service import incidents as incident_service
from receiver.service import postmortems


def _id(request: web.Request) -> str:
    return request.match_info["incident_id"]


async def list_incidents(request: web.Request) -> web.Response:
    q = parse_query(request, IncidentQuery)
    records = await incident_service.list_incidents(
        sessions=request.app[keys.SESSIONS],
        status=IncidentStatus(q.status) if q.status else None,
        priority=Priority(q.priority) if q.priority else None,
        tenant_id=q.tenant,
        since=q.since,
        until=q.until,
        limit=q.limit,
    )
    now = datetime.now(UTC)
    out = IncidentListOut(incidents=[IncidentOut.of(r, now=now) for r in records])
    return json_response(out.model_dump(mode="json"))


async def get_incident(request: web.Request) -> web.Response:
    detail = await incident_service.get_incident(
        sessions=request.app[keys.SESSIONS], incident_id=_id(request), now=datetime.now(UTC)
    )
    return json_response(IncidentDetailOut.of(detail).model_dump(mode="json"))


async def acknowledge(request: web.Request) -> web.Response:
    return await _respond(request, incident_service.acknowledge_incident)


async def resolve(request: web.Request) -> web.Response:
    return await _respond(request, incident_service.resolve_incident)


async def _respond(request: web.Request, command: incident_service.PersonCommand) -> web.Response:
    body = await read_model(request, IncidentActionIn)
    now = datetime.now(UTC)
    record = await command(
        sessions=request.app[keys.SESSIONS],
        incident_id=_id(request),
        actor=actor(request, body.actor),
        note=body.note or None,
        config=request.app[keys.CONFIG],
        now=now,
    )
    return json_response(IncidentOut.of(record, now=now).model_dump(mode="json"))


async def timeline(request: web.Request) -> web.Response:
    incident_id = _id(request)
    rows = await incident_service.incident_timeline(
        sessions=request.app[keys.SESSIONS], incident_id=incident_id
    )
    return json_response(TimelineOut.of(incident_id, rows).model_dump(mode="json"))


async def get_postmortem(request: web.Request) -> web.Response:
    text = await postmortems.postmortem_markdown(
        sessions=request.app[keys.SESSIONS], incident_id=_id(request), now=datetime.now(UTC)
    )
    return web.Response(text=text, content_type="text/markdown", charset="utf-8")


async def put_postmortem(request: web.Request) -> web.Response:
    body = await read_model(request, PostmortemIn)
    stored = await postmortems.update_postmortem(
        sessions=request.app[keys.SESSIONS],
        incident_id=_id(request),
        root_cause=body.root_cause or None,
        five_whys=body.five_whys,
        action_items=body.action_items,
        what_went_well=body.what_went_well,
        false_positive=body.false_positive,
        actor=actor(request, body.actor),
    )
    return json_response(PostmortemOut.of(stored).model_dump(mode="json"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/incidents", list_incidents)
    app.router.add_get("/v1/incidents/{incident_id}", get_incident)
    app.router.add_post("/v1/incidents/{incident_id}/acknowledge", acknowledge)
    app.router.add_post("/v1/incidents/{incident_id}/resolve", resolve)
    app.router.add_get("/v1/incidents/{incident_id}/timeline", timeline)
    app.router.add_get("/v1/incidents/{incident_id}/postmortem", get_postmortem)
    app.router.add_put("/v1/incidents/{incident_id}/postmortem", put_postmortem)
