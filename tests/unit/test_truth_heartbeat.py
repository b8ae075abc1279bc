"""The dead man's switch's pure rules (receiver/domain/heartbeat.py) and the identity
precision shared by the webhook and the reconciler (domain/reconcile.at_api_precision)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus
from receiver.domain.heartbeat import HeartbeatState, incident_title, is_heartbeat, is_lost
from receiver.domain.reconcile import at_api_precision, instance_key

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)


def alert(
    name: str = "Watchdog", *, role: AlertRole = AlertRole.OTHER, **kw: object
) -> AlertInstance:
    values: dict = {
        "fingerprint": "0123456789abcdef",
        "starts_at": T0,
        "ends_at": None,
        "status": AlertStatus.FIRING,
        "labels": {"alertname": name},
        "annotations": {},
        "generator_url": "",
        "role": role,
    }
    values.update(kw)
    return AlertInstance(**values)


def test_silence_counts_from_the_last_heartbeat_else_the_first_start() -> None:
    never = HeartbeatState(first_started_at=T0)
    assert not is_lost(never, now=T0 + FIVE_MIN - timedelta(seconds=1), timeout=FIVE_MIN)
    assert is_lost(never, now=T0 + FIVE_MIN, timeout=FIVE_MIN)
    seen = HeartbeatState(first_started_at=T0, last_heartbeat_at=T0 + FIVE_MIN)
    assert not is_lost(seen, now=T0 + FIVE_MIN * 2 - timedelta(seconds=1), timeout=FIVE_MIN)
    assert is_lost(seen, now=T0 + FIVE_MIN * 2, timeout=FIVE_MIN)
    # Reported once: already lost is not newly lost.
    lost = HeartbeatState(first_started_at=T0, lost_at=T0 + FIVE_MIN)
    assert not is_lost(lost, now=T0 + FIVE_MIN * 10, timeout=FIVE_MIN)


def test_only_a_firing_role_less_alert_of_that_name_is_a_heartbeat() -> None:
    assert is_heartbeat(alert(), alertname="Watchdog")
    assert not is_heartbeat(alert(), alertname="DeadMansSwitch")
    assert not is_heartbeat(alert(status=AlertStatus.RESOLVED), alertname="Watchdog")
    assert not is_heartbeat(alert(role=AlertRole.ISOLATING, tenant_id="t"), alertname="Watchdog")


def test_the_title_says_the_pipeline_is_silent() -> None:
    title = incident_title("Watchdog", FIVE_MIN)
    assert "Alerting pipeline silent" in title and "300 s" in title and "no tenant" in title


def test_webhook_nanoseconds_and_api_milliseconds_meet_at_the_millisecond() -> None:
    webhook = alert(
        starts_at=datetime(2026, 12, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    )
    stored = at_api_precision(webhook)
    assert stored.starts_at.microsecond == 123000
    assert stored.key == instance_key(webhook.fingerprint, webhook.starts_at)
    assert at_api_precision(stored) is stored  # already at precision: unchanged
