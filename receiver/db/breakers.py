"""Breaker rows: the NOTIFY channel every replica listens on, and the codec between
stored rows, NOTIFY payloads and domain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from receiver.db import json
from receiver.domain.breaker import Breaker, BreakerState

NOTIFY_CHANNEL = "receiver_breakers"
COLUMNS = (
    "tenant_id",
    "state",
    "opened_at",
    "trips",
    "streak",
    "half_open_at",
    "probe_successes",
    "probe_failures",
    "alert_firing",
    "resolved_at",
    "changed_at",
)


@dataclass(frozen=True)
class Versioned:
    """A breaker row as stored, with its version: what replicas' views hold."""

    version: int
    breaker: Breaker


def breaker_from_row(row: Mapping[Any, Any]) -> Breaker:
    values = {name: row[name] for name in COLUMNS}
    values["state"] = BreakerState(values["state"])
    return Breaker(**values)


def breaker_to_json(b: Breaker) -> dict[str, Any]:
    return {name: getattr(b, name) for name in COLUMNS}


def notification_payload(v: Versioned) -> str:
    return json.dumps({"version": v.version, **breaker_to_json(v.breaker)})


def versioned_from_notification(payload: str | bytes) -> Versioned:
    data = json.loads(payload)
    values = {name: data.get(name) for name in COLUMNS}
    for name in ("opened_at", "half_open_at", "resolved_at", "changed_at"):
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    values["state"] = BreakerState(values["state"])
    return Versioned(version=int(data["version"]), breaker=Breaker(**values))
