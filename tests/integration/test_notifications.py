"""Notifications end to end: webhook -> incident -> outbox -> worker -> local servers that
speak the real protocols (PagerDuty Events v2 and Slack webhooks on aiohttp test servers,
SMTP on aiosmtpd), against real PostgreSQL."""

from __future__ import annotations

import asyncio
import email
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from receiver.embedded_pg import free_port
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS

PD_KEY = "R0UT1NGKEY0000000000000000000000"


@dataclass
class Provider:
    """A local PagerDuty + Slack, recording what they receive."""

    pagerduty: list[dict[str, Any]] = field(default_factory=list)
    slack: list[dict[str, Any]] = field(default_factory=list)
    slack_failures_left: int = 0
    slack_attempts: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self.enqueue)
        app.router.add_post("/slack/hook", self.slack_hook)
        return app

    async def enqueue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("routing_key") != PD_KEY or body.get("event_action") not in (
            "trigger",
            "acknowledge",
            "resolve",
        ):
            return web.json_response({"status": "invalid event"}, status=400)
        self.pagerduty.append(body)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]},
            status=202,
        )

    async def slack_hook(self, request: web.Request) -> web.Response:
        self.slack_attempts += 1
        if self.slack_failures_left > 0:
            self.slack_failures_left -= 1
            return web.Response(status=503, text="service unavailable")
        body = await request.json()
        if not body.get("blocks"):
            return web.Response(status=400, text="invalid_blocks")
        self.slack.append(body)
        return web.Response(text="ok")


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
async def provider(aiohttp_server: Any) -> tuple[Provider, str]:
    p = Provider()
    server = await aiohttp_server(p.app())
    return p, str(server.make_url("")).rstrip("/")


@pytest.fixture
def receiver(app_client: Callable[..., Any], provider, mailbox) -> Callable[..., Any]:
    _, base = provider
    _, smtp_port = mailbox

    async def build(**overrides: Any) -> Any:
        settings: dict[str, Any] = {
            "slack_webhook_url": f"{base}/slack/hook",
            "pagerduty_routing_key": PD_KEY,
            "pagerduty_events_url": f"{base}/v2/enqueue",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_starttls": False,
            "email_from": "receiver@example.test",
            "email_to": "oncall@example.test",
            "notify_backoff_base_seconds": 0.05,
            "notify_backoff_max_seconds": 0.2,
            "outbox_poll_seconds": 0.05,
            "sla_check_interval_seconds": 0.2,
            "public_url": "http://receiver.example.test",
        }
        settings.update(overrides)
        return await app_client(**settings)

    return build


def alert(tenant: str, status: str = "firing", starts: datetime | None = None) -> dict[str, Any]:
    starts = starts or datetime.now(UTC) - timedelta(seconds=30)
    return {
        "version": "4",
        "status": status,
        "receiver": "breaker",
        "groupKey": '{}:{alertname="TenantErrorRateHigh"}',
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "TenantErrorRateHigh",
                    "isolate": "true",
                    "severity": "critical",
                    "tenant_id": tenant,
                },
                "annotations": {"runbook_url": "https://runbooks.example/tenant-error-rate"},
                "startsAt": starts.isoformat(),
                "endsAt": "0001-01-01T00:00:00Z"
                if status == "firing"
                else datetime.now(UTC).isoformat(),
            }
        ],
    }


async def open_incident(client: Any, tenant: str, tier: str) -> str:
    resp = await client.put(f"/v1/tenants/{tenant}", json={"tier": tier}, headers=API_HEADERS)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/v1/alertmanager", json=alert(tenant), headers=WEBHOOK_HEADERS)
    assert resp.status == 200, await resp.text()
    incidents = (await resp.json())["incidents"]
    assert len(incidents) == 1, incidents
    return str(incidents[0])


async def eventually(check: Callable[[], bool], *, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def settle(seconds: float = 0.6) -> None:
    """Give the worker time to (not) send something, for negative assertions."""
    await asyncio.sleep(seconds)


async def test_p0_pages_slacks_and_mails_then_follows_the_incident(
    receiver, provider, mailbox, sql
):
    p, _ = provider
    box, _ = mailbox
    client = await receiver()
    incident = await open_incident(client, "acme", "platinum")

    await eventually(lambda: len(p.pagerduty) == 1 and len(p.slack) == 1 and len(box.messages) == 1)
    trigger = p.pagerduty[0]
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == incident
    assert trigger["payload"]["severity"] == "critical"
    assert "acme" in str(trigger["payload"]["custom_details"])
    assert incident in box.messages[0]["Subject"] and "[P0]" in box.messages[0]["Subject"]
    assert "acme" in box.messages[0].get_payload(decode=True).decode()

    resp = await client.post(
        f"/v1/incidents/{incident}/acknowledge", json={"actor": "alice"}, headers=API_HEADERS
    )
    assert resp.status == 200, await resp.text()
    await eventually(lambda: len(p.pagerduty) == 2)
    resp = await client.post(
        f"/v1/incidents/{incident}/resolve",
        json={"actor": "alice", "note": "fixed"},
        headers=API_HEADERS,
    )
    assert resp.status == 200, await resp.text()
    await eventually(lambda: len(p.pagerduty) == 3)
    assert [e["event_action"] for e in p.pagerduty] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in p.pagerduty} == {incident}

    def sent() -> set[tuple[str, str]]:
        rows = sql(
            "select details->>'channel', details->>'event' from audit_log "
            "where action = 'notification.sent' and incident_id = %s",
            incident,
        )
        return {(channel, event) for channel, event in rows}

    expected = {
        (channel, event)
        for channel in ("pagerduty", "slack", "email")
        for event in ("incident.opened", "incident.acknowledged", "incident.resolved")
    }
    await eventually(lambda: sent() == expected)


async def test_p1_pages_and_slacks_but_sends_no_mail(receiver, provider, mailbox):
    p, _ = provider
    box, _ = mailbox
    client = await receiver()
    incident = await open_incident(client, "globex", "gold")
    await eventually(lambda: len(p.pagerduty) == 1 and len(p.slack) == 1)
    await settle()
    assert p.pagerduty[0]["dedup_key"] == incident
    assert p.pagerduty[0]["payload"]["severity"] == "error"
    assert box.messages == []


async def test_p2_never_pages(receiver, provider, mailbox):
    p, _ = provider
    box, _ = mailbox
    client = await receiver()
    incident = await open_incident(client, "initech", "bronze")
    await eventually(lambda: len(p.slack) == 1 and len(box.messages) == 1)
    for action in ("acknowledge", "resolve"):
        resp = await client.post(
            f"/v1/incidents/{incident}/{action}", json={"actor": "bob"}, headers=API_HEADERS
        )
        assert resp.status == 200
    await eventually(lambda: len(p.slack) == 3 and len(box.messages) == 3)
    await settle()
    assert p.pagerduty == []


async def test_slack_outage_is_retried_to_success(receiver, provider, sql):
    p, _ = provider
    p.slack_failures_left = 3
    client = await receiver()
    incident = await open_incident(client, "umbrella", "silver")
    # The outcome is recorded after Slack accepted: wait for the row, not only the message.
    await eventually(
        lambda: sql("select status from notifications where channel = 'slack'") == [("sent",)]
    )
    assert len(p.slack) == 1
    assert p.slack_attempts == 4
    rows = sql(
        "select action, (details->>'attempt')::int, details->>'will_retry' from audit_log "
        "where incident_id = %s and details->>'channel' = 'slack' order by id",
        incident,
    )
    assert rows == [
        ("notification.failed", 1, "true"),
        ("notification.failed", 2, "true"),
        ("notification.failed", 3, "true"),
        ("notification.sent", 4, None),
    ]
    assert sql("select status from notifications where channel = 'slack'") == [("sent",)]


async def test_two_replicas_never_send_one_notification_twice(receiver, provider, mailbox, sql):
    p, _ = provider
    box, _ = mailbox
    first = await receiver()
    await receiver()  # a second replica with its own worker, same database
    tenants = [f"t{i}" for i in range(8)]
    for i, tenant in enumerate(tenants):
        await first.put(f"/v1/tenants/{tenant}", json={"tier": "platinum"}, headers=API_HEADERS)
        # Separate incidents: each opens outside the previous one's correlation window.
        sql("update incidents set opened_at = opened_at - interval '1 hour'")
        resp = await first.post("/v1/alertmanager", json=alert(tenant), headers=WEBHOOK_HEADERS)
        assert resp.status == 200, (i, await resp.text())
    (queued,) = sql("select count(*) from notifications")[0]
    assert queued > 0
    await eventually(
        lambda: sql("select count(*) from notifications where status = 'pending'")[0][0] == 0
    )
    await settle()
    keys = [(e["dedup_key"], e["event_action"], e["payload"]["summary"]) for e in p.pagerduty]
    assert len(keys) == len(set(keys))
    total = len(p.pagerduty) + len(p.slack) + len(box.messages)
    assert total == queued
    assert sql("select count(*) from audit_log where action = 'notification.sent'") == [(queued,)]


async def test_sla_breach_is_noticed_once(receiver, provider, sql):
    p, _ = provider
    client = await receiver()
    incident = await open_incident(client, "hooli", "gold")
    await eventually(lambda: len(p.pagerduty) == 1)
    sql("update incidents set ack_due_at = now() - interval '1 second' where id = %s", incident)
    await eventually(
        lambda: sql("select count(*) from audit_log where action = 'sla.breached'")[0][0] == 1
    )
    await eventually(lambda: len(p.pagerduty) == 2)
    await settle(1.0)
    assert sql("select count(*) from audit_log where action = 'sla.breached'") == [(1,)]
    breach = [e for e in p.pagerduty if e is not p.pagerduty[0]]
    assert len(breach) == 1 and breach[0]["event_action"] == "trigger"
    assert "SLA" in breach[0]["payload"]["summary"] or "sla" in str(breach[0]).lower()


async def test_readyz_says_which_channels_are_on(receiver, app_client):
    configured = await receiver()
    body = await (await configured.get("/readyz")).json()
    assert body["notification_channels"] == ["email", "pagerduty", "slack"]
    bare = await app_client()
    body = await (await bare.get("/readyz")).json()
    assert body["notification_channels"] == []


async def test_escalation_keeps_earlier_channels_informed(receiver, provider, mailbox):
    """A P2 mails its opening; once a gold tenant joins it is P1, which pages and does not
    mail, but the people mailed at the start still hear the escalation and the end."""
    p, _ = provider
    box, _ = mailbox
    client = await receiver()
    incident = await open_incident(client, "small", "bronze")
    await eventually(lambda: len(p.slack) == 1 and len(box.messages) == 1)
    assert p.pagerduty == []

    await client.put("/v1/tenants/big", json={"tier": "gold"}, headers=API_HEADERS)
    resp = await client.post("/v1/alertmanager", json=alert("big"), headers=WEBHOOK_HEADERS)
    assert (await resp.json())["incidents"] == [incident]
    await eventually(lambda: len(p.pagerduty) == 1 and len(box.messages) == 2)
    assert p.pagerduty[0]["event_action"] == "trigger"
    assert "escalated" in box.messages[1]["Subject"].lower()

    resp = await client.post(
        f"/v1/incidents/{incident}/resolve", json={"actor": "carol"}, headers=API_HEADERS
    )
    assert resp.status == 200
    await eventually(lambda: len(p.pagerduty) == 2 and len(box.messages) == 3)
    assert p.pagerduty[1]["event_action"] == "resolve"
    assert "resolved" in box.messages[2]["Subject"].lower()
