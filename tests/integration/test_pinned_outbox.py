"""Pinned outbox behaviour (issue 11, "Pin the behaviour first"), end to end through HTTP,
the outbox worker, local PagerDuty/Slack/SMTP servers and the `notifications` and
`audit_log` rows:

- per (incident, channel) the outbox delivers in order: a trigger still in backoff holds
  back the acknowledge and resolve queued behind it;
- the worker gives up at RECEIVER_NOTIFY_MAX_ATTEMPTS counted attempts (429s are not
  counted since issue 18), by time (RECEIVER_<CHANNEL>_GIVE_UP_SECONDS), and at once on a
  non-retryable answer, auditing every attempt as `notification.failed`;
- routing negatives (a P2 never pages, a P1 never mails, an unconfigured channel queues
  nothing) read from the `notifications` rows, not from a sleep.

The settings, the local Slack and the SMTP server come from test_notifications (its
`receiver` and `mailbox` fixtures); `provider` is overridden here by a subclass of its
Provider whose PagerDuty can be told to fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import API_HEADERS, WEBHOOK_HEADERS
from tests.integration import test_notifications as notifications
from tests.integration.test_notifications import PD_KEY, Provider, alert, eventually, open_incident

# Fixtures reused by name: the settings, the local Slack/PagerDuty server's wiring and SMTP.
receiver = notifications.receiver
mailbox = notifications.mailbox

Rows = Callable[..., list[tuple[Any, ...]]]
HIGH_CAP = 10_000  # notify_max_attempts for tests where giving up must not happen


@dataclass
class ScriptedProvider(Provider):
    """test_notifications' PagerDuty + Slack, whose PagerDuty answers 500 and 429 (in
    turn) while `pagerduty_down`, and 400 while `pagerduty_rejects`. Every attempt is
    recorded as (event_action, status answered)."""

    pagerduty_down: bool = False
    pagerduty_rejects: bool = False
    pagerduty_attempts: list[tuple[str, int]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self.scripted_enqueue)
        app.router.add_post("/slack/hook", self.slack_hook)
        return app

    async def scripted_enqueue(self, request: web.Request) -> web.Response:
        body = await request.json()
        action = str(body.get("event_action"))
        if self.pagerduty_rejects:
            self.pagerduty_attempts.append((action, 400))
            return web.json_response({"status": "invalid event"}, status=400)
        if self.pagerduty_down:
            failures = sum(1 for _, status in self.pagerduty_attempts if status >= 429)
            status = 500 if failures % 2 == 0 else 429
            self.pagerduty_attempts.append((action, status))
            if status == 429:
                return web.json_response({"status": "throttled"}, status=429)
            return web.Response(status=500, text="internal error")
        response = await self.enqueue(request)
        self.pagerduty_attempts.append((action, response.status))
        return response


@pytest.fixture
async def provider(aiohttp_server: Any) -> tuple[ScriptedProvider, str]:
    """Overrides test_notifications' `provider` for its `receiver` fixture."""
    p = ScriptedProvider()
    server = await aiohttp_server(p.app())
    return p, str(server.make_url("")).rstrip("/")


def pd_rows(sql: Rows, incident: str) -> list[tuple[Any, ...]]:
    """(id, event, status, attempts, sent_at, last_error) of PagerDuty rows, oldest first."""
    return sql(
        "SELECT id, event, status, attempts, sent_at, last_error FROM notifications "
        "WHERE incident_id = %s AND channel = 'pagerduty' ORDER BY id",
        incident,
    )


def channel_audit(sql: Rows, action: str, incident: str, channel: str) -> list[dict[str, Any]]:
    return [
        d
        for (d,) in sql(
            "SELECT details FROM audit_log WHERE action = %s AND incident_id = %s "
            "AND details->>'channel' = %s ORDER BY id",
            action,
            incident,
            channel,
        )
    ]


def nothing_pending(sql: Rows) -> Callable[[], bool]:
    return lambda: sql("SELECT count(*) FROM notifications WHERE status = 'pending'") == [(0,)]


async def act(client: Any, incident: str, action: str) -> None:
    resp = await client.post(
        f"/v1/incidents/{incident}/{action}", json={"actor": "alice"}, headers=API_HEADERS
    )
    assert resp.status == 200, await resp.text()


# --- order per (incident, channel) -----------------------------------------------------------


async def test_a_trigger_in_backoff_holds_back_the_acknowledge_and_resolve(receiver, provider, sql):
    p, _ = provider
    p.pagerduty_down = True
    client = await receiver(notify_max_attempts=HIGH_CAP)
    incident = await open_incident(client, "acme", "gold")  # P1: PagerDuty and Slack

    # The trigger has failed at least twice: it is in backoff, pending.
    await eventually(lambda: len(p.pagerduty_attempts) >= 2)
    await act(client, incident, "acknowledge")
    await act(client, incident, "resolve")
    queued_at = len(p.pagerduty_attempts)
    # The trigger keeps being retried while the two behind it wait, never attempted.
    await eventually(lambda: len(p.pagerduty_attempts) >= queued_at + 2)
    rows = pd_rows(sql, incident)
    assert [(event, status) for _, event, status, *_ in rows] == [
        ("incident.opened", "pending"),
        ("incident.acknowledged", "pending"),
        ("incident.resolved", "pending"),
    ]
    assert rows[0][3] >= 2 and rows[1][3] == 0 and rows[2][3] == 0
    assert {action for action, _ in p.pagerduty_attempts} == {"trigger"}
    assert {status for _, status in p.pagerduty_attempts} == {500, 429}

    p.pagerduty_down = False
    await eventually(lambda: all(r[2] == "sent" for r in pd_rows(sql, incident)))

    assert [(e["event_action"], e["dedup_key"]) for e in p.pagerduty] == [
        ("trigger", incident),
        ("acknowledge", incident),
        ("resolve", incident),
    ]
    failed = [a for a, status in p.pagerduty_attempts if status != 202]
    assert set(failed) == {"trigger"}
    assert [a for a, status in p.pagerduty_attempts if status == 202] == [
        "trigger",
        "acknowledge",
        "resolve",
    ]
    rows = pd_rows(sql, incident)
    trigger, ack, resolve = rows
    assert trigger[3] == len(failed) + 1 and ack[3] == 1 and resolve[3] == 1
    assert trigger[4] < ack[4] < resolve[4]  # sent_at
    assert all(r[5] is None for r in rows)  # last_error cleared once sent

    failures = channel_audit(sql, "notification.failed", incident, "pagerduty")
    assert [(d["event"], d["attempt"], d["will_retry"]) for d in failures] == [
        ("incident.opened", n, True) for n in range(1, len(failed) + 1)
    ]
    sent = channel_audit(sql, "notification.sent", incident, "pagerduty")
    assert [(d["event"], d["attempt"]) for d in sent] == [
        ("incident.opened", len(failed) + 1),
        ("incident.acknowledged", 1),
        ("incident.resolved", 1),
    ]


# --- giving up ---------------------------------------------------------------------------


async def test_the_worker_gives_up_at_notify_max_attempts(receiver, provider, sql):
    """Changed on purpose by issue 18: a 429 (throttled) is not counted against
    RECEIVER_NOTIFY_MAX_ATTEMPTS (the worker paces the channel and honours Retry-After
    instead of spending attempts on it), so against 500, 429, 500, 429, 500 the third
    counted attempt is the fifth try. Each try is still audited and counted in
    `attempts`; the 429s are marked `throttled`."""
    p, _ = provider
    p.pagerduty_down = True
    client = await receiver(notify_max_attempts=3)
    incident = await open_incident(client, "globex", "gold")

    await eventually(lambda: pd_rows(sql, incident)[0][2] == "failed")
    ((row_id, event, status, attempts, sent_at, last_error),) = pd_rows(sql, incident)
    assert (event, status, attempts, sent_at) == ("incident.opened", "failed", 5, None)
    assert "500" in last_error  # the fifth answer (500, 429, 500, 429, 500)
    assert "gave up: 3 attempts (RECEIVER_NOTIFY_MAX_ATTEMPTS)" in last_error
    failures = channel_audit(sql, "notification.failed", incident, "pagerduty")
    assert [
        (d["attempt"], d["will_retry"], d["event"], d.get("throttled", False)) for d in failures
    ] == [
        (1, True, "incident.opened", False),
        (2, True, "incident.opened", True),
        (3, True, "incident.opened", False),
        (4, True, "incident.opened", True),
        (5, False, "incident.opened", False),
    ]
    assert {d["notification_id"] for d in failures} == {row_id}
    assert failures[-1]["retry_at"] is None
    assert channel_audit(sql, "notification.sent", incident, "pagerduty") == []
    assert p.pagerduty_attempts == [
        ("trigger", 500),
        ("trigger", 429),
        ("trigger", 500),
        ("trigger", 429),
        ("trigger", 500),
    ]
    assert p.pagerduty == []
    await eventually(lambda: len(p.slack) == 1)  # other channels are unaffected

    # PagerDuty recovers. The given-up trigger stays given up (the worker demonstrably ran:
    # it delivered the acknowledge queued behind it on the same channel).
    p.pagerduty_down = False
    await act(client, incident, "acknowledge")
    await eventually(lambda: len(pd_rows(sql, incident)) == 2 and nothing_pending(sql)())
    trigger, ack = pd_rows(sql, incident)
    assert (trigger[2], trigger[3]) == ("failed", 5)
    assert (ack[1], ack[2], ack[3]) == ("incident.acknowledged", "sent", 1)
    assert [a for a, _ in p.pagerduty_attempts].count("trigger") == 5
    assert [e["event_action"] for e in p.pagerduty] == ["acknowledge"]


async def test_the_worker_gives_up_by_time(receiver, provider, sql):
    """Issue 18: without a count limit (the default), a failing page is retried until its
    channel's give-up time (RECEIVER_PAGERDUTY_GIVE_UP_SECONDS, an hour by default)."""
    p, _ = provider
    p.pagerduty_down = True
    client = await receiver(pagerduty_give_up_seconds=1.5)
    incident = await open_incident(client, "hooli", "gold")

    await eventually(lambda: pd_rows(sql, incident)[0][2] == "failed")
    ((_, _, status, attempts, _, last_error),) = pd_rows(sql, incident)
    # Retried, then given up by time (how many tries fit in 1.5 s depends on the machine's
    # load: the reason, not the count, says which limit ended it).
    assert status == "failed" and attempts >= 2
    assert "gave up: out of time (RECEIVER_PAGERDUTY_GIVE_UP_SECONDS)" in last_error
    (created, failed_at) = sql(
        "SELECT n.created_at, max(a.occurred_at) FROM notifications n JOIN audit_log a "
        "ON a.details->>'notification_id' = n.id::text WHERE n.channel = 'pagerduty' "
        "GROUP BY n.created_at"
    )[0]
    assert 1.4 <= (failed_at - created).total_seconds() < 15  # not before its time
    failures = channel_audit(sql, "notification.failed", incident, "pagerduty")
    assert [d["will_retry"] for d in failures] == [True] * (len(failures) - 1) + [False]


async def test_a_non_retryable_answer_gives_up_at_once(receiver, provider, sql):
    p, _ = provider
    p.pagerduty_rejects = True
    client = await receiver()  # the defaults: no count limit, an hour for pages
    incident = await open_incident(client, "initech", "gold")

    await eventually(lambda: pd_rows(sql, incident)[0][2] == "failed")
    ((row_id, _, status, attempts, sent_at, last_error),) = pd_rows(sql, incident)
    assert (status, attempts, sent_at) == ("failed", 1, None)
    assert "400" in last_error and PD_KEY not in last_error
    (failure,) = channel_audit(sql, "notification.failed", incident, "pagerduty")
    assert (failure["attempt"], failure["will_retry"], failure["notification_id"]) == (
        1,
        False,
        row_id,
    )
    assert failure["event"] == "incident.opened" and "400" in failure["error"]
    assert PD_KEY not in str(failure)
    await eventually(lambda: len(p.slack) == 1 and nothing_pending(sql)())
    assert p.pagerduty_attempts == [("trigger", 400)]
    assert sql("SELECT status FROM notifications WHERE channel = 'slack'") == [("sent",)]


# --- routing negatives, read from the rows ----------------------------------------------------


def queued(sql: Rows, incident: str) -> list[tuple[str, str, str]]:
    return sql(
        "SELECT event, channel, status FROM notifications WHERE incident_id = %s "
        "ORDER BY event, channel",
        incident,
    )


def each(events: tuple[str, ...], channels: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return sorted((e, c, "sent") for e in events for c in channels)


LIFECYCLE = ("incident.opened", "incident.acknowledged", "incident.resolved")


async def test_a_p2_never_pages(receiver, provider, mailbox, sql):
    p, _ = provider
    box, _ = mailbox
    client = await receiver()
    incident = await open_incident(client, "hooli", "bronze")
    await act(client, incident, "acknowledge")
    await act(client, incident, "resolve")
    await eventually(nothing_pending(sql))
    assert queued(sql, incident) == each(LIFECYCLE, ("email", "slack"))
    assert sql("SELECT count(*) FROM notifications WHERE channel = 'pagerduty'") == [(0,)]
    assert p.pagerduty_attempts == [] and len(p.slack) == 3 and len(box.messages) == 3


async def test_a_p1_never_mails(receiver, provider, mailbox, sql):
    p, _ = provider
    box, _ = mailbox
    client = await receiver()
    incident = await open_incident(client, "umbrella", "gold")
    await act(client, incident, "acknowledge")
    await act(client, incident, "resolve")
    await eventually(nothing_pending(sql))
    assert queued(sql, incident) == each(LIFECYCLE, ("pagerduty", "slack"))
    assert sql("SELECT count(*) FROM notifications WHERE channel = 'email'") == [(0,)]
    assert box.messages == [] and len(p.pagerduty) == 3


async def test_an_unconfigured_channel_queues_nothing(receiver, provider, mailbox, sql):
    p, _ = provider
    box, _ = mailbox
    client = await receiver(pagerduty_routing_key=None, smtp_host=None)  # Slack only
    incident = await open_incident(client, "wayne", "platinum")  # P0 routes to all three
    await act(client, incident, "resolve")
    await eventually(nothing_pending(sql))
    assert queued(sql, incident) == each(("incident.opened", "incident.resolved"), ("slack",))
    assert channel_audit(sql, "notification.failed", incident, "pagerduty") == []
    assert p.pagerduty_attempts == [] and box.messages == []


async def test_an_escalated_p2_pages_from_the_escalation_on_and_keeps_mail_informed(
    receiver, provider, mailbox, sql
):
    p, _ = provider
    client = await receiver()
    incident = await open_incident(client, "small", "bronze")
    await client.put("/v1/tenants/big", json={"tier": "gold"}, headers=API_HEADERS)
    resp = await client.post("/v1/alertmanager", json=alert("big"), headers=WEBHOOK_HEADERS)
    assert (await resp.json())["incidents"] == [incident]
    await act(client, incident, "resolve")
    await eventually(nothing_pending(sql))
    assert queued(sql, incident) == sorted(
        [
            ("incident.opened", "email", "sent"),
            ("incident.opened", "slack", "sent"),
            *each(("incident.escalated", "incident.resolved"), ("email", "pagerduty", "slack")),
        ]
    )
    assert [e["event_action"] for e in p.pagerduty] == ["trigger", "resolve"]
