"""Notification channels: one sender per channel, built from the settings.

The outbox worker looks up `senders[channel]` for each pending row; a channel without
its settings is simply absent, and its rows have nowhere to go.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from receiver.channels.base import DeliveryError, RecipientSender, Sender
from receiver.channels.email import EmailSender, TlsMode
from receiver.channels.pagerduty import DEFAULT_EVENTS_URL, PagerDutySender
from receiver.channels.slack import SlackSender
from receiver.domain.notification import Channel
from receiver.domain.recipients import parse_addresses

__all__ = [
    "DeliveryError",
    "EmailSender",
    "PagerDutySender",
    "RecipientSender",
    "Sender",
    "SlackSender",
    "build_senders",
    "parse_addresses",
]


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
    smtp_tls: TlsMode | None = None,
    smtp_ca_file: str | None = None,
    smtp_max_recipients: int = 100,
) -> dict[Channel, Sender]:
    """The configured senders. Empty strings count as unset (an empty env variable).

    Slack needs the webhook URL, PagerDuty the routing key (the events URL defaults to
    PagerDuty's), e-mail needs host, from and at least one to-address. `smtp_tls` wins
    over the older `smtp_use_tls` (implicit) and `smtp_start_tls` (True: starttls,
    False: none, None: auto).
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
        if smtp_tls is None:
            smtp_tls = _legacy_tls(use_tls=smtp_use_tls, start_tls=smtp_start_tls)
        senders[Channel.EMAIL] = EmailSender(
            smtp_host,
            smtp_port or 25,
            sender=email_from,
            recipients=recipients,
            timeout=timeout,
            tls=smtp_tls,
            ca_file=smtp_ca_file or None,
            username=smtp_username or None,
            password=smtp_password or None,
            max_recipients=smtp_max_recipients,
        )
    return senders


def _legacy_tls(*, use_tls: bool, start_tls: bool | None) -> TlsMode:
    if use_tls:
        return "implicit"
    if start_tls is None:
        return "auto"
    return "starttls" if start_tls else "none"
