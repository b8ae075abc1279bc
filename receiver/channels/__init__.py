"""Notification channels: one sender per channel, built from the settings.

The outbox worker looks up `senders[channel]` for each pending row; a channel without
its settings is simply absent, and its rows have nowhere to go.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import getaddresses

import aiohttp

from receiver.channels.base import DeliveryError, Sender
from receiver.channels.email import EmailSender
from receiver.channels.pagerduty import DEFAULT_EVENTS_URL, PagerDutySender
from receiver.channels.slack import SlackSender
from receiver.domain.notification import Channel

__all__ = [
    "DeliveryError",
    "EmailSender",
    "PagerDutySender",
    "Sender",
    "SlackSender",
    "build_senders",
    "parse_addresses",
]


def parse_addresses(value: str | Sequence[str] | None) -> list[str]:
    """Bare addresses from 'a@x, Ops Team <b@y>' or a list of such strings.

    Quoted display names may contain commas ('"Doe, Jane" <j@x>'), so this parses
    addresses properly instead of splitting on commas.
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [addr.strip() for _, addr in getaddresses(items) if addr.strip()]


def build_senders(
    *,
    session: aiohttp.ClientSession,
    slack_webhook_url: str | None = None,
    pagerduty_routing_key: str | None = None,
    pagerduty_events_url: str | None = None,
    smtp_host: str | None = None,
    smtp_port: int | None = 25,
    email_from: str | None = None,
    email_to: str | Sequence[str] | None = None,
    timeout: float = 10,
    smtp_use_tls: bool = False,
    smtp_start_tls: bool | None = None,
    smtp_username: str | None = None,
    smtp_password: str | None = None,
) -> dict[Channel, Sender]:
    """The configured senders. Empty strings count as unset (an empty env variable).

    Slack needs the webhook URL, PagerDuty the routing key (the events URL defaults to
    PagerDuty's), e-mail needs host, from and at least one to-address.
    """
    senders: dict[Channel, Sender] = {}
    if slack_webhook_url:
        senders[Channel.SLACK] = SlackSender(session, slack_webhook_url, timeout=timeout)
    if pagerduty_routing_key:
        senders[Channel.PAGERDUTY] = PagerDutySender(
            session,
            pagerduty_routing_key,
            events_url=pagerduty_events_url or DEFAULT_EVENTS_URL,
            timeout=timeout,
        )
    recipients = parse_addresses(email_to)
    if smtp_host and email_from and recipients:
        senders[Channel.EMAIL] = EmailSender(
            smtp_host,
            smtp_port or 25,
            sender=email_from,
            recipients=recipients,
            timeout=timeout,
            use_tls=smtp_use_tls,
            start_tls=smtp_start_tls,
            username=smtp_username or None,
            password=smtp_password or None,
        )
    return senders
