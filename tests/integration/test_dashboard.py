"""The Grafana dashboard (deploy/grafana/dashboards/blast-radius.json): every SQL panel
runs against PostgreSQL on a populated database (the audit test's three incidents) and
answers rows, with Grafana's macros expanded as Grafana would for the last 7 days; and the
receiver exports the gauges and the histogram the Prometheus panels read (the end-to-end
test evaluates every PromQL expression in the real Prometheus)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.conftest import libpq
from tests.integration.helpers import firing, poll, post_webhook
from tests.integration.test_audit_sql import populate

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/blast-radius.json"


def dashboard_targets(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every target of that data source type."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (p["title"], t)
        for p in panels
        for t in p.get("targets", [])
        if t["datasource"]["type"] == kind
    ]


def expand_sql_macros(query: str, *, since: datetime, until: datetime) -> str:
    """Grafana's PostgreSQL macros this dashboard uses."""
    frm, to = f"'{since.isoformat()}'", f"'{until.isoformat()}'"
    query = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN {frm} AND {to}", query)
    query = query.replace("$__timeFrom()", frm).replace("$__timeTo()", to)
    assert "$__" not in query, f"a Grafana macro the test does not know: {query}"
    return query


def test_the_dashboard_has_sql_and_promql_panels() -> None:
    assert len(dashboard_targets("grafana-postgresql-datasource")) >= 4
    assert len(dashboard_targets("prometheus")) >= 10


async def test_every_sql_panel_answers_on_test_data(
    app_client: Any, sql: Any, clean_db: str
) -> None:
    client = await app_client(
        breaker_open_seconds=0.3,
        half_open_probation_seconds=0,
        sweep_interval_seconds=0.05,
        sla_check_interval_seconds=0.05,
    )
    await populate(client, sql)
    now = datetime.now(UTC)
    with psycopg.connect(libpq(clean_db), autocommit=True, row_factory=dict_row) as conn:
        for title, target in dashboard_targets("grafana-postgresql-datasource"):
            query = expand_sql_macros(target["rawSql"], since=now - timedelta(days=7), until=now)
            rows = conn.execute(query).fetchall()
            assert rows, f"no rows for the panel {title!r}"
            if target["format"] == "time_series":
                assert all(isinstance(r["time"], datetime) for r in rows), (title, rows)
                assert any(v is not None for r in rows for k, v in r.items() if k != "time")


async def test_metrics_for_the_dashboard(client: Any) -> None:
    started = (datetime.now(UTC) - timedelta(seconds=20)).isoformat(timespec="milliseconds")
    await post_webhook(client, firing("tenant-m", starts_at=started))

    async def scrape() -> str:
        return await (await client.get("/metrics")).text()

    text = await poll(
        scrape,
        lambda t: re.search(r'^receiver_incidents_unresolved\{priority="P2"\} 1\.0', t, re.M),
        within=15,
        interval=0.5,
        what="the unresolved-incident gauge",
    )
    count = re.search(r"^receiver_detection_seconds_count (\S+)", text, re.M)
    total = re.search(r"^receiver_detection_seconds_sum (\S+)", text, re.M)
    assert count and total and float(count.group(1)) == 1.0, text
    assert 19 <= float(total.group(1)) < 40, total.group(0)
    for channel in ("pagerduty", "slack", "email"):
        assert f'receiver_outbox_notifications{{channel="{channel}",status="pending"}}' in text
    assert "receiver_outbox_oldest_pending_seconds" in text
    assert 'receiver_webhook_rejections_total{reason="unauthorized"} 0.0' in text
    assert 'receiver_breaker_transitions_total{to="forced_open"} 0.0' in text
