"""The dead man's switch (DESIGN.md "The truth from Alertmanager", heartbeat): pure rules.

An always-firing alert (default `Watchdog`) proves that Prometheus evaluates rules,
Alertmanager routes them and the webhook reaches the receiver. When none has arrived for
the timeout, counted from the last one or, when none was ever seen, from the first start
of the receiver on the database, the pipeline is silent: a P0 incident with no tenant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus

LOST_ACTION = "heartbeat.lost"
RESTORED_ACTION = "heartbeat.restored"


@dataclass(frozen=True)
class HeartbeatState:
    first_started_at: datetime
    last_heartbeat_at: datetime | None = None
    lost_at: datetime | None = None
    incident_id: str | None = None

    @property
    def since(self) -> datetime:
        """What silence is counted from: the last heartbeat, else the first start."""
        return self.last_heartbeat_at or self.first_started_at

    def age(self, now: datetime) -> timedelta:
        return now - self.since


def is_heartbeat(alert: AlertInstance, *, alertname: str) -> bool:
    """A firing alert of that name with no role (an alert with a role is a real alert,
    whatever it is called). A resolved one proves nothing: Prometheus stopped it."""
    return (
        alert.status is AlertStatus.FIRING
        and alert.alertname == alertname
        and alert.role is AlertRole.OTHER
    )


def any_heartbeat(alerts: Iterable[AlertInstance], *, alertname: str) -> bool:
    return any(is_heartbeat(a, alertname=alertname) for a in alerts)


def is_lost(state: HeartbeatState, *, now: datetime, timeout: timedelta) -> bool:
    """Newly lost: silent for at least `timeout` and not already reported lost."""
    return state.lost_at is None and state.age(now) >= timeout


def incident_title(alertname: str, timeout: timedelta) -> str:
    seconds = int(timeout.total_seconds())
    return (
        f"Alerting pipeline silent: no {alertname} heartbeat for {seconds} s"
        " (Prometheus, Alertmanager or the webhook path is down; no tenant isolated)"
    )


def lost_details(state: HeartbeatState, *, timeout: timedelta, alertname: str) -> dict[str, Any]:
    return {
        "last_heartbeat": state.last_heartbeat_at,
        "timeout": timeout.total_seconds(),
        "alertname": alertname,
        "counted_from": "last heartbeat"
        if state.last_heartbeat_at is not None
        else "first start of the receiver on this database",
        "since": state.since,
    }


def restored_details(
    state: HeartbeatState, *, timeout: timedelta, alertname: str, now: datetime
) -> dict[str, Any]:
    return {
        "last_heartbeat": state.last_heartbeat_at,
        "timeout": timeout.total_seconds(),
        "alertname": alertname,
        "lost_at": state.lost_at,
        "silent_seconds": round((now - state.since).total_seconds(), 3),
    }
