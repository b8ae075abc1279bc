"""The senders against local stand-ins that speak each provider's protocol.

PagerDuty Events API v2 and a Slack incoming webhook are aiohttp test servers that
validate what they receive the way the real services do; e-mail goes to aiosmtpd.
"""

from __future__ import annotations

import asyncio
import email
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from receiver.channels import build_senders, parse_addresses
from receiver.channels.base import DeliveryError, Sender
from receiver.channels.email import EmailSender
from receiver.channels.pagerduty import PagerDutySender
from receiver.channels.slack import SlackSender
from receiver.domain.notification import (
    Channel,
    IncidentMessage,
    NotificationEvent,
    TenantSummary,
    channels_for,
)
from receiver.domain.tiers import Priority, Tier

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # PagerDuty keys are 32 characters
INCIDENT_URL = "https://receiver.example/v1/incidents/INC-20240501-0001"
RUNBOOK = "https://runbooks.example/tenant-isolation"
SLACK_PATH = "/services/T0000/B0000/s3cr3tWebhookToken"


def make_msg(**overrides: object) -> IncidentMessage:
    fields: dict[str, object] = {
        "event": NotificationEvent.OPENED,
        "incident_id": "INC-20240501-0001",
        "title": "Tenant acme error ratio above 50%",
        "priority": Priority.P0,
        "previous_priority": None,
        "status": "open",
        "opened_at": T0,
        "ack_due_at": T0 + timedelta(minutes=15),
        "actor": None,
        "note": None,
        "tenants": (
            TenantSummary("acme", Tier.PLATINUM, "Acme Corp", "open", "ops@acme.io"),
            TenantSummary("beta", None, None, "forced_open"),
        ),
        "runbook_urls": (RUNBOOK,),
        "incident_url": INCIDENT_URL,
    }
    fields.update(overrides)
    return IncidentMessage(**fields)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# --- a PagerDuty Events API v2 stand-in -----------------------------------------------

PD_SEVERITIES = {"critical", "error", "warning", "info"}


def pagerduty_errors(body: Any) -> list[str]:
    """The checks PagerDuty makes before answering 202 (messages in its style)."""
    if not isinstance(body, dict):
        return ["Event object is invalid"]
    errors = []
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    dedup = body.get("dedup_key")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is missing or blank")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing or blank"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            errors.append("'payload.summary' is missing, blank or too long")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in PD_SEVERITIES:
            errors.append("'payload.severity' is invalid")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(payload["timestamp"])
            except (TypeError, ValueError):
                errors.append("'payload.timestamp' is invalid")
        for link in body.get("links", []):
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                errors.append("'links' entries need an 'href'")
    return errors


@dataclass
class FakePagerDuty:
    events: list[dict[str, Any]] = field(default_factory=list)
    # Canned answers, used once each before the normal 202: (status, body, headers).
    answers: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0

    async def enqueue(self, request: web.Request) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answers:
            status, body, headers = self.answers.pop(0)
            if isinstance(body, str):
                return web.Response(status=status, text=body, headers=headers)
            return web.json_response(body, status=status, headers=headers)
        if request.content_type != "application/json":
            return web.json_response({"status": "invalid event"}, status=400)
        body = await request.json()
        errors = pagerduty_errors(body)
        if errors:
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                status=400,
            )
        self.events.append(body)
        dedup = body.get("dedup_key") or "generated-dedup-key"
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": dedup}, status=202
        )


@pytest.fixture
async def pagerduty(aiohttp_server: Any) -> tuple[FakePagerDuty, str]:
    fake = FakePagerDuty()
    app = web.Application()
    app.router.add_post("/v2/enqueue", fake.enqueue)
    server = await aiohttp_server(app)
    return fake, str(server.make_url("/v2/enqueue"))


# --- a Slack incoming-webhook stand-in ------------------------------------------------


def slack_errors(body: Any) -> str | None:
    """None when Slack would post the message, else its error word."""
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return "invalid_payload"
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not blocks or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            text = block["text"]
            if text["type"] != "plain_text" or not 0 < len(text["text"]) <= 150:
                return "invalid_blocks"
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                return "invalid_blocks"
            if "text" in block and not 0 < len(block["text"]["text"]) <= 3000:
                return "invalid_blocks"
            fields = block.get("fields", [])
            if len(fields) > 10 or any(not 0 < len(f["text"]) <= 2000 for f in fields):
                return "invalid_blocks"
        elif kind == "context":
            if not 0 < len(block["elements"]) <= 10:
                return "invalid_blocks"
        else:
            return "invalid_blocks"
    return None


@dataclass
class FakeSlack:
    posts: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answers:
            status, text, headers = self.answers.pop(0)
            return web.Response(status=status, text=text, headers=headers)
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        error = slack_errors(body)
        if error:
            return web.Response(status=400, text=error)
        self.posts.append(body)
        return web.Response(status=200, text="ok")


@pytest.fixture
async def slack(aiohttp_server: Any) -> tuple[FakeSlack, str]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post(SLACK_PATH, fake.webhook)
    server = await aiohttp_server(app)
    return fake, str(server.make_url(SLACK_PATH))


# --- PagerDuty ---------------------------------------------------------------------


async def test_pagerduty_trigger_acknowledge_resolve_under_one_dedup_key(
    session: aiohttp.ClientSession, pagerduty: tuple[FakePagerDuty, str]
) -> None:
    fake, url = pagerduty
    sender = PagerDutySender(session, ROUTING_KEY, events_url=url)
    opened = make_msg()
    acked = make_msg(
        event=NotificationEvent.ACKNOWLEDGED, status="acknowledged", actor="alice", note="on it"
    )
    resolved = make_msg(event=NotificationEvent.RESOLVED, status="resolved", actor="system")

    assert await sender.send(opened) == "INC-20240501-0001"
    assert await sender.send(acked) == "INC-20240501-0001"
    assert await sender.send(resolved) == "INC-20240501-0001"

    trigger, ack, resolve = fake.events
    assert trigger == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "INC-20240501-0001",
        "payload": {
            "summary": (
                "[P0] INC-20240501-0001 opened: Tenant acme error ratio above 50% "
                "(2 tenants affected)"
            ),
            "source": "blast-radius-receiver",
            "severity": "critical",
            "timestamp": "2024-05-01T12:00:00+00:00",
            "component": "2 tenants",
            "group": "tenant-isolation",
            "class": "incident.opened",
            "custom_details": {
                "what_happened": (
                    "Incident INC-20240501-0001 was opened at P0 (critical): 2 tenants "
                    "affected. Acknowledge by 2024-05-01 12:15:00 UTC."
                ),
                "incident_id": "INC-20240501-0001",
                "event": "incident.opened",
                "priority": "P0",
                "status": "open",
                "opened_at": "2024-05-01T12:00:00+00:00",
                "ack_due_at": "2024-05-01T12:15:00+00:00",
                "ack_due": "2024-05-01 12:15:00 UTC",
                "tenant_count": 2,
                "tenants_by_tier": {"platinum": 1, "unknown": 1},
                "tenants": [
                    "acme (Acme Corp): platinum tier, breaker open",
                    "beta: tier unknown, breaker forced_open",
                ],
                "tenants_not_listed": 0,
                "runbooks": [RUNBOOK],
                "incident_url": INCIDENT_URL,
            },
        },
        "client": "blast-radius-receiver",
        "client_url": INCIDENT_URL,
        "links": [
            {"href": RUNBOOK, "text": "Runbook"},
            {"href": INCIDENT_URL, "text": "Incident INC-20240501-0001"},
        ],
    }
    assert ack == {
        "routing_key": ROUTING_KEY,
        "event_action": "acknowledge",
        "dedup_key": "INC-20240501-0001",
    }
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "INC-20240501-0001",
    }


async def test_pagerduty_escalation_and_sla_breach_retrigger_with_new_severity(
    session: aiohttp.ClientSession, pagerduty: tuple[FakePagerDuty, str]
) -> None:
    fake, url = pagerduty
    sender = PagerDutySender(session, ROUTING_KEY, events_url=url)
    base = {"tenants": (TenantSummary("acme", Tier.GOLD, None, "open"),)}
    await sender.send(make_msg(priority=Priority.P1, **base))
    await sender.send(
        make_msg(
            event=NotificationEvent.ESCALATED,
            priority=Priority.P0,
            previous_priority=Priority.P1,
            occurred_at=T0 + timedelta(minutes=4),
            **base,
        )
    )
    await sender.send(make_msg(event=NotificationEvent.SLA_BREACHED, **base))

    first, escalated, breached = fake.events
    assert [e["event_action"] for e in fake.events] == ["trigger"] * 3
    assert {e["dedup_key"] for e in fake.events} == {"INC-20240501-0001"}
    assert first["payload"]["severity"] == "error"
    assert escalated["payload"]["severity"] == "critical"
    assert escalated["payload"]["summary"].startswith(
        "[P0] INC-20240501-0001 escalated from P1 to P0: "
    )
    assert escalated["payload"]["timestamp"] == "2024-05-01T12:04:00+00:00"
    assert escalated["payload"]["custom_details"]["previous_priority"] == "P1"
    assert escalated["payload"]["component"] == "tenant:acme"
    assert breached["payload"]["summary"].startswith("[P0] INC-20240501-0001 SLA breached: ")
    assert breached["payload"]["timestamp"] == "2024-05-01T12:15:00+00:00"


async def test_pagerduty_summary_is_capped_and_p2_is_a_warning(
    session: aiohttp.ClientSession, pagerduty: tuple[FakePagerDuty, str]
) -> None:
    fake, url = pagerduty
    sender = PagerDutySender(session, ROUTING_KEY, events_url=url)
    await sender.send(make_msg(priority=Priority.P2, title="x" * 5000, tenants=()))
    payload = fake.events[0]["payload"]
    assert len(payload["summary"]) == 1024 and payload["summary"].endswith("…")
    assert payload["severity"] == "warning"
    assert payload["component"] == "platform" and payload["group"] == "platform"


async def test_pagerduty_400_is_permanent_and_hides_the_routing_key(
    session: aiohttp.ClientSession, pagerduty: tuple[FakePagerDuty, str]
) -> None:
    _, url = pagerduty
    bad_key = "short-key"
    sender = PagerDutySender(session, bad_key, events_url=url)
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    err = info.value
    assert err.retryable is False and err.status == 400 and err.channel is Channel.PAGERDUTY
    assert "routing_key" in str(err) and "should be 32 characters" in str(err)
    assert bad_key not in str(err)
    assert "pagerduty delivery failed (permanent): HTTP 400 for trigger" in str(err)


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"Retry-After": "30"}, 30.0),
        (429, {}, None),
        (500, {}, None),
        (502, {}, None),
        (503, {"Retry-After": "5"}, 5.0),
    ],
)
async def test_pagerduty_throttling_and_server_errors_are_retryable(
    session: aiohttp.ClientSession,
    pagerduty: tuple[FakePagerDuty, str],
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    fake, url = pagerduty
    fake.answers.append((status, {"status": "throttled", "message": "slow down"}, headers))
    sender = PagerDutySender(session, ROUTING_KEY, events_url=url)
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    assert info.value.retryable is True
    assert info.value.status == status
    assert info.value.retry_after == retry_after
    assert "slow down" in str(info.value)
    # ...and the same message goes through once PagerDuty recovers.
    assert await sender.send(make_msg()) == "INC-20240501-0001"


async def test_pagerduty_timeout_is_retryable(
    session: aiohttp.ClientSession, pagerduty: tuple[FakePagerDuty, str]
) -> None:
    fake, url = pagerduty
    fake.delay = 1.0
    sender = PagerDutySender(session, ROUTING_KEY, events_url=url, timeout=0.1)
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    assert info.value.retryable is True and info.value.status is None
    assert "timed out after 0.1s" in str(info.value)


async def test_pagerduty_connection_refused_is_retryable(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/v2/enqueue"
    sender = PagerDutySender(session, ROUTING_KEY, events_url=url, timeout=2)
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    assert info.value.retryable is True
    assert "connection failed" in str(info.value)


async def test_pagerduty_accepts_a_202_without_json(
    session: aiohttp.ClientSession, pagerduty: tuple[FakePagerDuty, str]
) -> None:
    fake, url = pagerduty
    fake.answers.append((202, "accepted", {}))
    sender = PagerDutySender(session, ROUTING_KEY, events_url=url)
    assert await sender.send(make_msg()) == "INC-20240501-0001"


# --- Slack -------------------------------------------------------------------------


async def test_slack_posts_text_and_blocks(
    session: aiohttp.ClientSession, slack: tuple[FakeSlack, str]
) -> None:
    fake, url = slack
    sender = SlackSender(session, url)
    msg = make_msg(
        event=NotificationEvent.ACKNOWLEDGED,
        status="acknowledged",
        actor="alice",
        note="Looking at <acme>'s index & rolling back",
        occurred_at=T0 + timedelta(minutes=7),
    )
    assert await sender.send(msg) == "ok"

    (post,) = fake.posts
    assert post["text"] == (
        "[P0] INC-20240501-0001 acknowledged by alice: Tenant acme error ratio above 50%"
    )
    assert post["unfurl_links"] is False
    blocks = post["blocks"]
    assert [b["type"] for b in blocks] == [
        "header",
        "section",
        "section",
        "section",
        "section",
        "section",
        "context",
    ]
    assert blocks[0]["text"] == {
        "type": "plain_text",
        "text": ":eyes: P0 · INC-20240501-0001 · acknowledged",
        "emoji": True,
    }
    assert blocks[1]["text"]["text"] == (
        f"*<{INCIDENT_URL}|Tenant acme error ratio above 50%>*\n"
        "Incident INC-20240501-0001 (P0) was acknowledged by alice: 2 tenants affected."
    )
    assert [f["text"] for f in blocks[2]["fields"]] == [
        "*Priority*\nP0 (critical)",
        "*Status*\nacknowledged",
        "*Ack due*\n<!date^1714565700^{date_short_pretty} {time}|2024-05-01 12:15:00 UTC>",
        "*Opened*\n<!date^1714564800^{date_short_pretty} {time}|2024-05-01 12:00:00 UTC>",
        "*Acknowledged by*\nalice",
    ]
    assert blocks[3]["text"]["text"] == (
        "*Tenants (2)*\n"
        "• acme (Acme Corp): platinum tier, breaker open\n"
        "• beta: tier unknown, breaker forced_open"
    )
    assert blocks[4]["text"]["text"] == f"*Runbooks*\n• <{RUNBOOK}|{RUNBOOK}>"
    assert blocks[5]["text"]["text"] == (
        "*Note*\n>Looking at &lt;acme&gt;'s index &amp; rolling back"
    )
    assert blocks[6]["elements"][0]["text"] == (
        "blast-radius-receiver · incident.acknowledged · INC-20240501-0001 · "
        "<!date^1714565220^{date_short_pretty} {time}|2024-05-01 12:07:00 UTC>"
    )


async def test_slack_escapes_control_sequences_and_caps_long_tenant_lists(
    session: aiohttp.ClientSession, slack: tuple[FakeSlack, str]
) -> None:
    fake, url = slack
    many = tuple(
        TenantSummary(f"tenant-{i:03d}-{'x' * 60}", Tier.BRONZE, None, "open") for i in range(80)
    )
    msg = make_msg(
        title="<!channel> everything is down",
        incident_url=None,
        tenants=many,
        runbook_urls=("https://r.example/a?b=1&c=<2>|x", "not a url"),
        event=NotificationEvent.ESCALATED,
        previous_priority=Priority.P1,
    )
    await SlackSender(session, url).send(msg)  # the stand-in enforces Block Kit limits
    blocks = fake.posts[0]["blocks"]
    assert "<!channel>" not in str(fake.posts[0])
    assert blocks[1]["text"]["text"].startswith("*&lt;!channel&gt; everything is down*")
    tenants = blocks[3]["text"]["text"]
    assert tenants.startswith("*Tenants (80)*\n• tenant-000-")
    assert len(tenants) <= 3000 and tenants.endswith(" more")
    assert blocks[4]["text"]["text"] == (
        "*Runbooks*\n"
        "• <https://r.example/a?b=1&amp;c=%3C2%3E%7Cx|https://r.example/a?b=1&amp;c=&lt;2&gt;¦x>\n"
        "• not a url"
    )
    assert "*Priority*\nP0 (critical), was P1" in [f["text"] for f in blocks[2]["fields"]]


async def test_slack_platform_incident_without_tenants(
    session: aiohttp.ClientSession, slack: tuple[FakeSlack, str]
) -> None:
    fake, url = slack
    await SlackSender(session, url).send(make_msg(tenants=(), runbook_urls=()))
    texts = [b.get("text", {}).get("text") for b in fake.posts[0]["blocks"]]
    assert "*Tenants*\nnone isolated: platform-wide failure" in texts
    assert not any(t and t.startswith("*Runbooks*") for t in texts)


@pytest.mark.parametrize(
    ("status", "body", "headers", "retryable", "retry_after"),
    [
        (400, "invalid_payload", {}, False, None),
        (403, "invalid_token", {}, False, None),
        (404, "no_service", {}, False, None),
        (410, "channel_is_archived", {}, False, None),
        (429, "rate_limited", {"Retry-After": "7"}, True, 7.0),
        (500, "rollup_error", {}, True, None),
        (503, "service unavailable", {}, True, None),
    ],
)
async def test_slack_error_classification(
    session: aiohttp.ClientSession,
    slack: tuple[FakeSlack, str],
    status: int,
    body: str,
    headers: dict[str, str],
    retryable: bool,
    retry_after: float | None,
) -> None:
    fake, url = slack
    fake.answers.append((status, body, headers))
    with pytest.raises(DeliveryError) as info:
        await SlackSender(session, url).send(make_msg())
    err = info.value
    assert (err.retryable, err.status, err.retry_after) == (retryable, status, retry_after)
    assert err.channel is Channel.SLACK and body in str(err)
    if retry_after is not None:
        assert "retry after 7s" in str(err)


async def test_slack_errors_never_reveal_the_webhook_url(
    session: aiohttp.ClientSession, slack: tuple[FakeSlack, str]
) -> None:
    fake, url = slack
    fake.answers.append((500, f"upstream failed for {url}", {}))
    sender = SlackSender(session, url)
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    assert "s3cr3tWebhookToken" not in str(info.value)
    assert "s3cr3tWebhookToken" not in repr(sender)


async def test_slack_does_not_follow_redirects(
    session: aiohttp.ClientSession, slack: tuple[FakeSlack, str]
) -> None:
    fake, url = slack
    fake.answers.append((302, "", {"Location": "https://elsewhere.example/"}))
    with pytest.raises(DeliveryError) as info:
        await SlackSender(session, url).send(make_msg())
    assert info.value.retryable is False and info.value.status == 302


async def test_slack_timeout_is_retryable(
    session: aiohttp.ClientSession, slack: tuple[FakeSlack, str]
) -> None:
    fake, url = slack
    fake.delay = 1.0
    with pytest.raises(DeliveryError) as info:
        await SlackSender(session, url, timeout=0.1).send(make_msg())
    assert info.value.retryable is True and "timed out" in str(info.value)


async def test_slack_invalid_url_is_permanent_and_not_echoed(
    session: aiohttp.ClientSession,
) -> None:
    with pytest.raises(DeliveryError) as info:
        await SlackSender(session, "hooks.slack.com/services/s3cr3t").send(make_msg())
    assert info.value.retryable is False and "s3cr3t" not in str(info.value)


# --- e-mail ------------------------------------------------------------------------


class RecordingHandler:
    """An aiosmtpd handler that records messages or answers with canned replies."""

    def __init__(
        self,
        *,
        rcpt_reply: Callable[[str], str | None] = lambda _address: None,
        data_reply: str | None = None,
        data_delay: float = 0.0,
    ) -> None:
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.data_delay = data_delay
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_RCPT(  # aiosmtpd's hook names
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.rcpt_reply(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        assert envelope.mail_from is not None
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 2.0.0 Ok: queued as 4F2A1"


@pytest.fixture
def smtp_server() -> Iterator[Callable[[RecordingHandler], int]]:
    """Starts aiosmtpd with a handler on 127.0.0.1 and a free port; returns the port."""
    controllers: list[Controller] = []

    def start(handler: RecordingHandler) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="mx.test")
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


def email_sender(port: int, **kw: Any) -> EmailSender:
    options: dict[str, Any] = {
        "sender": "Blast Radius <alerts@receiver.example>",
        "recipients": ["oncall@example.com", "sre@example.com"],
        "timeout": 5,
    }
    options.update(kw)
    return EmailSender("127.0.0.1", port, **options)


async def test_email_is_delivered_with_subject_recipients_and_body(
    smtp_server: Callable[[RecordingHandler], int],
) -> None:
    """`send` tells the operators (RECEIVER_EMAIL_TO) only: the tenants' admins get
    messages of their own (the outbox queues one row per audience, `send_to`)."""
    handler = RecordingHandler()
    sender = email_sender(smtp_server(handler))
    msg = make_msg(
        tenants=(
            TenantSummary("acme", Tier.PLATINUM, "Acme Corp", "open", "ops@acme.io"),
            TenantSummary("beta", None, None, "forced_open", "OnCall@example.com"),
        )
    )
    reference = await sender.send(msg)
    assert reference == "2.0.0 Ok: queued as 4F2A1"

    ((mail_from, rcpt_tos, em),) = handler.received
    assert mail_from == "alerts@receiver.example"
    assert rcpt_tos == ["oncall@example.com", "sre@example.com"]
    assert em["Subject"] == "[P0] INC-20240501-0001 opened: Tenant acme error ratio above 50%"
    assert em["From"] == "Blast Radius <alerts@receiver.example>"
    assert em["To"] == "oncall@example.com, sre@example.com"
    assert re.fullmatch(r"<INC-20240501-0001\.[0-9a-f]{32}@receiver\.example>", em["Message-ID"])
    assert em["In-Reply-To"] is None
    assert em["Auto-Submitted"] == "auto-generated"
    assert em.get_content_type() == "text/plain"
    body = em.get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert body == (
        "Incident INC-20240501-0001 was opened at P0 (critical): 2 tenants affected.\n"
        "Acknowledge by 2024-05-01 12:15:00 UTC.\n"
        "\n"
        "  Incident: INC-20240501-0001\n"
        "  Title:    Tenant acme error ratio above 50%\n"
        "  Priority: P0 (critical)\n"
        "  Status:   open\n"
        "  Opened:   2024-05-01 12:00:00 UTC\n"
        "  Ack due:  2024-05-01 12:15:00 UTC\n"
        "\n"
        "Affected tenants (2):\n"
        "  - acme (Acme Corp): platinum tier, breaker open\n"
        "  - beta: tier unknown, breaker forced_open\n"
        "\n"
        "Runbooks:\n"
        f"  {RUNBOOK}\n"
        "\n"
        "Incident page:\n"
        f"  {INCIDENT_URL}\n"
        "\n"
        "-- \n"
        "Sent by blast-radius-receiver for incident.opened (2024-05-01 12:00:00 UTC).\n"
    )


async def test_email_follow_ups_thread_under_the_opening_message(
    smtp_server: Callable[[RecordingHandler], int],
) -> None:
    handler = RecordingHandler()
    sender = email_sender(smtp_server(handler))
    ops = ["oncall@example.com"]
    await sender.send_to(make_msg(), ops, message_key="a" * 32, thread_key="a" * 32)
    await sender.send_to(
        make_msg(
            event=NotificationEvent.RESOLVED,
            status="resolved",
            actor="bob",
            note="Rolled back the bad index.\n\nFollow-up in the postmortem.",
            title="Ünïcode tïtle — ok",
        ),
        ops,
        message_key="b" * 32,
        thread_key="a" * 32,
    )
    (_, _, first), (_, _, em) = handler.received
    root = f"<INC-20240501-0001.{'a' * 32}@receiver.example>"
    assert first["Message-ID"] == root and first["In-Reply-To"] is None
    assert em["Subject"] == "[P0] INC-20240501-0001 resolved by bob: Ünïcode tïtle — ok"
    assert em["In-Reply-To"] == root
    assert em["References"] == root
    assert em["Message-ID"] == f"<INC-20240501-0001.{'b' * 32}@receiver.example>"
    body = em.get_content().replace("\r\n", "\n")
    assert "  Resolved by: bob\n" in body
    assert "Note:\n  Rolled back the bad index.\n\n  Follow-up in the postmortem.\n" in body
    assert "Sent by blast-radius-receiver for incident.resolved.\n" in body


@pytest.mark.parametrize(
    ("handler_kw", "retryable", "code"),
    [
        ({"data_reply": "451 4.3.0 Temporary local problem, try later"}, True, 451),
        ({"data_reply": "550 5.7.1 Message rejected as spam"}, False, 550),
        ({"rcpt_reply": lambda _a: "451 4.7.1 Greylisted, come back later"}, True, 451),
        ({"rcpt_reply": lambda _a: "550 5.1.1 No such user"}, False, 550),
    ],
    ids=["data-451", "data-550", "rcpt-451", "rcpt-550"],
)
async def test_email_smtp_replies_are_classified(
    smtp_server: Callable[[RecordingHandler], int],
    handler_kw: dict[str, Any],
    retryable: bool,
    code: int,
) -> None:
    sender = email_sender(smtp_server(RecordingHandler(**handler_kw)))
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    err = info.value
    assert err.channel is Channel.EMAIL
    assert err.retryable is retryable and err.status == code
    assert f"SMTP {code}" in str(err)


async def test_email_partly_refused_recipients_are_reported_not_sent(
    smtp_server: Callable[[RecordingHandler], int],
) -> None:
    """Changed by issue 18: a partial refusal is no longer a success. `send_to` reports on
    each recipient (the worker records the row `failed` naming them, or retries the
    temporarily refused alone); `send` raises, permanent only when no refusal was 4xx."""
    handler = RecordingHandler(
        rcpt_reply=lambda a: "550 5.1.1 No such user" if a == "sre@example.com" else None
    )
    sender = email_sender(smtp_server(handler))
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    assert info.value.retryable is False and "sre@example.com (550 5.1.1" in str(info.value)
    ((_, rcpt_tos, _),) = handler.received
    assert rcpt_tos == ["oncall@example.com"]

    attempt = await sender.send_to(
        make_msg(), ["oncall@example.com", "sre@example.com"], message_key="k", thread_key=None
    )
    assert attempt.error is None
    assert {a: r.state for a, r in attempt.outcomes.items()} == {
        "oncall@example.com": "accepted",
        "sre@example.com": "refused",
    }


async def test_email_connection_refused_is_retryable() -> None:
    sender = email_sender(free_port())
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    assert info.value.retryable is True and "connection" in str(info.value)


async def test_email_timeout_is_retryable(
    smtp_server: Callable[[RecordingHandler], int],
) -> None:
    sender = email_sender(smtp_server(RecordingHandler(data_delay=2.0)), timeout=0.3)
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg())
    assert info.value.retryable is True and "timed out" in str(info.value)


async def test_email_without_any_recipient_is_permanent() -> None:
    sender = email_sender(free_port(), recipients=[])
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg(tenants=()))
    assert info.value.retryable is False


# --- wiring ------------------------------------------------------------------------


async def test_build_senders_leaves_out_unconfigured_channels(
    session: aiohttp.ClientSession,
) -> None:
    assert build_senders(session=session) == {}
    assert (
        build_senders(
            session=session,
            slack_webhook_url="",
            pagerduty_routing_key="",
            smtp_host="smtp.example",
            email_from="alerts@example.com",
            email_to=" , ",
        )
        == {}
    )
    # e-mail needs all of host, from and to
    assert Channel.EMAIL not in build_senders(
        session=session, smtp_host="smtp.example", email_to="a@example.com"
    )
    assert Channel.EMAIL not in build_senders(
        session=session, email_from="x@example.com", email_to="a@example.com"
    )


async def test_build_senders_with_everything(session: aiohttp.ClientSession) -> None:
    senders = build_senders(
        session=session,
        slack_webhook_url="https://hooks.slack.com/services/T/B/x",
        pagerduty_routing_key=ROUTING_KEY,
        pagerduty_events_url=None,
        smtp_host="smtp.example",
        smtp_port=2525,
        email_from="alerts@example.com",
        email_to='oncall@example.com, "Doe, Jane" <jane@example.com>,sre@example.com',
    )
    assert set(senders) == {Channel.SLACK, Channel.PAGERDUTY, Channel.EMAIL}
    for channel, sender in senders.items():
        assert isinstance(sender, Sender) and sender.channel is channel
    email_sender_ = senders[Channel.EMAIL]
    assert isinstance(email_sender_, EmailSender)
    assert list(email_sender_.operators) == [
        "oncall@example.com",
        "jane@example.com",
        "sre@example.com",
    ]
    assert "pagerduty.com/v2/enqueue" in repr(senders[Channel.PAGERDUTY])
    assert ROUTING_KEY not in repr(senders[Channel.PAGERDUTY])


def test_parse_addresses() -> None:
    assert parse_addresses(None) == []
    assert parse_addresses("a@x.io") == ["a@x.io"]
    assert parse_addresses(["a@x.io", "B <b@y.io>, c@z.io"]) == ["a@x.io", "b@y.io", "c@z.io"]


async def test_a_p2_that_escalates_to_p1_pages_then_acks_and_resolves(
    session: aiohttp.ClientSession,
    pagerduty: tuple[FakePagerDuty, str],
    slack: tuple[FakeSlack, str],
    smtp_server: Callable[[RecordingHandler], int],
) -> None:
    """Route each lifecycle event through `channels_for` to every configured sender."""
    pd, pd_url = pagerduty
    sl, sl_url = slack
    handler = RecordingHandler()
    senders = build_senders(
        session=session,
        slack_webhook_url=sl_url,
        pagerduty_routing_key=ROUTING_KEY,
        pagerduty_events_url=pd_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server(handler),
        email_from="alerts@receiver.example",
        email_to="oncall@example.com",
    )
    lifecycle = [
        make_msg(priority=Priority.P2),
        make_msg(
            event=NotificationEvent.ESCALATED, priority=Priority.P1, previous_priority=Priority.P2
        ),
        make_msg(event=NotificationEvent.ACKNOWLEDGED, priority=Priority.P1, actor="alice"),
        make_msg(event=NotificationEvent.RESOLVED, priority=Priority.P1, actor="system"),
    ]
    for msg in lifecycle:
        for channel in sorted(channels_for(msg.priority, msg.event)):
            await senders[channel].send(msg)

    assert [(e["event_action"], e["dedup_key"]) for e in pd.events] == [
        ("trigger", "INC-20240501-0001"),
        ("acknowledge", "INC-20240501-0001"),
        ("resolve", "INC-20240501-0001"),
    ]
    assert len(sl.posts) == 4
    assert [em["Subject"] for _, _, em in handler.received] == [
        "[P2] INC-20240501-0001 opened: Tenant acme error ratio above 50%"
    ]


def test_delivery_error_survives_pickling() -> None:
    """The worker may hand errors across processes or copy them into logs."""
    import pickle

    err = DeliveryError(
        Channel.SLACK, "HTTP 429", retryable=True, status=429, detail="rate_limited", retry_after=7
    )
    back = pickle.loads(pickle.dumps(err))
    assert (back.channel, back.retryable, back.status, back.retry_after) == (
        Channel.SLACK,
        True,
        429,
        7,
    )
    assert (
        str(back)
        == str(err)
        == ("slack delivery failed (retryable, retry after 7s): HTTP 429: rate_limited")
    )


async def test_a_message_a_channel_cannot_express_is_a_permanent_failure(
    session: aiohttp.ClientSession,
    pagerduty: tuple[FakePagerDuty, str],
    smtp_server: Callable[[RecordingHandler], int],
) -> None:
    fake, url = pagerduty
    with pytest.raises(DeliveryError) as info:
        # PagerDuty's dedup_key holds at most 255 characters.
        await PagerDutySender(session, ROUTING_KEY, events_url=url).send(
            make_msg(incident_id="INC-" + "9" * 300)
        )
    assert info.value.retryable is False and "cannot render" in str(info.value)
    assert fake.events == []

    handler = RecordingHandler()
    with pytest.raises(DeliveryError) as info:
        await email_sender(smtp_server(handler)).send(make_msg(incident_id="INC-1\nBcc: x@y.io"))
    assert info.value.retryable is False
    assert handler.received == []
