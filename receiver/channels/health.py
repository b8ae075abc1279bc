"""What the outbox worker last learnt about each channel's configuration, for /readyz.

A configuration error (a certificate that does not verify, credentials refused) is kept
until the channel next delivers something. Informational: readiness does not depend on
it (a broken mail relay must not take the webhook out of the load balancer). Per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from receiver.domain.notification import Channel


@dataclass
class ChannelHealth:
    errors: dict[Channel, tuple[str, datetime]] = field(default_factory=dict)

    def configuration_error(self, channel: Channel, error: str, *, now: datetime) -> None:
        self.errors[channel] = (error, now)

    def delivered(self, channel: Channel) -> None:
        self.errors.pop(channel, None)

    def report(self, channels: list[Channel]) -> dict[str, str]:
        """channel -> 'ok' or 'configuration error since <time>: <error>'."""
        out = {}
        for channel in sorted(channels):
            seen = self.errors.get(channel)
            out[channel.value] = (
                "ok"
                if seen is None
                else f"configuration error since {seen[1].isoformat()}: {seen[0]}"
            )
        return out
