"""Where an incident can be read: the paths of the HTTP API (DESIGN.md), used by the
API's own links and by notifications pointing people at the incident."""

from __future__ import annotations


def incident_path(incident_id: str) -> str:
    return f"/v1/incidents/{incident_id}"


def timeline_path(incident_id: str) -> str:
    return f"{incident_path(incident_id)}/timeline"


def postmortem_path(incident_id: str) -> str:
    return f"{incident_path(incident_id)}/postmortem"


def incident_url(public_url: str | None, incident_id: str) -> str | None:
    """The incident's address for people, or None when no public URL is configured."""
    base = (public_url or "").rstrip("/")
    return f"{base}{incident_path(incident_id)}" if base else None
