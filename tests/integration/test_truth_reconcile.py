"""Reconciliation with Alertmanager's API v2 (DESIGN.md "The truth from Alertmanager")
against local servers that speak it: two peers, one failing, silenced and inhibited
alerts, the truncated fixture's never-delivered tenant-c, and two receiver replicas on one
database (one reconciles at a time; the absent state survives a change of replica).

Most tests drive one poll at a time through the service (claim, poll_peers, apply_poll)
so that "two consecutive complete polls" is exact; the last ones run the real job.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from receiver.app import create_app
from receiver.domain.alerts import fingerprint
from receiver.keys import CONFIG, SESSIONS
from receiver.peers.alertmanager import ALERTS_PATH, poll_peers
from receiver.service import reconcile as reconcile_service
from tests.conftest import API_HEADERS, load_fixture, make_settings
from tests.integration.helpers import audit_rows, get_breaker, poll, post_webhook

GROUPED = "grouped-truncated-firing.json"
STARTS = "2026-11-22T14:27:21.033Z"  # the grouped fixture's startsAt
SILENCE_ID = "1f5a1e4e-5d0b-4e0c-9a57-0c6a3f1b2d3e"


def labels(tenant: str) -> dict[str, str]:
    return {
        "alertname": "TenantErrorRateHigh",
        "isolate": "true",
        "severity": "critical",
        "tenant_id": tenant,
    }


def gettable(
    tenant: str,
    *,
    starts_at: str = STARTS,
    state: str = "active",
    silenced_by: tuple[str, ...] = (),
    inhibited_by: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alert as Alertmanager 0.25 answers GET /api/v2/alerts (milliseconds)."""
    lbls = {**labels(tenant), **(extra or {})} if tenant else dict(extra or {})
    return {
        "annotations": {"summary": f"Tenant {tenant} error ratio 76.29%"},
        "endsAt": "2026-11-22T14:31:21.033Z",
        "fingerprint": fingerprint(lbls),
        "receivers": [{"name": "breaker"}],
        "startsAt": starts_at,
        "status": {
            "inhibitedBy": list(inhibited_by),
            "silencedBy": list(silenced_by),
            "state": state,
        },
        "updatedAt": "2026-11-22T14:27:51.033Z",
        "generatorURL": "http://prometheus:9090/graph",
        "labels": lbls,
    }


@dataclass
class FakePeer:
    """A peer of an Alertmanager cluster: its alerts, whether it fails, its requests."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    fail: int | None = None  # an HTTP status to answer instead
    delay: float = 0.0
    requests: list[tuple[float, float]] = field(default_factory=list)
    url: str = ""

    async def answer(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        await asyncio.sleep(self.delay)
        self.requests.append((started, time.monotonic()))
        if self.fail is not None:
            return web.json_response({"error": "cluster not ready"}, status=self.fail)
        return web.json_response(self.alerts)


@pytest.fixture
def peers(aiohttp_server: Any) -> Any:
    async def start(*peer_list: FakePeer) -> list[FakePeer]:
        for peer in peer_list:
            app = web.Application()
            app.router.add_get(ALERTS_PATH, peer.answer)
            server = await aiohttp_server(app)
            peer.url = str(server.make_url("")).rstrip("/")
        return list(peer_list)

    return start


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


async def reconcile_once(
    app: web.Application, http: aiohttp.ClientSession, peers: list[FakePeer], owner: str = "r1"
) -> reconcile_service.ReconcileOutcome:
    """One poll by `owner`: claim the lease, poll every peer, apply."""
    sessions = app[SESSIONS]
    assert await reconcile_service.claim(
        sessions=sessions, owner=owner, interval_seconds=0.001, lease_seconds=30
    )
    answers = await poll_peers(http, [p.url for p in peers], timeout_seconds=2)
    return await reconcile_service.apply_poll(
        sessions=sessions, owner=owner, answers=answers, config=app[CONFIG], now=datetime.now(UTC)
    )


async def register(client: Any, tenants: list[str]) -> None:
    for tenant in tenants:
        resp = await client.put(
            f"/v1/tenants/{tenant}", json={"tier": "silver"}, headers=API_HEADERS
        )
        assert resp.status == 200, await resp.text()


async def wait_open(client: Any, tenant: str) -> dict[str, Any]:
    """The breaker as the app's view reads it (another replica's commit arrives by
    NOTIFY within a second; these tests commit through the service directly)."""
    return await poll(
        lambda: get_breaker(client, tenant),
        lambda b: b["state"] == "open",
        what=f"{tenant} open",
    )


def reconciled(sql: Any, tenant: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    return audit_rows(sql, "alert.reconciled", tenant)


# --- never recorded: fired with all its effects -----------------------------------------


async def test_the_truncated_groups_missing_alert_is_found_and_fired(client, sql, peers, http):
    """grouped-truncated-firing.json carries tenant-a and tenant-b; tenant-c was cut by
    max_alerts. The peers hold all three (peer 2 only part of them: the union counts)."""
    await register(client, [f"tenant-{c}" for c in "abcdefghijklmnopqrst"])  # guard: 4
    await post_webhook(client, load_fixture(GROUPED))
    p1, p2 = await peers(
        FakePeer([gettable("tenant-a"), gettable("tenant-c")]),
        FakePeer([gettable("tenant-a"), gettable("tenant-b")]),
    )
    out = await reconcile_once(client.app, http, [p1, p2])
    assert (out.complete, out.fired, out.resolved) == (True, 1, 0)

    ((actor, details),) = reconciled(sql)
    assert actor == "reconciler"
    assert details["fingerprint"] == fingerprint(labels("tenant-c"))
    assert details["startsAt"].startswith("2026-11-22T14:27:21.033")
    assert (details["from"], details["to"], details["peerState"]) == (None, "firing", "active")
    row = sql(
        "SELECT status, delivery_id, tenant_id, isolating FROM alerts"
        " WHERE labels->>'tenant_id' = 'tenant-c'"
    )
    assert row == [("firing", None, "tenant-c", True)]
    b = await wait_open(client, "tenant-c")
    assert b["alert_firing"] is True
    ((t_actor, t),) = audit_rows(sql, "breaker.transition", "tenant-c")
    assert (t_actor, t["from"], t["to"]) == ("reconciler", "closed", "open")
    # tenant-c joined tenant-a's and tenant-b's incident (within the correlation window).
    (incident,) = sql("SELECT incident_id FROM incident_tenants WHERE tenant_id = 'tenant-c'")
    assert sql("SELECT incident_id FROM audit_log WHERE action = 'alert.reconciled'") == [incident]

    # A second poll changes nothing; the late webhook copy of tenant-c is a duplicate.
    again = await reconcile_once(client.app, http, [p1, p2])
    assert (again.fired, again.resolved) == (0, 0)
    body = load_fixture(GROUPED)
    alert_c = copy.deepcopy(body["alerts"][0])
    alert_c["labels"]["tenant_id"] = "tenant-c"
    alert_c["fingerprint"] = fingerprint(alert_c["labels"])
    alert_c["startsAt"] = "2026-11-22T14:27:21.033456789Z"  # the webhook's nanoseconds
    body["alerts"] = [alert_c]
    reply = await post_webhook(client, body)
    assert (reply["new"], reply["duplicates"]) == (0, 1)
    assert len(reconciled(sql)) == 1
    assert audit_rows(sql, "alert.resolved") == []  # not superseded: the same instance


async def test_silenced_and_inhibited_alerts_still_isolate(client, sql, peers, http):
    """A silence stops the webhook (and pages), not isolation."""
    await register(client, [f"tenant-{i}" for i in range(10)])  # guard: 2
    platform = gettable("", extra={"alertname": "PlatformErrorRateHigh", "scope": "platform"})
    (p1,) = await peers(
        FakePeer(
            [
                gettable("tenant-1", state="suppressed", silenced_by=(SILENCE_ID,)),
                gettable("tenant-2", state="suppressed", inhibited_by=(platform["fingerprint"],)),
                platform,
                # No role: left to the webhook (the heartbeat, a tenant-only warning).
                gettable("", extra={"alertname": "Watchdog", "severity": "none"}),
                {**gettable("tenant-3"), "labels": {"alertname": "X", "tenant_id": "tenant-3"}},
            ]
        )
    )
    out = await reconcile_once(client.app, http, [p1])
    assert out.fired == 3
    names = {d["alertname"] for _, d in reconciled(sql)}
    silenced = next(d for _, d in reconciled(sql, "tenant-1"))
    inhibited = next(d for _, d in reconciled(sql, "tenant-2"))
    assert (silenced["peerState"], silenced["silencedBy"]) == ("suppressed", [SILENCE_ID])
    assert inhibited["inhibitedBy"] == [platform["fingerprint"]]
    assert names == {"TenantErrorRateHigh", "PlatformErrorRateHigh"}
    await wait_open(client, "tenant-1")
    await wait_open(client, "tenant-2")
    assert sql("SELECT count(*) FROM alerts WHERE alertname IN ('Watchdog', 'X')") == [(0,)]
    # The platform alert opened (or joined) a P0 incident.
    assert sql("SELECT DISTINCT priority FROM incidents") == [("P0",)]


# --- a failing peer changes nothing ------------------------------------------------------


async def test_a_poll_with_a_failing_peer_changes_nothing(client, sql, peers, http):
    await post_webhook(client, load_fixture("single-tenant-firing.json"))  # tenant-a firing
    p1, p2 = await peers(FakePeer([gettable("tenant-c")]), FakePeer(fail=503))
    before = sql("SELECT count(*) FROM audit_log")
    for _ in range(3):
        out = await reconcile_once(client.app, http, [p1, p2])
        assert (out.applied, out.complete, out.fired, out.resolved) == (True, False, 0, 0)
        assert [f.peer for f in out.failed] == [p2.url]
    assert sql("SELECT count(*) FROM audit_log") == before
    assert sql("SELECT status FROM alerts") == [("firing",)]  # absent from p1, not resolved
    assert sql("SELECT count(*) FROM reconcile_absent") == [(0,)]
    (failed,) = sql("SELECT last_failed FROM reconciler_state")
    assert failed[0][0]["peer"] == p2.url and "503" in failed[0][0]["reason"]

    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "ready"  # informational, never fails readiness
    assert ready["reconciliation"]["status"] == "off"  # this app has no peers configured

    # The peer answers again: the next complete poll acts.
    p2.fail = None
    out = await reconcile_once(client.app, http, [p1, p2])
    assert (out.complete, out.fired) == (True, 1)


# --- absent from two consecutive complete polls: resolved ----------------------------------


async def test_a_firing_instance_absent_from_two_complete_polls_resolves(
    app_client, sql, peers, http
):
    client = await app_client(breaker_open_seconds=0.3, half_open_probation_seconds=0.2)
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    p1, p2 = await peers(FakePeer([]), FakePeer([]))

    first = await reconcile_once(client.app, http, [p1, p2])
    assert (first.resolved, first.absent) == (0, 1)
    assert sql("SELECT status FROM alerts") == [("firing",)]
    # A failed poll in between neither counts nor forgets.
    p2.fail = 500
    assert not (await reconcile_once(client.app, http, [p1, p2])).complete
    assert sql("SELECT count(*) FROM reconcile_absent") == [(1,)]
    p2.fail = None

    second = await reconcile_once(client.app, http, [p1, p2])
    assert (second.resolved, second.absent) == (1, 0)
    ((actor, details),) = reconciled(sql, "tenant-a")
    assert actor == "reconciler"
    assert (details["from"], details["to"]) == ("firing", "resolved")
    assert details["reason"] == "absent from two consecutive complete polls"
    assert sql("SELECT status, ends_at IS NOT NULL FROM alerts") == [("resolved", True)]
    b = await poll(
        lambda: get_breaker(client, "tenant-a"),
        lambda b: b["state"] == "closed",
        what="tenant-a to close after probation",
    )
    assert b["alert_firing"] is False
    assert sql("SELECT count(*) FROM reconcile_absent") == [(0,)]


async def test_present_again_after_one_absent_poll_is_kept(client, sql, peers, http):
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    stored = gettable("tenant-a", starts_at="2026-11-22T14:24:16.033Z")
    body = load_fixture("single-tenant-firing.json")
    stored["labels"] = body["alerts"][0]["labels"]
    stored["fingerprint"] = body["alerts"][0]["fingerprint"]
    (p1,) = await peers(FakePeer([]))
    await reconcile_once(client.app, http, [p1])
    p1.alerts = [stored]
    out = await reconcile_once(client.app, http, [p1])
    assert (out.fired, out.resolved, out.absent) == (0, 0, 0)
    p1.alerts = []
    out = await reconcile_once(client.app, http, [p1])
    assert (out.resolved, out.absent) == (0, 1)  # the count starts again
    assert sql("SELECT status FROM alerts") == [("firing",)]


async def test_the_absent_state_survives_a_change_of_replica(
    clean_db, aiohttp_client, sql, peers, http
):
    one = await aiohttp_client(create_app(make_settings(clean_db)))
    two = await aiohttp_client(create_app(make_settings(clean_db)))
    await post_webhook(one, load_fixture("single-tenant-firing.json"))
    (p1,) = await peers(FakePeer([]))
    assert (await reconcile_once(one.app, http, [p1], owner="replica-1")).resolved == 0
    out = await reconcile_once(two.app, http, [p1], owner="replica-2")
    assert out.resolved == 1
    assert sql("SELECT status FROM alerts") == [("resolved",)]


async def test_a_replica_that_lost_its_lease_applies_nothing(client, sql, peers, http):
    sessions = client.app[SESSIONS]
    assert await reconcile_service.claim(
        sessions=sessions, owner="slow", interval_seconds=0.001, lease_seconds=30
    )
    # Another replica cannot take a held lease...
    assert not await reconcile_service.claim(
        sessions=sessions, owner="other", interval_seconds=0.001, lease_seconds=30
    )
    # ...until it expires (here: made to).
    sql("UPDATE reconciler_state SET lease_until = now() - interval '1 second'")
    assert await reconcile_service.claim(
        sessions=sessions, owner="other", interval_seconds=0.001, lease_seconds=30
    )
    (p1,) = await peers(FakePeer([gettable("tenant-c")]))
    answers = await poll_peers(http, [p1.url])
    late = await reconcile_service.apply_poll(
        sessions=sessions,
        owner="slow",
        answers=answers,
        config=client.app[CONFIG],
        now=datetime.now(UTC),
    )
    assert not late.applied
    assert sql("SELECT count(*) FROM alerts") == [(0,)]


# --- the real job: one replica at a time --------------------------------------------------


async def test_two_replicas_reconcile_one_at_a_time(clean_db, aiohttp_client, sql, peers):
    (p1,) = await peers(FakePeer([gettable("tenant-c")], delay=0.15))
    settings = make_settings(
        clean_db, alertmanager_urls=p1.url, reconcile_seconds=0.3, heartbeat_timeout_seconds=0
    )
    replicas = [await aiohttp_client(create_app(settings)) for _ in range(2)]
    await poll(
        lambda: asyncio.sleep(0, result=len(reconciled(sql))),
        lambda n: n >= 1,
        within=10,
        what="the job to record tenant-c",
    )
    await asyncio.sleep(2.0)
    # One reconciled row whatever the number of replicas and polls; polls never overlap
    # and come about once an interval (not once per replica and interval).
    assert len(reconciled(sql)) == 1
    spans = sorted(p1.requests)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    elapsed = spans[-1][0] - spans[0][0]
    assert len(spans) <= elapsed / (0.8 * 0.3) + 2, spans
    ready = await (await replicas[0].get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["reconciliation"]["status"] == "ok", ready
    assert ready["reconciliation"]["last_success_at"] is not None
    metrics = [await (await r.get("/metrics")).text() for r in replicas]
    assert any('receiver_reconcile_changes_total{direction="fired"} 1.0' in m for m in metrics), (
        metrics
    )
    assert all(f'receiver_reconcile_peer_errors_total{{peer="{p1.url}"}} 0.0' in m for m in metrics)


async def test_the_job_reports_a_failing_peer_without_failing_readiness(
    clean_db, aiohttp_client, sql, peers
):
    p1, p2 = await peers(FakePeer([gettable("tenant-c")]), FakePeer(fail=500))
    settings = make_settings(
        clean_db,
        alertmanager_urls=f"{p1.url},{p2.url}",
        reconcile_seconds=0.2,
        heartbeat_timeout_seconds=0,
    )
    client = await aiohttp_client(create_app(settings))
    await poll(lambda: asyncio.sleep(0, result=len(p2.requests)), lambda n: n >= 3, within=10)
    await asyncio.sleep(1.1)  # past readyz's one-second cache
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["reconciliation"]["status"] in ("failing", "never run"), ready
    text = await (await client.get("/metrics")).text()
    assert f'receiver_reconcile_peer_errors_total{{peer="{p2.url}"}}' in text
    assert 'receiver_reconcile_polls_total{result="incomplete"}' in text
    assert reconciled(sql) == []
    assert sql("SELECT count(*) FROM alerts") == [(0,)]
