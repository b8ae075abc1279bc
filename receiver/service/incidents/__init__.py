"""Incident use cases.

- flow: inside the webhook's and the breaker changes' transactions (open, join,
  escalate, link, auto-resolve);
- commands: acknowledge, resolve, the SLA check;
- messages: what the channels are told, queued in the outbox;
- reads: list, one incident in full, its timeline.
"""

from receiver.service.incidents.commands import (
    PersonCommand,
    acknowledge_incident,
    check_sla_breaches,
    resolve_incident,
)
from receiver.service.incidents.flow import after_breaker_changes, apply_alert_transitions
from receiver.service.incidents.reads import get_incident, incident_timeline, list_incidents

__all__ = [
    "PersonCommand",
    "acknowledge_incident",
    "after_breaker_changes",
    "apply_alert_transitions",
    "check_sla_breaches",
    "get_incident",
    "incident_timeline",
    "list_incidents",
    "resolve_incident",
]
