"""PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/overview).

One PagerDuty alert per incident: `dedup_key` is the incident id, so the opening trigger,
re-triggers (escalation, SLA breach), acknowledge and resolve all address the same alert.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from receiver.channels.base import post_json, unrenderable
from receiver.domain.notification import (
    SOURCE,
    Channel,
    IncidentMessage,
    NotificationEvent,
    affected_phrase,
    format_time,
    headline,
    tenant_line,
    tenants_by_tier,
    tier_counts,
    what_happened,
)
from receiver.domain.tiers import Priority

log = logging.getLogger(__name__)

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
#: The Events API refuses bodies over 512 KB; a trigger stays far below, whatever the
#: number of tenants (tests/integration/test_channels.py sends 5,000).
BODY_MAX_BYTES = 512 * 1024
BODY_BUDGET_BYTES = 64 * 1024
TENANTS_LISTED = 20
TENANT_LINE_MAX = 300
TEXT_MAX = 2000
URL_MAX = 2048
RUNBOOKS_MAX = 10
#: The severities the Events API accepts.
SEVERITIES = frozenset({"critical", "error", "warning", "info"})

_ACTIONS: dict[NotificationEvent, str] = {
    NotificationEvent.OPENED: "trigger",
    NotificationEvent.ESCALATED: "trigger",
    NotificationEvent.SLA_BREACHED: "trigger",
    NotificationEvent.ACKNOWLEDGED: "acknowledge",
    NotificationEvent.RESOLVED: "resolve",
}

SEVERITY: dict[Priority, str] = {
    Priority.P0: "critical",
    Priority.P1: "error",
    Priority.P2: "warning",
}


def severity(msg: IncidentMessage) -> str:
    """PagerDuty's severity for `msg`: one of SEVERITIES, whatever the priority."""
    value = SEVERITY.get(msg.priority, "critical")
    return value if value in SEVERITIES else "critical"


def event_action(event: NotificationEvent) -> str:
    return _ACTIONS[event]


def render_event(msg: IncidentMessage, *, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for `msg`.

    acknowledge and resolve carry only routing_key, event_action and dedup_key (PagerDuty
    ignores anything else on them); trigger carries the payload, links and client.
    """
    if len(msg.incident_id) > DEDUP_KEY_MAX:
        raise ValueError(f"incident id longer than {DEDUP_KEY_MAX} characters")
    action = _ACTIONS[msg.event]
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": msg.incident_id,
    }
    if action != "trigger":
        return body

    summary = f"{headline(msg)} ({affected_phrase(msg)})"
    if len(summary) > SUMMARY_MAX:
        summary = summary[: SUMMARY_MAX - 1] + "…"
    if len(msg.tenants) == 1:
        component = f"tenant:{msg.tenants[0].tenant_id}"
    elif msg.tenants:
        component = f"{len(msg.tenants)} tenants"
    else:
        component = "platform"
    body["payload"] = {
        "summary": summary,
        "source": SOURCE,
        "severity": severity(msg),
        "component": component,
        "group": "tenant-isolation" if msg.tenants else "platform",
        "class": msg.event.value,
        "custom_details": _custom_details(msg),
    }
    if msg.event_time is not None:
        body["payload"]["timestamp"] = msg.event_time.isoformat()
    body["client"] = SOURCE
    if msg.incident_url:
        body["client_url"] = msg.incident_url
    links = _links(msg)
    if links:
        body["links"] = links
    return _fit(body, msg)


def _custom_details(msg: IncidentMessage, *, listed: int = TENANTS_LISTED) -> dict[str, Any]:
    """What a trigger's payload tells the responder beyond its summary: the first
    `listed` tenants by tier, how many there are in all, and a link to the incident
    (whose page lists them all). Bounded whatever the number of tenants."""
    ordered = tenants_by_tier(msg.tenants)
    shown = ordered[:listed]
    details: dict[str, Any] = {
        "what_happened": _clip(what_happened(msg), TEXT_MAX),
        "incident_id": msg.incident_id,
        "event": msg.event.value,
        "priority": msg.priority.value,
        "status": msg.status,
        "opened_at": msg.opened_at.isoformat(),
        "ack_due_at": msg.ack_due_at.isoformat(),
        "ack_due": format_time(msg.ack_due_at),
        "tenant_count": len(ordered),
        "tenants_by_tier": tier_counts(ordered),
        "tenants": [_clip(tenant_line(t), TENANT_LINE_MAX) for t in shown],
        "tenants_not_listed": len(ordered) - len(shown),
        "runbooks": _urls(msg.runbook_urls)[:RUNBOOKS_MAX],
    }
    if msg.previous_priority is not None:
        details["previous_priority"] = msg.previous_priority.value
    if msg.actor:
        details["actor"] = _clip(msg.actor, TENANT_LINE_MAX)
    if msg.note:
        details["note"] = _clip(msg.note, TEXT_MAX)
    if msg.incident_url:
        details["incident_url"] = msg.incident_url
    return details


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _urls(urls: Sequence[str]) -> list[str]:
    return [u for u in urls if u and len(u) <= URL_MAX]


def body_size(body: Mapping[str, Any]) -> int:
    """Bytes of `body` as aiohttp sends it (json.dumps, ASCII-escaped)."""
    return len(json.dumps(body).encode("utf-8"))


def _fit(body: dict[str, Any], msg: IncidentMessage) -> dict[str, Any]:
    """Keep a trigger within BODY_BUDGET_BYTES: list fewer tenants, then none and no
    note. (Already small by construction; this holds it whatever the inputs.)"""
    listed = TENANTS_LISTED
    while body_size(body) > BODY_BUDGET_BYTES and listed > 0:
        listed //= 2
        body["payload"]["custom_details"] = _custom_details(msg, listed=listed)
    if body_size(body) > BODY_BUDGET_BYTES:
        body["payload"]["custom_details"].pop("note", None)
        body.pop("links", None)
    return body


def _links(msg: IncidentMessage) -> list[dict[str, str]]:
    links: list[dict[str, str]] = []
    runbooks = _urls(msg.runbook_urls)[:RUNBOOKS_MAX]
    for i, url in enumerate(runbooks, start=1):
        links.append({"href": url, "text": "Runbook" if len(runbooks) == 1 else f"Runbook {i}"})
    if msg.incident_url:
        links.append({"href": msg.incident_url, "text": f"Incident {msg.incident_id}"})
    return links


class PagerDutySender:
    """Sends Events API v2 events; returns the dedup_key PagerDuty acknowledged."""

    channel = Channel.PAGERDUTY

    def __init__(
        self,
        session: aiohttp.ClientSession,
        routing_key: str,
        events_url: str = DEFAULT_EVENTS_URL,
        timeout: float = 10,
    ) -> None:
        if not routing_key:
            raise ValueError("PagerDuty routing key is empty")
        self._session = session
        self._routing_key = routing_key
        self._events_url = events_url
        self._timeout = timeout

    def __repr__(self) -> str:  # never show the routing key
        return f"PagerDutySender(events_url={self._events_url!r})"

    async def send(self, msg: IncidentMessage) -> str:
        try:
            body = render_event(msg, routing_key=self._routing_key)
        except (ValueError, KeyError) as exc:
            raise unrenderable(self.channel, exc) from exc

        async def accepted(resp: aiohttp.ClientResponse) -> str:
            return await self._dedup_key(resp, fallback=msg.incident_id)

        return await post_json(
            self._session,
            self.channel,
            self._events_url,
            body,
            what=f"{body['event_action']} {msg.incident_id}",
            time_limit=self._timeout,
            secrets=(self._routing_key,),
            headers={"Accept": "application/json"},
            accepted=accepted,
        )

    @staticmethod
    async def _dedup_key(resp: aiohttp.ClientResponse, *, fallback: str) -> str:
        # 202 {"status": "success", "message": "Event processed", "dedup_key": "..."}
        # The status line already says the event was accepted: a body we cannot read
        # does not make the delivery fail.
        try:
            data = await resp.json(content_type=None)
        except (ValueError, aiohttp.ClientError, TimeoutError):
            log.warning("PagerDuty accepted the event but its answer was unreadable")
            return fallback
        if isinstance(data, dict) and isinstance(data.get("dedup_key"), str):
            return str(data["dedup_key"])
        return fallback
