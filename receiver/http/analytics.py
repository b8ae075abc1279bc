"""GET /v1/analytics/incidents: MTTA, MTTR, counts by priority, SLA breaches, trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from receiver import keys
from receiver.errors import InvalidInput
from receiver.http.parsing import json_response
from receiver.http.query import parse_query
from receiver.http.schemas import AnalyticsOut, AnalyticsQuery
from receiver.service import analytics as analytics_service

DEFAULT_PERIOD = timedelta(days=30)


async def incident_analytics(request: web.Request) -> web.Response:
    q = parse_query(request, AnalyticsQuery)
    now = datetime.now(UTC)
    until = q.until or now
    since = q.since or until - DEFAULT_PERIOD
    if since >= until:
        raise InvalidInput(
            f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
        )
    out = await analytics_service.incident_analytics(
        sessions=request.app[keys.SESSIONS], since=since, until=until, now=now
    )
    return json_response(AnalyticsOut.of(out).model_dump(mode="json"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/analytics/incidents", incident_analytics)
