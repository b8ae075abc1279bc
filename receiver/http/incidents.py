"""Incidents: list, read, acknowledge, resolve, timeline, postmortem."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from receiver import keys
from receiver.domain.incident import IncidentStatus
from receiver.domain.tiers import Priority
from receiver.http.auth import actor
from receiver.http.parsing import json_response, read_model, validation_error
from receiver.http.schemas import IncidentActionIn, IncidentQuery, PostmortemIn
from receiver.service import incidents as incident_service
from receiver.service import postmortems

Q = TypeVar("Q", bound=BaseModel)


def parse_query(request: web.Request, model: type[Q]) -> Q:
    # A '+' of a UTC offset arrives as a space when the client did not encode it.
    values = {
        k: v.replace(" ", "+") if k in ("since", "until") else v for k, v in request.query.items()
    }
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc) from exc


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
    return json_response({"incidents": [r.to_json(now=now) for r in records]})


async def get_incident(request: web.Request) -> web.Response:
    detail = await incident_service.get_incident(
        sessions=request.app[keys.SESSIONS], incident_id=_id(request), now=datetime.now(UTC)
    )
    return json_response(detail.to_json())


async def acknowledge(request: web.Request) -> web.Response:
    body = await read_model(request, IncidentActionIn)
    now = datetime.now(UTC)
    record = await incident_service.acknowledge_incident(
        sessions=request.app[keys.SESSIONS],
        incident_id=_id(request),
        actor=actor(request, body.actor),
        note=body.note or None,
        config=request.app[keys.CONFIG],
        now=now,
    )
    return json_response(record.to_json(now=now))


async def resolve(request: web.Request) -> web.Response:
    body = await read_model(request, IncidentActionIn)
    now = datetime.now(UTC)
    record = await incident_service.resolve_incident(
        sessions=request.app[keys.SESSIONS],
        incident_id=_id(request),
        actor=actor(request, body.actor),
        note=body.note or None,
        config=request.app[keys.CONFIG],
        now=now,
    )
    return json_response(record.to_json(now=now))


async def timeline(request: web.Request) -> web.Response:
    incident_id = _id(request)
    rows = await incident_service.incident_timeline(
        sessions=request.app[keys.SESSIONS], incident_id=incident_id
    )
    return json_response({"incident_id": incident_id, "timeline": [r.to_json() for r in rows]})


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
    return json_response(stored)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/incidents", list_incidents)
    app.router.add_get("/v1/incidents/{incident_id}", get_incident)
    app.router.add_post("/v1/incidents/{incident_id}/acknowledge", acknowledge)
    app.router.add_post("/v1/incidents/{incident_id}/resolve", resolve)
    app.router.add_get("/v1/incidents/{incident_id}/timeline", timeline)
    app.router.add_get("/v1/incidents/{incident_id}/postmortem", get_postmortem)
    app.router.add_put("/v1/incidents/{incident_id}/postmortem", put_postmortem)
