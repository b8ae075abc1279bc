"""Analytics: MTTA and MTTR day by day, incidents by priority, trips by tenant, as SVG."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from receiver import keys
from receiver.domain.analytics import AnalyticsTrend
from receiver.errors import InvalidInput
from receiver.service import analytics as analytics_service
from receiver.ui import charts
from receiver.ui.render import page

PERIODS = (7, 30, 90)


def _days(request: web.Request) -> int:
    raw = request.query.get("days", "30")
    if not raw.isdigit() or int(raw) not in PERIODS:
        raise InvalidInput(f"days must be one of {', '.join(map(str, PERIODS))}")
    return int(raw)


def _charts(t: AnalyticsTrend) -> dict[str, Any]:
    s = t.summary
    start, end = s.since.astimezone(UTC).date(), s.until.astimezone(UTC).date()
    return {
        "times": charts.line_chart(
            "Mean time to acknowledge and to resolve, per day",
            [
                charts.Series("MTTA", "series-1", {d.day: d.mtta_seconds for d in t.days}),
                charts.Series("MTTR", "series-2", {d.day: d.mttr_seconds for d in t.days}),
            ],
            start=start,
            end=end,
        ),
        "priorities": charts.bar_chart(
            "Incidents by priority",
            [(p, st.incidents, f"prio-{p.lower()}") for p, st in sorted(s.by_priority.items())],
        ),
        "trips": charts.hbar_chart("Breaker trips by tenant", list(s.trips_by_tenant.items())),
    }


async def analytics_page(request: web.Request) -> web.Response:
    days = _days(request)
    now = datetime.now(UTC)
    trend = await analytics_service.incident_trend(
        sessions=request.app[keys.SESSIONS], since=now - timedelta(days=days), until=now, now=now
    )
    return page(
        request, "analytics.html", a=trend.summary, days=days, periods=PERIODS, **_charts(trend)
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/analytics", analytics_page)
