"""Superseded instances (DESIGN.md "The truth from Alertmanager"): a newer instance of a
fingerprint resolves every older one still stored firing, at once and with all its
effects, so a lost resolved never keeps a breaker open, re-trips a healthy tenant or holds
an incident open. Also: identity at millisecond precision across the webhook's
nanoseconds."""

from __future__ import annotations

import asyncio

from tests.conftest import API_HEADERS
from tests.integration.helpers import (
    FIXTURE_FINGERPRINT,
    audit_rows,
    firing,
    get_breaker,
    poll,
    post_webhook,
    resolved,
)

OPEN = 0.5
T1 = "2026-11-22T14:24:16.033Z"  # the first failure; its resolved is lost
T2 = "2026-11-22T15:00:00.250Z"  # the next failure of the same labels


async def wait_state(client, tenant: str, state: str, *, within: float = 15) -> dict:
    return await poll(
        lambda: get_breaker(client, tenant),
        lambda b: b["state"] == state,
        within=within,
        what=f"{tenant} reading {state}",
    )


async def incidents_of(client, tenant: str) -> list[dict]:
    resp = await client.get(f"/v1/incidents?tenant={tenant}", headers=API_HEADERS)
    assert resp.status == 200
    return (await resp.json())["incidents"]


async def test_the_issues_scenario_a_lost_resolved_no_longer_sticks(app_client, sql):
    """Instance 1 fires and its resolved is lost; instance 2 fires and resolves. On main
    before this change instance 1 stayed firing: the breaker never closed by probation,
    probes closing it were undone by the suppressed-trip retry, and the incident never
    resolved."""
    client = await app_client(breaker_open_seconds=OPEN, half_open_probation_seconds=0.3)
    await post_webhook(client, firing("tenant-a", starts_at=T1))
    await wait_state(client, "tenant-a", "half_open")
    # (instance 1's resolved never arrives)
    out = await post_webhook(client, firing("tenant-a", starts_at=T2))
    assert out["new"] == 1
    assert sql("SELECT starts_at, status FROM alerts ORDER BY starts_at")[0][1] == "resolved"
    assert [s for _, s in sql("SELECT starts_at, status FROM alerts ORDER BY starts_at")] == [
        "resolved",
        "firing",
    ]
    (actor, details), *rest = audit_rows(sql, "alert.resolved", "tenant-a")
    assert rest == []
    assert actor == "alertmanager"
    assert details["reason"] == "superseded"
    assert details["fingerprint"] == FIXTURE_FINGERPRINT
    assert details["startsAt"].startswith("2026-11-22T14:24:16.033")
    assert details["supersededBy"]["startsAt"].startswith("2026-11-22T15:00:00.25")
    assert details["endsAt"] == details["supersededBy"]["startsAt"]
    b = await get_breaker(client, "tenant-a")
    assert (b["state"], b["alert_firing"]) == ("open", True)  # instance 2 is a new failure

    await post_webhook(client, resolved("tenant-a", starts_at=T2))
    b = await wait_state(client, "tenant-a", "closed")
    assert b["alert_firing"] is False
    assert sql("SELECT count(*) FROM alerts WHERE status = 'firing'") == [(0,)]
    # Nothing re-trips the healthy tenant (the suppressed-trip retry runs every 5 s).
    await asyncio.sleep(0.8)
    assert (await get_breaker(client, "tenant-a"))["state"] == "closed"
    (incident,) = await poll(
        lambda: incidents_of(client, "tenant-a"),
        lambda found: len(found) == 1 and found[0]["status"] == "resolved",
        what="the incident to resolve itself",
    )
    assert incident["resolved_by"] == "system"


async def test_a_newer_instance_whose_firing_was_lost_too_still_supersedes(app_client, sql):
    client = await app_client(breaker_open_seconds=OPEN, half_open_probation_seconds=0.3)
    await post_webhook(client, firing("tenant-a", starts_at=T1))
    # Both instance 1's resolved and instance 2's firing are lost; instance 2's resolved
    # arrives: the failure is over.
    out = await post_webhook(client, resolved("tenant-a", starts_at=T2))
    assert out["new"] == 1
    assert sql("SELECT status FROM alerts ORDER BY starts_at") == [("resolved",), ("resolved",)]
    reasons = [d.get("reason") for _, d in audit_rows(sql, "alert.resolved", "tenant-a")]
    assert reasons == [None, "superseded"] or reasons == ["superseded", None]
    b = await wait_state(client, "tenant-a", "closed")
    assert b["alert_firing"] is False


async def test_probes_closing_a_tenant_are_not_undone_by_a_superseded_instance(app_client, sql):
    """Closed by healthy probes while instance 1 (resolved lost) looked firing: the
    retry of suppressed trips would re-trip it. Instance 2's resolved clears that."""
    client = await app_client(breaker_open_seconds=OPEN, half_open_probes=2)
    await post_webhook(client, firing("tenant-a", starts_at=T1))
    await wait_state(client, "tenant-a", "half_open")
    resp = await client.post(
        "/v1/tenants/tenant-a/outcomes", json={"success": 2, "failure": 0}, headers=API_HEADERS
    )
    assert resp.status == 200
    b = await get_breaker(client, "tenant-a")
    assert (b["state"], b["alert_firing"]) == ("closed", True)  # waiting for isolation
    await post_webhook(client, resolved("tenant-a", starts_at=T2))
    b = await get_breaker(client, "tenant-a")
    assert (b["state"], b["alert_firing"]) == ("closed", False)
    await asyncio.sleep(0.5)
    assert sql("SELECT trips FROM breakers WHERE tenant_id = 'tenant-a'") == [(1,)]


async def test_a_copy_with_nanoseconds_is_the_instance_stored_at_milliseconds(client, sql):
    """The webhook's nine digits and the API's three name one instance: both stored at
    the millisecond, and a later copy is a duplicate, not a newer instance that would
    supersede it."""
    await post_webhook(client, firing("tenant-a", starts_at="2026-11-22T15:00:00.250123456Z"))
    assert sql("SELECT extract(microseconds FROM starts_at)::int % 1000000 FROM alerts") == [
        (250000,)
    ]
    out = await post_webhook(client, firing("tenant-a", starts_at="2026-11-22T15:00:00.250999Z"))
    assert (out["new"], out["duplicates"]) == (0, 1)
    out = await post_webhook(client, firing("tenant-a", starts_at="2026-11-22T15:00:00.25Z"))
    assert (out["new"], out["duplicates"]) == (0, 1)
    assert audit_rows(sql, "alert.resolved") == []
    assert sql("SELECT count(*) FROM alerts") == [(1,)]


async def test_a_late_copy_of_the_older_instance_is_stale_and_changes_nothing(client, sql):
    await post_webhook(client, firing("tenant-a", starts_at=T1))
    await post_webhook(client, firing("tenant-a", starts_at=T2))
    before = sql("SELECT count(*) FROM audit_log WHERE action = 'breaker.transition'")
    out = await post_webhook(client, firing("tenant-a", starts_at=T1))
    assert out["duplicates"] == 1
    assert sql("SELECT count(*) FROM audit_log WHERE action = 'breaker.transition'") == before
    assert [s for (s,) in sql("SELECT status FROM alerts ORDER BY starts_at")] == [
        "resolved",
        "firing",
    ]
