"""One incident in full: its row, members, linked alerts, impact and postmortem fields,
and the postmortem document's input gathered from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from receiver.domain.incident import IncidentRecord
from receiver.domain.isolation import AuditEntry, Impact
from receiver.domain.members import Member
from receiver.domain.postmortem import (
    PostmortemFields,
    PostmortemInput,
    TenantImpact,
    TimelineEntry,
    describe,
)


@dataclass(frozen=True)
class LinkedAlert:
    """An alert instance linked to an incident."""

    fingerprint: str
    starts_at: datetime
    ends_at: datetime | None
    status: str
    alertname: str
    tenant_id: str | None
    platform: bool
    isolating: bool
    labels: dict[str, Any]
    annotations: dict[str, Any]
    generator_url: str
    linked_at: datetime

    @property
    def runbook_url(self) -> str | None:
        url = self.annotations.get("runbook_url")
        return str(url) if url else None


@dataclass(frozen=True)
class IncidentDetail:
    record: IncidentRecord
    members: list[Member]
    alerts: list[LinkedAlert]
    runbook_urls: list[str]
    impact: Impact
    postmortem: PostmortemFields | None
    now: datetime

    @property
    def first_alert_at(self) -> datetime | None:
        return min((a.starts_at for a in self.alerts), default=None)


def postmortem_input(detail: IncidentDetail, timeline: Sequence[AuditEntry]) -> PostmortemInput:
    rec, pm, impact = detail.record, detail.postmortem, detail.impact
    return PostmortemInput(
        incident_id=rec.id,
        title=rec.title,
        priority=rec.priority,
        status=rec.status.value,
        opened_at=rec.opened_at,
        acknowledged_at=rec.acknowledged_at,
        acknowledged_by=rec.acknowledged_by,
        resolved_at=rec.resolved_at,
        resolved_by=rec.resolved_by,
        first_alert_at=detail.first_alert_at,
        tenants=[
            TenantImpact(
                tenant_id=m.tenant_id,
                tier=m.tier,
                name=m.name,
                isolated_hours=impact.hours_of(m.tenant_id),
                cost=m.cost(impact.hours_of(m.tenant_id)),
            )
            for m in detail.members
        ],
        cost=impact.cost,
        timeline=[
            TimelineEntry(
                at=r.occurred_at,
                actor=r.actor,
                action=r.action,
                summary=describe(r.action, r.details),
                tenant_id=r.tenant_id,
            )
            for r in timeline
        ],
        root_cause=pm.root_cause if pm else None,
        five_whys=pm.five_whys if pm else [],
        action_items=pm.action_items if pm else [],
        what_went_well=pm.what_went_well if pm else [],
        false_positive=pm.false_positive if pm else False,
        ack_due_at=rec.ack_due_at,
        sla_breached=rec.sla_breached(detail.now),
        runbook_urls=detail.runbook_urls,
    )
