"""The dead man's switch (DESIGN.md "The truth from Alertmanager", heartbeat): the
Watchdog only moves the last-heartbeat time; silence for the timeout (from the last one,
or from the first start on the database when none was ever seen) writes heartbeat.lost
and opens a P0 "alerting pipeline silent" incident with no tenant; the next heartbeat
writes heartbeat.restored and resolves it (actor system); nothing else resolves it."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from tests.conftest import API_HEADERS, load_fixture
from tests.integration.helpers import audit_rows, firing, get_breaker, poll, post_webhook, resolved

TIMEOUT = 1.0  # seconds (default 300)


def watchdog(starts_at: str = "2026-11-22T14:00:00.000Z") -> dict[str, Any]:
    """The rule file's Watchdog as the heartbeat route delivers it (no role)."""
    body = copy.deepcopy(load_fixture("single-tenant-firing.json"))
    alert = body["alerts"][0]
    alert["labels"] = {"alertname": "Watchdog", "severity": "none"}
    alert["annotations"] = {"summary": "The alerting pipeline works"}
    alert["startsAt"] = starts_at
    del alert["fingerprint"]  # computed from the labels, as for an old Alertmanager
    body.update(
        receiver="heartbeat",
        groupLabels={"alertname": "Watchdog"},
        commonLabels=dict(alert["labels"]),
        groupKey='{}/{alertname="Watchdog"}:{alertname="Watchdog"}',
        truncatedAlerts=0,
    )
    return body


async def incidents(client: Any) -> list[dict[str, Any]]:
    resp = await client.get("/v1/incidents", headers=API_HEADERS)
    assert resp.status == 200
    return (await resp.json())["incidents"]


async def lost_incident(client: Any) -> dict[str, Any]:
    found = await poll(
        lambda: incidents(client),
        lambda found: any("pipeline silent" in i["title"] for i in found),
        within=10,
        what="the pipeline-silent incident",
    )
    return next(i for i in found if "pipeline silent" in i["title"])


async def test_never_seen_heartbeat_is_lost_after_the_timeout_from_the_first_start(app_client, sql):
    client = await app_client(
        heartbeat_timeout_seconds=TIMEOUT, slack_webhook_url="http://127.0.0.1:9/slack"
    )
    (first_start,) = sql("SELECT first_started_at FROM heartbeat_state")[0]
    incident = await lost_incident(client)
    assert (incident["priority"], incident["status"], incident["tenants"]) == ("P0", "open", [])
    assert "Watchdog" in incident["title"]
    ((actor, details),) = audit_rows(sql, "heartbeat.lost")
    assert actor == "system"
    assert details["last_heartbeat"] is None
    assert details["timeout"] == TIMEOUT
    assert details["counted_from"] == "first start of the receiver on this database"
    (opened_at,) = sql("SELECT opened_at FROM incidents")[0]
    assert (opened_at - first_start).total_seconds() >= TIMEOUT
    # Notified as any P0 (the outbox holds the message for the enabled channel).
    assert sql("SELECT DISTINCT channel, event FROM notifications") == [
        ("slack", "incident.opened")
    ]
    # Reported once, not every check.
    await asyncio.sleep(0.5)
    assert len(audit_rows(sql, "heartbeat.lost")) == 1
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["heartbeat"]["status"] == "lost", ready
    assert ready["heartbeat"]["incident"] == incident["id"]


async def test_a_heartbeat_restores_and_resolves_then_silence_counts_from_it(app_client, sql):
    client = await app_client(heartbeat_timeout_seconds=TIMEOUT)
    first = await lost_incident(client)
    out = await post_webhook(client, watchdog())
    assert out["new"] == 1 and out["breaker_transitions"] == 0
    ((actor, details),) = audit_rows(sql, "heartbeat.restored")
    assert actor == "system"
    assert details["last_heartbeat"] is None and details["timeout"] == TIMEOUT
    resolved_incident = next(i for i in await incidents(client) if i["id"] == first["id"])
    assert (resolved_incident["status"], resolved_incident["resolved_by"]) == ("resolved", "system")
    # The Watchdog is recorded as an alert like any other, with no effect.
    assert sql("SELECT alertname, tenant_id, isolating, platform FROM alerts") == [
        ("Watchdog", None, False, False)
    ]
    assert sql("SELECT count(*) FROM breakers") == [(0,)]

    # Repeats (duplicates of the same instance) keep it alive...
    for _ in range(3):
        await asyncio.sleep(TIMEOUT / 2)
        assert (await post_webhook(client, watchdog()))["duplicates"] == 1
    assert len(audit_rows(sql, "heartbeat.lost")) == 1
    # ...and silence after the last one is lost again, counted from it.
    await poll(
        lambda: asyncio.sleep(0, result=len(audit_rows(sql, "heartbeat.lost"))),
        lambda n: n == 2,
        within=10,
        what="the second heartbeat.lost",
    )
    _, details = audit_rows(sql, "heartbeat.lost")[-1]
    assert details["last_heartbeat"] is not None
    assert details["counted_from"] == "last heartbeat"
    ready = await (await client.get("/readyz")).json()
    assert ready["heartbeat"]["last_heartbeat_at"] is not None


async def test_the_silent_pipeline_incident_gathers_no_tenant_and_only_a_heartbeat_resolves_it(
    app_client, sql
):
    client = await app_client(
        heartbeat_timeout_seconds=TIMEOUT, breaker_open_seconds=0.3, half_open_probation_seconds=0.2
    )
    silent = await lost_incident(client)
    # A tenant fails and recovers meanwhile: its own incident, which resolves itself.
    await post_webhook(client, firing("tenant-a"))
    await post_webhook(client, resolved("tenant-a"))
    await poll(
        lambda: get_breaker(client, "tenant-a"), lambda b: b["state"] == "closed", what="closed"
    )
    found = await poll(
        lambda: incidents(client),
        lambda found: any(
            i["tenants"] == ["tenant-a"] and i["status"] == "resolved" for i in found
        ),
        what="tenant-a's incident to resolve",
    )
    still = next(i for i in found if i["id"] == silent["id"])
    assert (still["status"], still["tenants"]) == ("open", [])
    assert sql("SELECT count(*) FROM incident_tenants WHERE incident_id = %s", silent["id"]) == [
        (0,)
    ]


async def test_a_heartbeat_off_does_nothing(app_client, sql):
    client = await app_client(heartbeat_timeout_seconds=0)
    await asyncio.sleep(0.5)
    assert sql("SELECT count(*) FROM heartbeat_state") == [(0,)]
    await post_webhook(client, watchdog())
    ready = await (await client.get("/readyz")).json()
    assert ready["heartbeat"]["status"] == "off"
    assert audit_rows(sql, "heartbeat.restored") == []


def _readme_truth_queries() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("<!-- truth-sql:start -->") : text.index("<!-- truth-sql:end -->")]
    return [block.split("```", 1)[0] for block in section.split("```sql")[1:]]


async def test_the_readmes_heartbeat_and_reconciliation_queries_run(app_client, sql):
    client = await app_client(heartbeat_timeout_seconds=TIMEOUT)
    await lost_incident(client)
    await post_webhook(client, watchdog())
    reconciled_query, heartbeat_query = _readme_truth_queries()
    assert sql(reconciled_query) == []  # nothing reconciled here (test_truth_reconcile does)
    rows = sql(heartbeat_query)
    assert [r[1] for r in rows] == ["heartbeat.lost", "heartbeat.restored"]
    assert rows[0][2] is not None and rows[0][4] == str(TIMEOUT)
