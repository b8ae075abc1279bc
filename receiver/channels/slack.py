"""Slack incoming webhooks (https://api.slack.com/messaging/webhooks) with Block Kit.

The webhook URL is a secret: it never appears in errors, logs or reprs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp

from receiver.channels.base import excerpt, post_json, read_excerpt, unrenderable
from receiver.domain.notification import (
    SOURCE,
    Channel,
    IncidentMessage,
    NotificationEvent,
    format_time,
    headline,
    severity_word,
    tenant_line,
    tenants_by_tier,
    what_happened,
)

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
FALLBACK_MAX = 3000
CONTEXT_TEXT_MAX = 2000
BLOCKS_MAX = 50

_EMOJI = {
    NotificationEvent.OPENED: ":rotating_light:",
    NotificationEvent.ESCALATED: ":arrow_double_up:",
    NotificationEvent.ACKNOWLEDGED: ":eyes:",
    NotificationEvent.RESOLVED: ":white_check_mark:",
    NotificationEvent.SLA_BREACHED: ":alarm_clock:",
}

_EVENT_WORD = {
    NotificationEvent.OPENED: "opened",
    NotificationEvent.ESCALATED: "escalated",
    NotificationEvent.ACKNOWLEDGED: "acknowledged",
    NotificationEvent.RESOLVED: "resolved",
    NotificationEvent.SLA_BREACHED: "SLA breached",
}

_ACTOR_LABEL = {
    NotificationEvent.ACKNOWLEDGED: "Acknowledged by",
    NotificationEvent.RESOLVED: "Resolved by",
}


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters.

    This also keeps text from alerts from pinging (`<!channel>`) or linking.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, label: str | None = None) -> str:
    """A mrkdwn link for http(s) URLs; anything else is shown as escaped text."""
    if not url.lower().startswith(("http://", "https://")):
        return escape(url)
    safe = (
        url.replace("&", "&amp;")
        .replace("<", "%3C")
        .replace(">", "%3E")
        .replace("|", "%7C")
        .replace(" ", "%20")
    )
    text = escape(label if label is not None else url).replace("|", "¦")
    return f"<{safe}|{text}>"


def slack_time(dt: datetime) -> str:
    """A date each reader sees in their own time zone, with a UTC fallback."""
    return f"<!date^{int(dt.timestamp())}^{{date_short_pretty}} {{time}}|{format_time(dt)}>"


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, ending in '…' when cut; never through an entity
    ('&amp;') or a '<url|label>' / '<!date^...>' sequence, which Slack would show broken
    or refuse: the cut moves back to before it."""
    if len(text) <= limit:
        return text
    head = text[: max(limit - 1, 0)]
    opened = head.rfind("<")
    if opened != -1 and ">" not in head[opened:]:
        head = head[:opened]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + "…"


_clip = clip


def _bulleted(title: str, lines: list[str], limit: int) -> str:
    """'*title*' then '• line' rows, cut with '…and N more' to stay within `limit`."""
    out = f"*{title}*"
    for i, line in enumerate(lines):
        row = f"\n• {line}"
        left_after = len(lines) - i - 1
        reserve = len(f"\n…and {left_after} more") if left_after else 0
        if len(out) + len(row) + reserve > limit:
            return out + f"\n…and {len(lines) - i} more"
        out += row
    return out


def _fields(msg: IncidentMessage) -> list[str]:
    """The section of short facts: priority, status, ack due, opened, who acted."""
    priority = f"{msg.priority} ({severity_word(msg.priority)})"
    if msg.previous_priority is not None and msg.previous_priority != msg.priority:
        priority += f", was {msg.previous_priority}"
    due_label = "Ack was due" if msg.event is NotificationEvent.SLA_BREACHED else "Ack due"
    fields = [
        f"*Priority*\n{priority}",
        f"*Status*\n{escape(msg.status)}",
        f"*{due_label}*\n{slack_time(msg.ack_due_at)}",
        f"*Opened*\n{slack_time(msg.opened_at)}",
    ]
    if msg.actor:
        fields.append(f"*{_ACTOR_LABEL.get(msg.event, 'By')}*\n{escape(msg.actor)}")
    return fields


def render_payload(msg: IncidentMessage) -> dict[str, Any]:
    """The incoming-webhook body: fallback `text` plus Block Kit `blocks`."""
    word = _EVENT_WORD[msg.event]
    header = _clip(f"{_EMOJI[msg.event]} {msg.priority} · {msg.incident_id} · {word}", HEADER_MAX)

    title = escape(" ".join(msg.title.split()) or "(no title)")
    if msg.incident_url:
        title = link(msg.incident_url, " ".join(msg.title.split()) or msg.incident_id)
    intro = _clip(f"*{title}*\n{escape(what_happened(msg))}", SECTION_TEXT_MAX)

    fields = _fields(msg)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": intro}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": _clip(f, FIELD_TEXT_MAX)} for f in fields[:10]],
        },
    ]

    if msg.tenants:
        tenant_rows = [escape(tenant_line(t)) for t in tenants_by_tier(msg.tenants)]
        text = _bulleted(f"Tenants ({len(msg.tenants)})", tenant_rows, SECTION_TEXT_MAX)
    else:
        text = "*Tenants*\nnone isolated: platform-wide failure"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})

    runbooks = [link(u) for u in msg.runbook_urls if u]
    if runbooks:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _bulleted("Runbooks", runbooks, SECTION_TEXT_MAX),
                },
            }
        )
    if msg.note:
        quoted = "\n".join(f">{line}" for line in escape(msg.note).splitlines() or [""])
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(f"*Note*\n{quoted}", SECTION_TEXT_MAX)},
            }
        )
    context = f"{SOURCE} · {msg.event.value} · {msg.incident_id}"
    if msg.event_time is not None:
        context += f" · {slack_time(msg.event_time)}"
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _clip(context, CONTEXT_TEXT_MAX)}],
        }
    )

    return {
        "text": _clip(escape(headline(msg)), FALLBACK_MAX),
        "blocks": blocks[:BLOCKS_MAX],
        "unfurl_links": False,
        "unfurl_media": False,
    }


class SlackSender:
    """Posts to one incoming webhook; returns Slack's answer ('ok')."""

    channel = Channel.SLACK

    def __init__(self, session: aiohttp.ClientSession, webhook_url: str, timeout: float = 10):
        if not webhook_url:
            raise ValueError("Slack webhook URL is empty")
        self._session = session
        self._webhook_url = webhook_url
        self._timeout = timeout

    def __repr__(self) -> str:  # the webhook URL is a credential
        return "SlackSender(webhook_url=***)"

    async def send(self, msg: IncidentMessage) -> str:
        try:
            payload = render_payload(msg)
        except (ValueError, KeyError) as exc:
            raise unrenderable(self.channel, exc) from exc
        secrets = (self._webhook_url,)

        async def accepted(resp: aiohttp.ClientResponse) -> str:
            return excerpt(await read_excerpt(resp, secrets=secrets), limit=64) or "ok"

        return await post_json(
            self._session,
            self.channel,
            self._webhook_url,
            payload,
            what=f"{msg.event.value} {msg.incident_id}",
            time_limit=self._timeout,
            secrets=secrets,
            accepted=accepted,
        )
