"""Incidents through HTTP against a real PostgreSQL: priorities, correlation, escalation,
acknowledge and resolve, auto-resolve after recovery, postmortems, analytics, the SLA
check, notifications in the outbox, tenant health, and refused input."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from receiver.domain.incident import parse_incident_id
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS

T = TypeVar("T")
RUNBOOK = "https://runbooks.example/tenant-error-rate"
MANY = {"max_isolated_percent": 100}  # no mass-isolation guard in the counting tests


# --- payloads and calls ---------------------------------------------------------------------


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


STARTS = rfc3339(datetime.now(UTC) - timedelta(minutes=3))


def alert(
    tenant: str | None,
    *,
    status: str = "firing",
    isolate: bool = True,
    alertname: str = "TenantErrorRateHigh",
    platform: bool = False,
    starts_at: str = STARTS,
) -> dict[str, Any]:
    labels = {"alertname": alertname, "severity": "critical"}
    if tenant:
        labels["tenant_id"] = tenant
    if isolate and tenant:
        labels["isolate"] = "true"
    if platform:
        labels["scope"] = "platform"
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{alertname} {tenant or 'platform'}", "runbook_url": RUNBOOK},
        "startsAt": starts_at,
        "endsAt": rfc3339(datetime.now(UTC)) if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "receiver": "breaker",
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": list(alerts),
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
    }


async def webhook(client: Any, *alerts: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/alertmanager", json=payload(*alerts), headers=WEBHOOK_HEADERS)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def trip(client: Any, *tenants: str) -> list[str]:
    out = await webhook(client, *(alert(t) for t in tenants))
    return out["incidents"]


async def call(client: Any, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
    resp = await client.request(method, path, json=body, headers=API_HEADERS)
    assert resp.status == expect, f"{method} {path}: {resp.status} {await resp.text()}"
    if resp.content_type == "application/json":
        return await resp.json()
    return await resp.text()


async def register(client: Any, tenant: str, tier: str, **extra: Any) -> None:
    await call(client, "PUT", f"/v1/tenants/{tenant}", {"tier": tier, **extra})


async def incident(client: Any, incident_id: str) -> dict[str, Any]:
    return await call(client, "GET", f"/v1/incidents/{incident_id}")


async def timeline(client: Any, incident_id: str) -> list[dict[str, Any]]:
    return (await call(client, "GET", f"/v1/incidents/{incident_id}/timeline"))["timeline"]


async def only_incident(client: Any) -> dict[str, Any]:
    listed = (await call(client, "GET", "/v1/incidents"))["incidents"]
    assert len(listed) == 1, listed
    return await incident(client, listed[0]["id"])


async def poll(
    probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, within: float = 15.0
) -> T:
    deadline = time.monotonic() + within
    while True:
        last = await probe()
        if until(last):
            return last
        assert time.monotonic() < deadline, f"timed out; last: {last!r}"
        await asyncio.sleep(0.05)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def actions(rows: list[dict[str, Any]]) -> list[str]:
    return [r["action"] for r in rows]


# --- opening and priorities -------------------------------------------------------------------


async def test_a_trip_opens_an_incident_with_an_id_priority_and_sla(client, sql):
    await register(client, "tenant-a", "bronze", name="Tenant A")
    ids = await trip(client, "tenant-a")
    assert len(ids) == 1
    (incident_id,) = ids
    assert re.fullmatch(r"INC-[0-9]{8}-0001", incident_id)
    day, _ = parse_incident_id(incident_id)
    assert day == datetime.now(UTC).date()

    got = await incident(client, incident_id)
    assert (got["priority"], got["status"]) == ("P2", "open")
    assert at(got["ack_due_at"]) - at(got["opened_at"]) == timedelta(hours=8)  # bronze
    assert got["sla"]["breached"] is False
    (tenant,) = got["tenants"]
    assert tenant["tenant_id"] == "tenant-a"
    assert (tenant["tier"], tenant["name"], tenant["cause"]) == ("bronze", "Tenant A", "tripped")
    assert tenant["breaker_state"] == "open"
    (linked,) = got["alerts"]
    assert (linked["alertname"], linked["tenant_id"], linked["status"]) == (
        "TenantErrorRateHigh",
        "tenant-a",
        "firing",
    )
    assert got["runbook_urls"] == [RUNBOOK]
    # The alerts fired at least 3 min before the test (STARTS), when Prometheus fired them.
    detect = got["durations"]["time_to_detect_seconds"]
    assert 180 <= detect < 3600
    assert at(got["durations"]["first_alert_at"]) == at(STARTS)

    # The audit log tells it, the breaker's own rows included (tagged with the incident).
    rows = await timeline(client, incident_id)
    assert {"incident.opened", "incident.joined", "breaker.transition", "alert.fired"} <= set(
        actions(rows)
    )
    opened = next(r for r in rows if r["action"] == "incident.opened")
    assert opened["actor"] == "system"
    assert opened["details"]["priority"] == "P2"
    assert "reason" in opened["details"]
    assert sql("SELECT incident_id, tenant_id FROM incident_tenants") == [(incident_id, "tenant-a")]


async def test_an_unregistered_tenant_counts_as_bronze(client):
    (incident_id,) = await trip(client, "stranger")
    got = await incident(client, incident_id)
    assert got["priority"] == "P2"
    assert got["tenants"][0]["tier"] is None
    assert got["tenants"][0]["sla_tier"] == "bronze"
    assert at(got["ack_due_at"]) - at(got["opened_at"]) == timedelta(hours=8)


@pytest.mark.parametrize(
    ("tier", "priority", "sla"),
    [
        ("platinum", "P0", timedelta(minutes=15)),
        ("gold", "P1", timedelta(minutes=60)),
        ("silver", "P2", timedelta(hours=4)),
        ("bronze", "P2", timedelta(hours=8)),
    ],
)
async def test_priority_and_sla_from_the_tier(client, tier, priority, sla):
    await register(client, "acme", tier)
    (incident_id,) = await trip(client, "acme")
    got = await incident(client, incident_id)
    assert got["priority"] == priority
    assert at(got["ack_due_at"]) - at(got["opened_at"]) == sla


@pytest.mark.parametrize(
    ("count", "priority", "sla"),
    [
        (4, "P2", timedelta(hours=8)),
        (5, "P1", timedelta(hours=8)),  # by count: the bronze SLA still applies
        (9, "P1", timedelta(hours=8)),
        (10, "P0", timedelta(minutes=15)),  # P0 by count: 15 min
    ],
)
async def test_priority_from_the_number_of_tenants(app_client, count, priority, sla):
    client = await app_client(**MANY)
    ids = await trip(client, *(f"t{i:02d}" for i in range(count)))
    assert len(ids) == 1
    got = await incident(client, ids[0])
    assert got["priority"] == priority
    assert len(got["tenants"]) == count
    assert at(got["ack_due_at"]) - at(got["opened_at"]) == sla


async def test_a_platform_alert_opens_a_p0_and_resolving_it_resolves_the_incident(client, sql):
    fired = await webhook(client, alert(None, alertname="PlatformDown", platform=True))
    (incident_id,) = fired["incidents"]
    got = await incident(client, incident_id)
    assert got["priority"] == "P0"
    assert got["tenants"] == []
    assert at(got["ack_due_at"]) - at(got["opened_at"]) == timedelta(minutes=15)
    assert got["title"] == "Platform alert PlatformDown firing"
    assert [a["platform"] for a in got["alerts"]] == [True]

    # A repeat of the same instance changes nothing; its resolution ends the incident.
    assert (await webhook(client, alert(None, alertname="PlatformDown", platform=True)))[
        "incidents"
    ] == []
    await webhook(client, alert(None, alertname="PlatformDown", platform=True, status="resolved"))
    got = await incident(client, incident_id)
    assert (got["status"], got["resolved_by"]) == ("resolved", "system")


async def test_a_platform_alert_joining_a_tenant_incident_escalates_it_to_p0(client):
    (incident_id,) = await trip(client, "tenant-a")
    assert (await incident(client, incident_id))["priority"] == "P2"
    await webhook(client, alert(None, alertname="PlatformDown", platform=True))
    got = await incident(client, incident_id)
    assert got["priority"] == "P0"
    (escalated,) = [
        r for r in await timeline(client, incident_id) if r["action"] == "incident.escalated"
    ]
    assert (escalated["details"]["from"], escalated["details"]["to"]) == ("P2", "P0")
    assert "platform" in escalated["details"]["reason"]

    # The platform alert resolves (tenant-a is still isolated, so the incident stays
    # open) and fires again: the new instance belongs to the same incident.
    await webhook(client, alert(None, alertname="PlatformDown", platform=True, status="resolved"))
    assert (await incident(client, incident_id))["status"] == "open"
    again = rfc3339(datetime.now(UTC))
    out = await webhook(
        client, alert(None, alertname="PlatformDown", platform=True, starts_at=again)
    )
    assert out["incidents"] == [incident_id]
    assert len((await incident(client, incident_id))["alerts"]) == 3


# --- correlation and escalation ------------------------------------------------------------------


async def test_two_tenants_correlate_and_a_gold_tenant_joining_escalates(app_client, sql):
    client = await app_client(**MANY)
    for tenant, tier in (("tenant-a", "bronze"), ("tenant-b", "silver"), ("tenant-g", "gold")):
        await register(client, tenant, tier)

    (first,) = await trip(client, "tenant-a")
    assert await trip(client, "tenant-b") == [first]  # within the window: joins
    got = await incident(client, first)
    assert [t["tenant_id"] for t in got["tenants"]] == ["tenant-a", "tenant-b"]
    assert got["priority"] == "P2"
    assert at(got["ack_due_at"]) - at(got["opened_at"]) == timedelta(hours=4)  # silver now

    assert await trip(client, "tenant-g") == [first]
    got = await incident(client, first)
    assert got["priority"] == "P1"
    assert at(got["ack_due_at"]) - at(got["opened_at"]) == timedelta(minutes=60)
    rows = await timeline(client, first)
    joined = [r for r in rows if r["action"] == "incident.joined"]
    assert [r["tenant_id"] for r in joined] == ["tenant-a", "tenant-b", "tenant-g"]
    # Each says what the incident was once the tenant had joined.
    assert [r["details"]["priority"] for r in joined] == ["P2", "P2", "P1"]
    assert [r["details"]["tier"] for r in joined] == ["bronze", "silver", "gold"]
    assert joined[2]["details"]["ack_due_at"] == got["ack_due_at"]
    (escalated,) = [r for r in rows if r["action"] == "incident.escalated"]
    assert escalated["actor"] == "system"
    assert (escalated["details"]["from"], escalated["details"]["to"]) == ("P2", "P1")
    assert "tenant-g" in escalated["details"]["reason"]
    assert "gold" in escalated["details"]["reason"]
    assert sql("SELECT count(*) FROM incidents") == [(1,)]

    # Never de-escalates by itself: the gold tenant recovering leaves the incident at P1.
    await call(
        client,
        "POST",
        "/v1/tenants/tenant-g/breaker",
        {"action": "force_close", "reason": "recovered", "actor": "alice"},
    )
    assert (await incident(client, first))["priority"] == "P1"


async def test_a_tenant_failing_after_the_window_opens_a_new_incident(app_client):
    client = await app_client(correlation_window_seconds=0, **MANY)
    (first,) = await trip(client, "tenant-a")
    (second,) = await trip(client, "tenant-b")
    assert first != second
    assert first.endswith("-0001") and second.endswith("-0002")


async def test_a_suppressed_trip_joins_and_escalates_to_p0(client, sql):
    # Five known tenants, 20 %: one may be isolated at a time.
    for t in ("t1", "t2", "t3", "t4", "t5"):
        await register(client, t, "bronze")
    (incident_id,) = await trip(client, "t1")
    assert (await incident(client, incident_id))["priority"] == "P2"
    assert await trip(client, "t2") == [incident_id]
    got = await incident(client, incident_id)
    assert got["priority"] == "P0"
    causes = {t["tenant_id"]: (t["cause"], t["breaker_state"]) for t in got["tenants"]}
    assert causes == {"t1": ("tripped", "open"), "t2": ("suppressed", "closed")}
    rows = await timeline(client, incident_id)
    assert "breaker.suppressed" in actions(rows)
    (escalated,) = [r for r in rows if r["action"] == "incident.escalated"]
    assert "mass-isolation" in escalated["details"]["reason"]

    # t1 recovering is not enough: t2 is still failing (its alert fires), unisolated.
    await call(
        client,
        "POST",
        "/v1/tenants/t1/breaker",
        {"action": "force_close", "reason": "ok", "actor": "alice"},
    )
    assert (await incident(client, incident_id))["status"] == "open"
    await webhook(client, alert("t2", status="resolved"))
    got = await incident(client, incident_id)
    assert (got["status"], got["resolved_by"]) == ("resolved", "system")


async def test_tenant_alerts_without_isolate_are_linked_to_the_tenants_open_incident(client, sql):
    (incident_id,) = await trip(client, "tenant-a")
    out = await webhook(client, alert("tenant-a", isolate=False, alertname="TenantLatencyHigh"))
    assert out["incidents"] == [incident_id]
    got = await incident(client, incident_id)
    assert sorted(a["alertname"] for a in got["alerts"]) == [
        "TenantErrorRateHigh",
        "TenantLatencyHigh",
    ]
    (linked,) = [
        r for r in await timeline(client, incident_id) if r["action"] == "incident.alert_linked"
    ]
    assert (linked["tenant_id"], linked["details"]["alertname"]) == (
        "tenant-a",
        "TenantLatencyHigh",
    )
    assert got["status"] == "open"
    assert got["priority"] == "P2"

    # A tenant without an open incident: recorded, linked to nothing, opens nothing.
    out = await webhook(client, alert("tenant-z", isolate=False, alertname="TenantLatencyHigh"))
    assert out["incidents"] == []
    assert sql("SELECT count(*) FROM incidents") == [(1,)]


async def test_concurrent_trips_correlate_into_one_incident(app_client, sql):
    client = await app_client(**MANY)
    outs = await asyncio.gather(*(webhook(client, alert(f"c{i}")) for i in range(8)))
    ids = {i for out in outs for i in out["incidents"]}
    assert len(ids) == 1
    assert sql("SELECT count(*) FROM incident_tenants") == [(8,)]
    assert sql("SELECT priority FROM incidents") == [("P1",)]  # 8 tenants


async def test_incident_ids_are_unique_under_concurrency(app_client, sql):
    client = await app_client(correlation_window_seconds=0, **MANY)
    outs = await asyncio.gather(*(webhook(client, alert(f"u{i}")) for i in range(12)))
    ids = [i for out in outs for i in out["incidents"]]
    assert len(ids) == len(set(ids)) == 12
    assert sorted(int(i[-4:]) for i in ids) == list(range(1, 13))


# --- people: acknowledge and resolve ------------------------------------------------------------


async def test_acknowledge_and_resolve_with_actors_and_notes_in_the_timeline(client, sql):
    await register(client, "acme", "gold")
    (incident_id,) = await trip(client, "acme")
    path = f"/v1/incidents/{incident_id}"

    acked = await call(client, "POST", f"{path}/acknowledge", {"actor": "alice", "note": "on it"})
    assert (acked["status"], acked["acknowledged_by"]) == ("acknowledged", "alice")
    assert acked["sla_breached"] is False
    resolved = await call(client, "POST", f"{path}/resolve", {"actor": "bob", "note": "fixed"})
    assert (resolved["status"], resolved["resolved_by"]) == ("resolved", "bob")

    rows = await timeline(client, incident_id)
    ack = next(r for r in rows if r["action"] == "incident.acknowledged")
    res = next(r for r in rows if r["action"] == "incident.resolved")
    assert (ack["actor"], ack["details"]["note"]) == ("alice", "on it")
    assert ack["details"]["within_sla"] is True
    assert (res["actor"], res["details"]["note"]) == ("bob", "fixed")
    assert [r["occurred_at"] for r in rows] == sorted(r["occurred_at"] for r in rows)

    got = await incident(client, incident_id)
    assert got["durations"]["time_to_acknowledge_seconds"] >= 0
    assert (
        got["durations"]["time_to_resolve_seconds"]
        >= got["durations"]["time_to_acknowledge_seconds"]
    )
    # A manually resolved incident stays resolved while the breaker recovers.
    assert got["tenants"][0]["breaker_state"] == "open"


async def test_lifecycle_conflicts_change_nothing(client, sql):
    (incident_id,) = await trip(client, "acme")
    path = f"/v1/incidents/{incident_id}"
    await call(client, "POST", f"{path}/acknowledge", {"actor": "alice"})
    before = sql("SELECT count(*) FROM audit_log")
    row = sql("SELECT * FROM incidents")

    err = await call(client, "POST", f"{path}/acknowledge", {"actor": "carol"}, expect=409)
    assert err["error"] == "conflict"
    assert "already acknowledged" in err["detail"]
    await call(client, "POST", f"{path}/resolve", {"actor": "bob"})
    after_resolve = sql("SELECT count(*) FROM audit_log")
    row = sql("SELECT * FROM incidents")
    err = await call(client, "POST", f"{path}/resolve", {"actor": "bob"}, expect=409)
    assert "already resolved" in err["detail"]
    err = await call(client, "POST", f"{path}/acknowledge", {"actor": "carol"}, expect=409)
    assert "already resolved" in err["detail"]
    assert sql("SELECT * FROM incidents") == row
    assert sql("SELECT count(*) FROM audit_log") == after_resolve
    assert before[0][0] + 1 == after_resolve[0][0]


@pytest.mark.parametrize(
    ("suffix", "body", "status", "error"),
    [
        ("/acknowledge", {"actor": "alice", "note": "x" * 2001}, 422, "invalid_payload"),
        ("/acknowledge", {"actor": "", "note": "hi"}, 422, "invalid_payload"),
        ("/acknowledge", {"actor": "a" * 101}, 422, "invalid_payload"),
        ("/acknowledge", {"note": "who?"}, 422, "invalid_payload"),
        ("/acknowledge", {"actor": "alice", "colour": "red"}, 422, "invalid_payload"),
        ("/resolve", {"actor": "alice\u0000"}, 422, "invalid_payload"),
        ("/resolve", {"actor": "alice", "note": 7}, 422, "invalid_payload"),
        ("/resolve", [], 422, "invalid_payload"),
    ],
)
async def test_bad_lifecycle_input_is_refused_and_changes_nothing(
    client, sql, suffix, body, status, error
):
    (incident_id,) = await trip(client, "acme")
    before = (sql("SELECT * FROM incidents"), sql("SELECT count(*) FROM audit_log"))
    err = await call(client, "POST", f"/v1/incidents/{incident_id}{suffix}", body, expect=status)
    assert err["error"] == error
    assert err["detail"]
    assert (sql("SELECT * FROM incidents"), sql("SELECT count(*) FROM audit_log")) == before


async def test_a_note_of_exactly_the_limit_is_accepted(client):
    (incident_id,) = await trip(client, "acme")
    await call(
        client,
        "POST",
        f"/v1/incidents/{incident_id}/acknowledge",
        {"actor": "alice", "note": "x" * 2000},
    )


async def test_not_json_is_a_400(client):
    (incident_id,) = await trip(client, "acme")
    resp = await client.post(
        f"/v1/incidents/{incident_id}/acknowledge",
        data=b"{not json",
        headers={**API_HEADERS, "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_input"


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("GET", "/timeline", None),
        ("GET", "/postmortem", None),
        ("PUT", "/postmortem", {"actor": "alice"}),
        ("POST", "/acknowledge", {"actor": "alice"}),
        ("POST", "/resolve", {"actor": "alice"}),
    ],
)
@pytest.mark.parametrize(
    "incident_id",
    ["INC-20261124-0042", "INC-20261124-42", "inc-20261124-0001", "INC-20261399-0001", "nope"],
)
async def test_unknown_or_malformed_ids_are_404(client, sql, method, suffix, body, incident_id):
    err = await call(client, method, f"/v1/incidents/{incident_id}{suffix}", body, expect=404)
    assert err["error"] == "not_found"
    assert sql("SELECT count(*) FROM audit_log") == [(0,)]


async def test_incident_endpoints_need_the_api_token(client):
    for method, path in (("GET", "/v1/incidents"), ("GET", "/v1/analytics/incidents")):
        resp = await client.request(method, path)
        assert resp.status == 401
        resp = await client.request(method, path, headers=WEBHOOK_HEADERS)
        assert resp.status == 401


# --- auto-resolve -----------------------------------------------------------------------------


async def test_auto_resolves_after_the_alert_resolves_and_the_breaker_closes(app_client, sql):
    client = await app_client(
        breaker_open_seconds=0.3, half_open_probation_seconds=0, sweep_interval_seconds=0.05
    )
    await register(client, "tenant-a", "silver", hourly_cost=100)
    await register(client, "tenant-b", "bronze", hourly_cost=300)
    (incident_id,) = await trip(client, "tenant-a")
    await webhook(client, alert("tenant-a", status="resolved"))
    got = await poll(lambda: incident(client, incident_id), lambda i: i["status"] == "resolved")
    assert got["resolved_by"] == "system"
    assert got["tenants"][0]["breaker_state"] == "closed"

    rows = await timeline(client, incident_id)
    moves = [
        (r["details"]["from"], r["details"]["to"])
        for r in rows
        if r["action"] == "breaker.transition"
    ]
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    resolved_row = next(r for r in rows if r["action"] == "incident.resolved")
    assert resolved_row["actor"] == "system"
    assert resolved_row["details"]["automatic"] is True
    assert actions(rows).index("incident.resolved") > actions(rows).index("breaker.transition")

    # Cost: isolated from the trip until the breaker closed, priced by the tenant's rate;
    # the whole platform (both tenants) down for as long would have cost 4 times more.
    cost = got["cost"]
    isolated = got["tenants"][0]["isolated_hours"]
    assert 0.3 / 3600 <= isolated < 10 / 3600
    assert cost["contained"] == pytest.approx(100 * isolated)
    assert cost["platform_hourly_cost"] == 400
    assert cost["uncontained"] == pytest.approx(400 * cost["hours"])


async def test_auto_resolves_when_probes_close_the_breaker(app_client):
    client = await app_client(breaker_open_seconds=0.2, half_open_probes=2)
    (incident_id,) = await trip(client, "tenant-a")
    await asyncio.sleep(0.25)
    resp = await call(client, "POST", "/v1/tenants/tenant-a/outcomes", {"success": 2, "failure": 0})
    assert resp["state"] == "closed"
    got = await incident(client, incident_id)
    assert (got["status"], got["resolved_by"]) == ("resolved", "system")


async def test_waits_for_every_tenant_and_counts_forced_closed_as_closed(app_client):
    client = await app_client(**MANY)
    (incident_id,) = await trip(client, "tenant-a", "tenant-b")
    await call(
        client,
        "POST",
        "/v1/tenants/tenant-a/breaker",
        {"action": "force_close", "reason": "healthy", "actor": "alice"},
    )
    assert (await incident(client, incident_id))["status"] == "open"
    await call(
        client,
        "POST",
        "/v1/tenants/tenant-b/breaker",
        {"action": "force_close", "reason": "healthy", "actor": "alice"},
    )
    got = await incident(client, incident_id)
    assert (got["status"], got["resolved_by"]) == ("resolved", "system")
    # The operator's overrides are part of the incident's record.
    assert "breaker.override" in actions(await timeline(client, incident_id))


async def test_a_failure_after_resolution_opens_a_new_incident(app_client, sql):
    client = await app_client(breaker_open_seconds=0.2, half_open_probes=1)
    (first,) = await trip(client, "tenant-a")
    await call(client, "POST", f"/v1/incidents/{first}/resolve", {"actor": "bob"})
    await asyncio.sleep(0.25)
    await call(client, "POST", "/v1/tenants/tenant-a/outcomes", {"success": 1, "failure": 0})
    # The breaker closed after the incident was resolved: that row is not the incident's.
    rows = await timeline(client, first)
    assert [r["details"]["to"] for r in rows if r["action"] == "breaker.transition"] == ["open"]

    again = await webhook(client, alert("tenant-a", starts_at=rfc3339(datetime.now(UTC))))
    (second,) = again["incidents"]
    assert second != first
    assert sql("SELECT id, status FROM incidents ORDER BY id") == [
        (first, "resolved"),
        (second, "open"),
    ]


# --- postmortem ---------------------------------------------------------------------------------

POSTMORTEM = {
    "actor": "alice",
    "root_cause": "A tenant's batch job sent malformed documents that crashed the parser.",
    "five_whys": [
        "Why did tenant-a fail? The parser crashed on its documents.",
        "Why did the parser crash? It did not validate input size.",
        "Why no validation? The limit was never specified.",
    ],
    "action_items": [
        {"description": "Validate document size", "owner_team": "ingest-team", "due": "2026-12-15"},
        {
            "description": "Alert on parser crashes",
            "owner_team": "SRE",
            "due": "2026-12-31",
            "status": "in progress",
        },
    ],
    "what_went_well": ["The breaker isolated tenant-a within a minute."],
    "false_positive": False,
}


async def test_postmortem_names_tenants_timeline_whys_and_action_items(client, sql):
    await register(client, "tenant-a", "gold", name="Acme Corp", hourly_cost=120)
    (incident_id,) = await trip(client, "tenant-a")
    path = f"/v1/incidents/{incident_id}"
    await call(client, "POST", f"{path}/acknowledge", {"actor": "alice", "note": "looking"})
    await call(client, "POST", f"{path}/resolve", {"actor": "bob", "note": "parser fixed"})
    stored = await call(client, "PUT", f"{path}/postmortem", POSTMORTEM)
    assert stored["five_whys"] == POSTMORTEM["five_whys"]
    assert [a["owner_team"] for a in stored["action_items"]] == ["ingest-team", "SRE"]
    assert stored["action_items"][0]["status"] == "open"
    assert stored["updated_by"] == "alice"

    resp = await client.get(f"{path}/postmortem", headers=API_HEADERS)
    assert resp.status == 200
    assert resp.content_type == "text/markdown"
    md = await resp.text()
    assert md.startswith(f"# Postmortem: {incident_id}")
    for section in (
        "## Summary",
        "## Impact",
        "## Timeline",
        "## Detection and response",
        "## Root cause",
        "## Five whys",
        "## Action items",
        "## What went well",
    ):
        assert section in md
    assert "Acme Corp (tenant-a)" in md and "gold" in md
    assert "by alice" in md and "by bob" in md
    assert "incident.acknowledged" in md and "breaker.transition" in md
    for why in POSTMORTEM["five_whys"]:
        assert why in md
    assert "| Validate document size | ingest-team | 2026-12-15 | open |" in md
    assert "| Alert on parser crashes | SRE | 2026-12-31 | in progress |" in md
    assert "The breaker isolated tenant-a within a minute." in md
    assert re.search(r"Time to detect:\*\* \d+ min( \d+ s)? \(first alert fired", md)
    assert RUNBOOK in md

    # Stored fields show on the incident too; the update is audited.
    assert (await incident(client, incident_id))["postmortem"]["root_cause"] == POSTMORTEM[
        "root_cause"
    ]
    assert sql("SELECT actor FROM audit_log WHERE action = 'incident.postmortem_updated'") == [
        ("alice",)
    ]
    assert sql("SELECT owner_team, due::text FROM action_items ORDER BY position") == [
        ("ingest-team", "2026-12-15"),
        ("SRE", "2026-12-31"),
    ]


async def test_an_unwritten_postmortem_still_renders(client):
    (incident_id,) = await trip(client, "tenant-a")
    md = await call(client, "GET", f"/v1/incidents/{incident_id}/postmortem")
    assert "_Not yet filled in." in md
    assert "tenant-a" in md


@pytest.mark.parametrize(
    ("items", "status", "message"),
    [
        ([{"description": "x", "owner_team": "@alice", "due": "2026-12-01"}], 400, "not a person"),
        ([{"description": "x", "owner_team": "bob@example.com", "due": "2026-12-01"}], 400, "team"),
        ([{"description": "x", "owner_team": "sre"}], 400, "due is required"),
        ([{"description": "x", "owner_team": "sre", "due": "01/12/2026"}], 400, "ISO date"),
        ([{"owner_team": "sre", "due": "2026-12-01"}], 400, "description is required"),
        (["fix it"], 400, "must be an object"),
        ([{"description": "x", "owner_team": "sre", "due": "2026-12-01"}] * 51, 400, "too many"),
        ("fix it", 422, "action_items"),
    ],
)
async def test_malformed_action_items_are_refused_and_nothing_is_stored(
    client, sql, items, status, message
):
    (incident_id,) = await trip(client, "tenant-a")
    path = f"/v1/incidents/{incident_id}/postmortem"
    await call(client, "PUT", path, POSTMORTEM)
    before = (
        sql("SELECT * FROM postmortems"),
        sql("SELECT * FROM action_items ORDER BY id"),
        sql("SELECT count(*) FROM audit_log"),
    )
    err = await call(
        client,
        "PUT",
        path,
        {**POSTMORTEM, "root_cause": "changed", "action_items": items},
        expect=status,
    )
    assert message in err["detail"]
    after = (
        sql("SELECT * FROM postmortems"),
        sql("SELECT * FROM action_items ORDER BY id"),
        sql("SELECT count(*) FROM audit_log"),
    )
    assert after == before


async def test_bad_postmortem_fields_are_422(client, sql):
    (incident_id,) = await trip(client, "tenant-a")
    path = f"/v1/incidents/{incident_id}/postmortem"
    for body in (
        {**POSTMORTEM, "five_whys": ["why?"] * 11},
        {**POSTMORTEM, "false_positive": "yes"},
        {**POSTMORTEM, "actor": ""},
        {**POSTMORTEM, "root_cause": "x" * 10_001},
        {k: v for k, v in POSTMORTEM.items() if k != "actor"},
    ):
        await call(client, "PUT", path, body, expect=422)
    assert sql("SELECT count(*) FROM postmortems") == [(0,)]


# --- analytics ----------------------------------------------------------------------------------


async def test_analytics_report_mtta_mttr_counts_breaches_and_trips(app_client, sql):
    client = await app_client(correlation_window_seconds=0, **MANY)
    await register(client, "gold-1", "gold")
    (p1,) = await trip(client, "gold-1")
    (p2,) = await trip(client, "bronze-1")
    (p2b,) = await trip(client, "bronze-2")
    await call(client, "POST", f"/v1/incidents/{p1}/acknowledge", {"actor": "alice"})
    await call(client, "POST", f"/v1/incidents/{p1}/resolve", {"actor": "alice"})
    await call(client, "POST", f"/v1/incidents/{p2}/resolve", {"actor": "bob"})
    await call(
        client, "PUT", f"/v1/incidents/{p2}/postmortem", {**POSTMORTEM, "false_positive": True}
    )
    # p2b: pretend it has waited past its SLA, unacknowledged.
    sql("UPDATE incidents SET ack_due_at = now() - interval '1 minute' WHERE id = %s", p2b)

    out = await call(client, "GET", "/v1/analytics/incidents")
    assert out["incidents"] == 3
    assert out["counts_by_priority"] == {"P0": 0, "P1": 1, "P2": 2}
    assert out["counts_by_status"] == {"open": 1, "acknowledged": 0, "resolved": 2}
    times = sql("SELECT id, seconds_to_acknowledge, seconds_to_resolve FROM incident_summary")
    by_id = {i: (a, r) for i, a, r in times}
    assert out["mtta_seconds"] == pytest.approx(by_id[p1][0])
    assert out["mttr_seconds"] == pytest.approx((by_id[p1][1] + by_id[p2][1]) / 2)
    assert out["by_priority"]["P1"]["mtta_seconds"] == pytest.approx(by_id[p1][0])
    assert out["sla_breaches"] == 1
    assert out["false_positives"] == 1
    assert out["false_positive_rate"] == pytest.approx(1 / 3)
    assert out["breaker_trips_by_tenant"] == {"bronze-1": 1, "bronze-2": 1, "gold-1": 1}


async def test_analytics_period_and_bad_parameters(client):
    await trip(client, "tenant-a")
    soon = datetime.now(UTC) + timedelta(hours=1)
    out = await call(
        client,
        "GET",
        f"/v1/analytics/incidents?since={rfc3339(soon)}&until={rfc3339(soon + timedelta(days=1))}",
    )
    assert (out["incidents"], out["mtta_seconds"], out["breaker_trips_by_tenant"]) == (0, None, {})
    assert out["false_positive_rate"] is None
    await call(client, "GET", "/v1/analytics/incidents?since=yesterday", expect=422)
    await call(client, "GET", "/v1/analytics/incidents?since=2026-01-01T00:00:00", expect=422)
    await call(
        client,
        "GET",
        f"/v1/analytics/incidents?since={rfc3339(soon)}&until={rfc3339(soon - timedelta(days=1))}",
        expect=400,
    )


# --- listing ------------------------------------------------------------------------------------


async def test_list_filters_by_status_priority_tenant_and_time(app_client):
    client = await app_client(correlation_window_seconds=0, **MANY)
    await register(client, "plat", "platinum")
    (a,) = await trip(client, "tenant-a")
    (p,) = await trip(client, "plat")
    await call(client, "POST", f"/v1/incidents/{a}/acknowledge", {"actor": "alice"})

    async def ids(query: str) -> list[str]:
        return [i["id"] for i in (await call(client, "GET", f"/v1/incidents{query}"))["incidents"]]

    assert await ids("") == [p, a]  # newest first
    assert await ids("?status=acknowledged") == [a]
    assert await ids("?status=open") == [p]
    assert await ids("?priority=P0") == [p]
    assert await ids("?tenant=tenant-a") == [a]
    assert await ids("?tenant=nobody") == []
    assert await ids("?limit=1") == [p]
    hour = timedelta(hours=1)
    assert await ids(f"?since={rfc3339(datetime.now(UTC) - hour)}") == [p, a]
    assert await ids(f"?until={rfc3339(datetime.now(UTC) - hour)}") == []
    listed = (await call(client, "GET", "/v1/incidents?tenant=plat"))["incidents"][0]
    assert listed["tenants"] == ["plat"] and listed["priority"] == "P0"
    for bad in ("?status=closed", "?priority=P3", "?since=monday", "?limit=0", "?tenant=%0Ax"):
        err = await call(client, "GET", f"/v1/incidents{bad}", expect=422)
        assert err["error"] == "invalid_payload"


# --- SLA check and notifications -----------------------------------------------------------------


async def test_sla_breach_is_flagged_audited_and_notified_once(app_client, sql):
    client = await app_client(
        sla_check_interval_seconds=0.05,
        slack_webhook_url="http://127.0.0.1:9/never",
        public_url="https://receiver.example",
    )
    await register(client, "acme", "platinum")
    (incident_id,) = await trip(client, "acme")
    assert sql("SELECT sla_breached_at FROM incidents") == [(None,)]
    # Fifteen minutes cannot pass in a test: move the due time into the past instead.
    sql("UPDATE incidents SET ack_due_at = now() - interval '1 second' WHERE id = %s", incident_id)

    got = await poll(lambda: incident(client, incident_id), lambda i: i["sla"]["breached_at"])
    assert got["sla"]["breached"] is True
    await asyncio.sleep(0.3)  # several more checks: still one flag, one audit row
    rows = sql("SELECT actor, details FROM audit_log WHERE action = 'sla.breached'")
    assert len(rows) == 1
    actor, details = rows[0]
    assert actor == "system"
    assert "due" in details
    assert sql("SELECT channel FROM notifications WHERE event = 'sla.breached'") == [("slack",)]

    # Acknowledging late is recorded as such.
    await call(client, "POST", f"/v1/incidents/{incident_id}/acknowledge", {"actor": "carol"})
    assert sql(
        "SELECT details->>'within_sla' FROM audit_log WHERE action = 'incident.acknowledged'"
    ) == [("false",)]


async def test_notifications_are_queued_with_the_incident_for_each_event(app_client, sql):
    client = await app_client(
        slack_webhook_url="http://127.0.0.1:9/never",
        public_url="https://receiver.example/",
        outbox_poll_seconds=60,  # keep the worker off the rows while we read them
        **MANY,
    )
    await register(client, "tenant-a", "bronze", name="A Corp", admin_email="ops@a.example")
    await register(client, "tenant-g", "gold")
    (incident_id,) = await trip(client, "tenant-a")
    await trip(client, "tenant-g")
    path = f"/v1/incidents/{incident_id}"
    await call(client, "POST", f"{path}/acknowledge", {"actor": "alice", "note": "mine"})
    await call(client, "POST", f"{path}/resolve", {"actor": "bob"})

    rows = sql("SELECT event, channel, message FROM notifications ORDER BY id")
    assert [(e, c) for e, c, _ in rows] == [
        ("incident.opened", "slack"),
        ("incident.escalated", "slack"),
        ("incident.acknowledged", "slack"),
        ("incident.resolved", "slack"),
    ]
    opened, escalated, acked, resolved = (m for _, _, m in rows)
    assert opened["incident_url"] == f"https://receiver.example/v1/incidents/{incident_id}"
    assert opened["priority"] == "P2"
    assert opened["tenants"] == [
        {
            "tenant_id": "tenant-a",
            "tier": "bronze",
            "name": "A Corp",
            "breaker_state": "open",
            "admin_email": "ops@a.example",
        }
    ]
    assert opened["runbook_urls"] == [RUNBOOK]
    assert (escalated["previous_priority"], escalated["priority"]) == ("P2", "P1")
    assert [t["tenant_id"] for t in escalated["tenants"]] == ["tenant-a", "tenant-g"]
    assert (acked["actor"], acked["note"]) == ("alice", "mine")
    assert (resolved["actor"], resolved["status"]) == ("bob", "resolved")


async def test_no_channel_configured_queues_nothing(client, sql):
    await trip(client, "tenant-a")
    assert sql("SELECT count(*) FROM notifications") == [(0,)]


# --- tenant health --------------------------------------------------------------------------------


async def test_tenant_health_shows_breaker_open_incident_and_recent_alerts(client):
    await register(client, "tenant-a", "gold", name="A")
    (incident_id,) = await trip(client, "tenant-a")
    await webhook(client, alert("tenant-a", isolate=False, alertname="TenantLatencyHigh"))
    health = await call(client, "GET", "/v1/tenants/tenant-a/health")
    assert health["tenant"]["tier"] == "gold"
    assert (health["breaker"]["state"], health["breaker"]["allow"]) == ("open", False)
    assert health["open_incident"]["id"] == incident_id
    assert sorted(a["alertname"] for a in health["recent_alerts"]) == [
        "TenantErrorRateHigh",
        "TenantLatencyHigh",
    ]

    await call(client, "POST", f"/v1/incidents/{incident_id}/resolve", {"actor": "bob"})
    assert (await call(client, "GET", "/v1/tenants/tenant-a/health"))["open_incident"] is None

    unknown = await call(client, "GET", "/v1/tenants/nobody/health")
    assert unknown == {
        "tenant_id": "nobody",
        "tenant": None,
        "breaker": unknown["breaker"],
        "open_incident": None,
        "recent_alerts": [],
    }
    assert (unknown["breaker"]["state"], unknown["breaker"]["allow"]) == ("closed", True)
    await call(client, "GET", "/v1/tenants/bad%0Aid/health", expect=400)


# --- breaker changes outside webhooks -------------------------------------------------------


async def test_failing_probes_re_trip_into_the_open_incident_or_a_new_one(app_client, sql):
    client = await app_client(breaker_open_seconds=0.2, half_open_probes=1)
    (first,) = await trip(client, "tenant-a")
    await asyncio.sleep(0.25)
    out = await call(client, "POST", "/v1/tenants/tenant-a/outcomes", {"success": 0, "failure": 1})
    assert out["state"] == "open"
    # Still the same failure: the re-trip is recorded on the open incident.
    moves = [
        (r["actor"], r["details"]["from"], r["details"]["to"])
        for r in await timeline(client, first)
        if r["action"] == "breaker.transition"
    ]
    assert moves == [
        ("alertmanager", "closed", "open"),
        ("system", "open", "half_open"),
        ("gateway", "half_open", "open"),
    ]
    assert sql("SELECT count(*) FROM incidents") == [(1,)]

    # Once people have resolved it, a tenant failing its probes again is a new incident.
    await call(client, "POST", f"/v1/incidents/{first}/resolve", {"actor": "bob"})
    await asyncio.sleep(0.45)  # the second open period is twice as long
    out = await call(client, "POST", "/v1/tenants/tenant-a/outcomes", {"success": 0, "failure": 1})
    assert out["state"] == "open"
    rows = sql("SELECT id, status FROM incidents ORDER BY id")
    assert [s for _, s in rows] == ["resolved", "open"]
    (second,) = [i for i, s in rows if s == "open"]
    got = await incident(client, second)
    assert got["title"] == "Tenant tenant-a isolated: TenantErrorRateHigh"
    assert [a["status"] for a in got["alerts"]] == ["firing"]


async def test_concurrent_sla_checks_flag_each_incident_once(app_client, sql, settings):
    from receiver.config import ServiceConfig
    from receiver.db.engine import create_engine, session_factory
    from receiver.service.incidents import check_sla_breaches

    client = await app_client(correlation_window_seconds=0, sla_check_interval_seconds=3600, **MANY)
    ids = [i for n in range(8) for i in await trip(client, f"tenant-{n}")]
    assert len(set(ids)) == 8
    sql("UPDATE incidents SET ack_due_at = now() - interval '1 second'")
    engine = create_engine(settings)
    try:
        sessions = session_factory(engine)
        config = ServiceConfig.from_settings(settings)
        now = datetime.now(UTC)
        results = await asyncio.gather(
            *(check_sla_breaches(sessions=sessions, config=config, now=now) for _ in range(6))
        )
    finally:
        await engine.dispose()
    flagged = [i for r in results for i in r]
    assert sorted(flagged) == sorted(ids)  # every one, and each once
    assert sql("SELECT count(*) FROM audit_log WHERE action = 'sla.breached'") == [(8,)]
    assert sql("SELECT count(*) FROM incidents WHERE sla_breached_at IS NULL") == [(0,)]
