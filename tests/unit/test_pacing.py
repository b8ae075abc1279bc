"""Pacing a channel to its provider's rate (receiver/channels/pacing.py) and the
notification settings that feed it."""

from __future__ import annotations

import pytest

from receiver.channels.pacing import Pacer
from receiver.domain.notification import Channel
from receiver.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_channel_gets_its_rate_and_a_second_of_burst() -> None:
    clock = Clock()
    pacer = Pacer({Channel.PAGERDUTY: 2.0, Channel.SLACK: 1.0}, clock=clock)
    assert pacer.available(Channel.PAGERDUTY, 20) == 2
    pacer.take(Channel.PAGERDUTY, 2)
    assert pacer.available(Channel.PAGERDUTY, 20) == 0
    assert pacer.wait(Channel.PAGERDUTY) == pytest.approx(0.5)
    clock.now += 0.5
    assert pacer.available(Channel.PAGERDUTY, 20) == 1
    clock.now += 60
    assert pacer.available(Channel.PAGERDUTY, 20) == 2  # capped at one second's worth
    assert pacer.available(Channel.SLACK, 20) == 1
    assert pacer.available(Channel.EMAIL, 20) == 20  # not paced


def test_a_pause_stops_the_channel_until_it_ends() -> None:
    clock = Clock()
    pacer = Pacer({Channel.SLACK: 1.0}, clock=clock)
    pacer.pause(Channel.SLACK, 30)
    assert pacer.available(Channel.SLACK, 20) == 0
    assert pacer.wait(Channel.SLACK) == pytest.approx(30)
    pacer.pause(Channel.SLACK, 5)  # a shorter pause never shortens a longer one
    clock.now += 29.9
    assert pacer.available(Channel.SLACK, 20) == 0
    clock.now += 0.2
    assert pacer.available(Channel.SLACK, 20) == 1


def test_notification_settings_defaults() -> None:
    s = Settings(database_url="")
    assert s.notify_max_attempts is None  # give up by time
    assert (s.pagerduty_give_up_seconds, s.slack_give_up_seconds) == (3600, 3600)
    assert s.email_give_up_seconds == 4 * 3600
    assert (s.pagerduty_events_per_minute, s.slack_messages_per_second) == (120, 1)
    assert s.smtp_tls_mode == "auto" and s.smtp_max_recipients == 100


@pytest.mark.parametrize(
    ("starttls", "tls", "mode"),
    [
        (None, None, "auto"),
        (True, None, "starttls"),
        (False, None, "none"),
        (None, "implicit", "implicit"),
        (True, "starttls", "starttls"),
        (False, "implicit", "implicit"),
        (False, "none", "none"),
    ],
)
def test_smtp_tls_mode(starttls: bool | None, tls: str | None, mode: str) -> None:
    # RECEIVER_SMTP_STARTTLS=false with implicit TLS is no contradiction: a connection
    # that is TLS from the start never issues STARTTLS.
    assert Settings(database_url="", smtp_starttls=starttls, smtp_tls=tls).smtp_tls_mode == mode


def test_contradicting_tls_settings_are_refused() -> None:
    for starttls, tls in ((True, "none"), (True, "implicit"), (False, "starttls")):
        with pytest.raises(ValueError, match="contradicts"):  # ValidationError
            Settings(database_url="", smtp_starttls=starttls, smtp_tls=tls)


def test_blank_settings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_NOTIFY_MAX_ATTEMPTS", "")
    monkeypatch.setenv("RECEIVER_SMTP_TLS", "")
    s = Settings(database_url="")
    assert s.notify_max_attempts is None and s.smtp_tls is None
