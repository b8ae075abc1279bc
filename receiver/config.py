"""What the service layer needs from the settings, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from receiver.domain.breaker import BreakerPolicy
from receiver.domain.notification import Channel
from receiver.settings import Settings


@dataclass(frozen=True)
class ServiceConfig:
    tenant_label: str = "tenant_id"
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    max_isolated_percent: float = 20.0
    correlation_window: timedelta = timedelta(minutes=10)
    # Channels with settings; the outbox only queues for these.
    enabled_channels: frozenset[Channel] = frozenset()
    # Base URL of this receiver as people reach it, for links in notifications.
    public_url: str | None = None
    # The dead man's switch: the heartbeat alert's name, and the silence after which the
    # pipeline is reported silent (None: off).
    heartbeat_alertname: str = "Watchdog"
    heartbeat_timeout: timedelta | None = timedelta(seconds=300)
    # The operators' e-mail addresses (RECEIVER_EMAIL_TO): they hear everything.
    email_to: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceConfig:
        return cls(
            tenant_label=settings.tenant_label,
            breaker=BreakerPolicy(
                open_seconds=settings.breaker_open_seconds,
                max_open_seconds=settings.breaker_max_open_seconds,
                half_open_probes=settings.half_open_probes,
                probe_failure_ratio=settings.probe_failure_ratio,
                probation_seconds=settings.half_open_probation_seconds,
                half_open_admit_ratio=settings.half_open_admit_ratio,
            ),
            max_isolated_percent=settings.max_isolated_percent,
            correlation_window=timedelta(seconds=settings.correlation_window_seconds),
            enabled_channels=frozenset(Channel(c) for c in settings.enabled_channels),
            public_url=settings.public_url,
            heartbeat_alertname=settings.heartbeat_alertname,
            heartbeat_timeout=timedelta(seconds=settings.heartbeat_timeout_seconds)
            if settings.heartbeat_timeout_seconds > 0
            else None,
            email_to=tuple(settings.email_recipients),
        )
