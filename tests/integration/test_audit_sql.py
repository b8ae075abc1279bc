"""The README's audit queries, run exactly as written against a database populated through
the HTTP API: every ```sql block between the audit-sql markers must run and answer
sensibly. Change a query in the README and this test checks the new one."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import libpq
from tests.integration.test_incidents import POSTMORTEM, alert, call, poll, register, webhook

README = Path(__file__).resolve().parents[2] / "README.md"
Rows = list[dict[str, Any]]


def readme_queries() -> list[str]:
    text = README.read_text()
    start = text.index("<!-- audit-sql:start -->")
    end = text.index("<!-- audit-sql:end -->")
    return re.findall(r"```sql\n(.*?)```", text[start:end], flags=re.DOTALL)


def title(query: str) -> str:
    """The first comment line names the question a query answers."""
    first = query.strip().splitlines()[0]
    assert first.startswith("--"), f"each README query starts with a comment: {query!r}"
    return first.lstrip("- ").strip()


def test_the_readme_has_the_audit_questions() -> None:
    titles = [title(q) for q in readme_queries()]
    assert len(titles) >= 3
    for question in (
        "Everything that happened to tenant-a",
        "P0s acknowledged late",
        "Incidents by priority per week",
    ):
        assert any(t.startswith(question) for t in titles), titles


async def populate(client: Any, sql: Callable[..., Any]) -> dict[str, str]:
    """Three incidents: a P1 acknowledged in time and resolved by the system after
    recovery; a P0 acknowledged late (after the SLA check flagged it) and resolved by a
    person; and an open P0 escalated by the mass-isolation guard."""
    await register(client, "tenant-a", "gold", name="Acme", hourly_cost=100)
    await register(client, "tenant-b", "bronze", hourly_cost=20)
    await register(client, "tenant-p", "platinum", hourly_cost=500)
    for i in range(4, 11):  # ten known tenants: at most two isolated at once
        await register(client, f"t{i}", "bronze", hourly_cost=10)

    # 1. tenant-a and tenant-b fail together; alice acknowledges; both recover.
    (p1,) = (await webhook(client, alert("tenant-a"), alert("tenant-b")))["incidents"]
    await webhook(client, alert("tenant-a", isolate=False, alertname="TenantLatencyHigh"))
    await call(client, "POST", f"/v1/incidents/{p1}/acknowledge", {"actor": "alice"})
    await webhook(
        client, alert("tenant-a", status="resolved"), alert("tenant-b", status="resolved")
    )
    await poll(
        lambda: call(client, "GET", f"/v1/incidents/{p1}"), lambda i: i["status"] == "resolved"
    )
    items = [
        {"description": "Cap document size", "owner_team": "ingest-team", "due": "2020-01-31"},
        {"description": "Parser fuzzing", "owner_team": "platform-team", "due": "2099-12-31"},
    ]
    await call(
        client, "PUT", f"/v1/incidents/{p1}/postmortem", {**POSTMORTEM, "action_items": items}
    )

    # 2. The platinum tenant fails; nobody acknowledges within its 15 minutes. An hour
    # cannot pass in a test, so the incident's clock is moved back one instead.
    (p0_late,) = (await webhook(client, alert("tenant-p")))["incidents"]
    sql(
        "UPDATE incidents SET opened_at = opened_at - interval '1 hour', "
        "ack_due_at = ack_due_at - interval '1 hour' WHERE id = %s",
        p0_late,
    )
    await poll(
        lambda: call(client, "GET", f"/v1/incidents/{p0_late}"),
        lambda i: i["sla"]["breached_at"] is not None,
    )
    await call(client, "POST", f"/v1/incidents/{p0_late}/acknowledge", {"actor": "carol"})
    await call(
        client, "POST", f"/v1/incidents/{p0_late}/resolve", {"actor": "dave", "note": "rolled back"}
    )

    # 3. t4 trips (tenant-p is still isolated: two now); t5's trip is suppressed -> P0.
    (open_p0,) = (await webhook(client, alert("t4")))["incidents"]
    assert (await webhook(client, alert("t5")))["incidents"] == [open_p0]
    return {"p1": p1, "p0_late": p0_late, "open_p0": open_p0}


def check_tenant_history(rows: Rows, ids: dict[str, str]) -> None:
    got = {(r["action"], r["actor"]) for r in rows}
    assert {
        ("alert.fired", "alertmanager"),
        ("breaker.transition", "alertmanager"),
        ("incident.opened", "system"),
        ("incident.joined", "system"),
        ("incident.acknowledged", "alice"),
        ("incident.resolved", "system"),
        ("incident.postmortem_updated", "alice"),
        ("tenant.configured", "api"),
    } <= got
    assert {r["incident_id"] for r in rows} == {None, ids["p1"]}
    assert ("closed", "open") in {(r["from_state"], r["to_state"]) for r in rows}
    assert [r["occurred_at"] for r in rows] == sorted(r["occurred_at"] for r in rows)


def check_p0_late(rows: Rows, ids: dict[str, str]) -> None:
    (row,) = rows
    assert (row["id"], row["acknowledged_by"]) == (ids["p0_late"], "carol")
    assert row["late_by"] > timedelta(minutes=40)


def check_weekly(rows: Rows, ids: dict[str, str]) -> None:
    by_priority = {r["priority"]: r for r in rows}
    assert {p: r["incidents"] for p, r in by_priority.items()} == {"P0": 2, "P1": 1}
    assert by_priority["P1"]["mtta"] >= timedelta(0)
    assert by_priority["P1"]["mttr"] > timedelta(0)
    assert by_priority["P0"]["mtta"] > timedelta(minutes=59)  # the late acknowledgement
    assert by_priority["P0"]["sla_breaches"] == 1
    # Everything opened in the last hour or so: this week (or last, just after Monday 00:00).
    this_week = datetime.now(UTC).date() - timedelta(days=datetime.now(UTC).weekday())
    assert {r["week"] for r in rows} <= {this_week, this_week - timedelta(days=7)}
    assert all(r["week"].weekday() == 0 for r in rows)


def check_unresolved(rows: Rows, ids: dict[str, str]) -> None:
    (row,) = rows
    assert (row["id"], row["priority"], row["status"]) == (ids["open_p0"], "P0", "open")
    assert row["tenants"] == ["t4", "t5"]
    assert row["sla_breached"] is False


def check_story(rows: Rows, ids: dict[str, str]) -> None:
    actions = [r["action"] for r in rows]
    for expected in (
        "incident.opened",
        "incident.joined",
        "breaker.suppressed",
        "incident.escalated",
    ):
        assert expected in actions
    escalated = next(r for r in rows if r["action"] == "incident.escalated")
    assert "mass-isolation" in escalated["what"]


def check_trips(rows: Rows, ids: dict[str, str]) -> None:
    got = {r["tenant_id"]: (r["trips"], r["suppressed"]) for r in rows}
    assert got == {
        "tenant-a": (1, 0),
        "tenant-b": (1, 0),
        "tenant-p": (1, 0),
        "t4": (1, 0),
        "t5": (0, 1),
    }


def check_action_items(rows: Rows, ids: dict[str, str]) -> None:
    assert [(r["owner_team"], r["overdue"]) for r in rows] == [
        ("ingest-team", True),
        ("platform-team", False),
    ]
    assert {r["incident_id"] for r in rows} == {ids["p1"]}


def check_resolutions(rows: Rows, ids: dict[str, str]) -> None:
    got = {(r["resolved_by"], r["priority"]): r["incidents"] for r in rows}
    assert got == {("system", "P1"): 1, ("dave", "P0"): 1}


CHECKS: dict[str, Callable[[Rows, dict[str, str]], None]] = {
    "Everything that happened to tenant-a": check_tenant_history,
    "P0s acknowledged late": check_p0_late,
    "Incidents by priority per week": check_weekly,
    "Unresolved incidents": check_unresolved,
    "The audit trail of the newest incident": check_story,
    "Breaker trips": check_trips,
    "Open action items": check_action_items,
    "Resolutions per actor": check_resolutions,
}


def checker(query: str) -> Callable[[Rows, dict[str, str]], None]:
    name = title(query)
    matches = [check for prefix, check in CHECKS.items() if name.startswith(prefix)]
    assert len(matches) == 1, f"no check for the README query {name!r}: add one to CHECKS"
    return matches[0]


async def test_readme_queries_run_as_written_against_a_populated_database(
    app_client, sql, clean_db
):
    client = await app_client(
        breaker_open_seconds=0.3,
        half_open_probation_seconds=0,
        sweep_interval_seconds=0.05,
        sla_check_interval_seconds=0.05,
    )
    ids = await populate(client, sql)
    queries = readme_queries()
    assert len(queries) == len(CHECKS)
    with psycopg.connect(libpq(clean_db), autocommit=True, row_factory=dict_row) as conn:
        for query in queries:
            rows = conn.execute(query).fetchall()
            assert rows, f"no rows from {title(query)!r}"
            checker(query)(rows, ids)


@pytest.mark.parametrize("view", ["incident_summary", "tenant_history"])
def test_views_are_documented(view: str) -> None:
    text = README.read_text()
    section = text[text.index("<!-- audit-sql:start -->") : text.index("<!-- audit-sql:end -->")]
    assert f"view `{view}`" in section
