"""Blameless postmortem, rendered as Markdown from an incident and its audit trail.

The service layer gathers everything into a `PostmortemInput`; rendering is a pure
function of that input and `now`, so the same incident always gives the same document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from receiver.domain.incident import ActionItem, CostImpact, require_aware
from receiver.domain.tiers import Priority, Tier


@dataclass(frozen=True)
class PostmortemFields:
    """What people wrote about an incident, as stored."""

    root_cause: str | None
    five_whys: list[str]
    action_items: list[ActionItem]
    what_went_well: list[str]
    false_positive: bool
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    actor: str
    action: str
    summary: str
    tenant_id: str | None = None


@dataclass(frozen=True)
class TenantImpact:
    tenant_id: str
    tier: Tier | None
    name: str | None
    isolated_hours: float
    cost: float


@dataclass(frozen=True)
class PostmortemInput:
    incident_id: str
    title: str
    priority: Priority
    status: str
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    first_alert_at: datetime | None  # earliest startsAt of the incident's alerts
    tenants: Sequence[TenantImpact]
    cost: CostImpact
    timeline: Sequence[TimelineEntry]
    root_cause: str | None
    five_whys: Sequence[str]
    action_items: Sequence[ActionItem]
    what_went_well: Sequence[str]
    false_positive: bool
    ack_due_at: datetime
    sla_breached: bool
    runbook_urls: Sequence[str]


def _between(start: datetime | None, end: datetime | None) -> timedelta | None:
    if start is None or end is None:
        return None
    return end - start


def durations(inp: PostmortemInput) -> dict[str, timedelta | None]:
    """Time to detect, acknowledge and resolve; None for a step that has not happened."""
    return {
        "time_to_detect": _between(inp.first_alert_at, inp.opened_at),
        "time_to_acknowledge": _between(inp.opened_at, inp.acknowledged_at),
        "time_to_resolve": _between(inp.opened_at, inp.resolved_at),
    }


# --- formatting helpers ----------------------------------------------------------------


def human_duration(value: timedelta) -> str:
    """'42 s', '4 min 12 s', '2 h 5 min', '3 d 4 h': precise where it matters, short after."""
    if value < timedelta(0):
        # Only clocks that disagree produce this; show it rather than hide it.
        return "-" + human_duration(-value)
    secs = int(value.total_seconds())
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        minutes, s = divmod(secs, 60)
        return f"{minutes} min {s} s" if s else f"{minutes} min"
    if secs < 86400:
        hours, rest = divmod(secs, 3600)
        minutes = rest // 60
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, rest = divmod(secs, 86400)
    hours = rest // 3600
    return f"{days} d {hours} h" if hours else f"{days} d"


def _hours(hours: float) -> str:
    return human_duration(timedelta(seconds=round(hours * 3600)))


def _utc(value: datetime) -> str:
    # isoformat rather than strftime: no locale, and the same on every platform.
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat(sep=" ")


def _money(value: float) -> str:
    # Tenants' hourly_cost has no currency in the contract, so none is printed.
    return f"{value:,.2f}"


_WHITESPACE = re.compile(r"\s+")


def _line(text: str) -> str:
    """One line of text: a newline inside a heading, list item or cell would end it."""
    return _WHITESPACE.sub(" ", text).strip()


def _cell(text: str) -> str:
    # Backslashes first, so that a '\|' already in the text cannot pair with our escape.
    return _line(text).replace("\\", "\\\\").replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def _tier_label(tier: Tier | None) -> str:
    return tier.value if tier is not None else "unknown (bronze SLA)"


def _tenant_label(t: TenantImpact) -> str:
    name = _line(t.name) if t.name else ""
    return f"{name} ({t.tenant_id})" if name and name != t.tenant_id else t.tenant_id


def _when_by(at: datetime | None, by: str | None) -> str:
    if at is None:
        return "not yet"
    return f"{_utc(at)} UTC by {_line(by)}" if by else f"{_utc(at)} UTC"


# --- sections --------------------------------------------------------------------------


def _summary(inp: PostmortemInput, now: datetime) -> list[str]:
    due = inp.ack_due_at
    if inp.sla_breached:
        sla = "SLA breached: not acknowledged in time"
    elif inp.acknowledged_at is not None or inp.resolved_at is not None:
        sla = "SLA met"
    elif now < due:
        sla = f"pending, {human_duration(due - now)} left"
    else:
        sla = "overdue, not yet acknowledged"
    if inp.acknowledged_at is None and inp.resolved_at is not None:
        acknowledged = "never: resolved before anyone acknowledged"
    else:
        acknowledged = _when_by(inp.acknowledged_at, inp.acknowledged_by)
    false_positive = (
        "yes: the alerts fired but tenants were not actually failing"
        if inp.false_positive
        else "no"
    )
    return [
        "## Summary",
        "",
        f"- **Priority:** {inp.priority.value}",
        f"- **Status:** {_line(inp.status)}",
        f"- **Opened:** {_utc(inp.opened_at)} UTC",
        f"- **Acknowledged:** {acknowledged}",
        f"- **Resolved:** {_when_by(inp.resolved_at, inp.resolved_by)}",
        f"- **Acknowledgement due:** {_utc(due)} UTC ({sla})",
        f"- **False positive:** {false_positive}",
    ]


def _impact(inp: PostmortemInput) -> list[str]:
    lines = ["## Impact", ""]
    if inp.tenants:
        rows = [
            [_tenant_label(t), _tier_label(t.tier), _hours(t.isolated_hours), _money(t.cost)]
            for t in inp.tenants
        ]
        lines += _table(["Tenant", "Tier", "Isolated for", "Cost"], rows)
    else:
        lines.append("No tenant is recorded as affected: this was a platform-wide incident.")
    lines.append("")

    cost = inp.cost
    span = _hours(cost.hours)
    if cost.hours <= 0:
        lines.append("No tenant was isolated, so there is no containment cost to report.")
    elif cost.contained == 0 and cost.uncontained == 0:
        lines.append(
            f"Tenants were isolated over {span}, but no hourly costs are configured, "
            "so the cost impact cannot be estimated."
        )
    else:
        text = (
            f"Isolating the affected tenants cost an estimated {_money(cost.contained)} "
            "(each tenant's hourly cost times the hours it was isolated). "
            f"Had the whole platform gone down for the same {span} (first isolation to last "
            f"recovery, or to now for tenants still isolated), it would have cost an "
            f"estimated {_money(cost.uncontained)}"
        )
        if cost.uncontained >= cost.contained:
            text += f": containment avoided about {_money(cost.uncontained - cost.contained)}."
        else:
            text += "."
        lines.append(text)
    return lines


def _timeline(inp: PostmortemInput) -> list[str]:
    lines = ["## Timeline", ""]
    if not inp.timeline:
        return [*lines, "_No events recorded._"]
    # sorted() is stable: entries at the same instant keep the audit log's order.
    entries = sorted(inp.timeline, key=lambda e: e.at)
    rows = [
        [
            _utc(e.at),
            e.actor,
            e.action,
            f"{e.summary} (tenant {e.tenant_id})" if e.tenant_id else e.summary,
        ]
        for e in entries
    ]
    return lines + _table(["Time (UTC)", "Actor", "Action", "What"], rows)


def _detection(inp: PostmortemInput, now: datetime) -> list[str]:
    d = durations(inp)
    since_open = human_duration(now - inp.opened_at)

    def shown(value: timedelta | None) -> str:
        if value is not None:
            return human_duration(value)
        if inp.resolved_at is not None:
            # Auto-resolved before anyone acknowledged: the clock stopped at resolution.
            return "none (resolved before anyone acknowledged)"
        return f"not yet ({since_open} since the incident opened)"

    detect = d["time_to_detect"]
    if detect is None:
        return [
            "## Detection and response",
            "",
            "- **Time to detect:** unknown (no alert start time recorded)",
            f"- **Time to acknowledge:** {shown(d['time_to_acknowledge'])}",
            f"- **Time to resolve:** {shown(d['time_to_resolve'])}",
        ]
    return [
        "## Detection and response",
        "",
        f"- **Time to detect:** {human_duration(detect)} (first alert fired to incident opened)",
        f"- **Time to acknowledge:** {shown(d['time_to_acknowledge'])}",
        f"- **Time to resolve:** {shown(d['time_to_resolve'])}",
        "",
        "Time to detect starts at the first alert's `startsAt`, which Prometheus sets once "
        "the alert rule's `for:` period has passed, so the errors began somewhat earlier.",
    ]


def _root_cause(inp: PostmortemInput) -> list[str]:
    text = (inp.root_cause or "").strip()
    return [
        "## Root cause",
        "",
        text
        or "_Not yet written. Describe the conditions in systems and processes that made "
        "this failure possible, not who triggered it._",
    ]


def _five_whys(inp: PostmortemInput) -> list[str]:
    whys = [_line(w) for w in inp.five_whys if w.strip()]
    lines = ["## Five whys", ""]
    if not whys:
        return [
            *lines,
            '_Not yet filled in. Start from what tenants saw and ask "why?" up to five '
            "times, each answer prompting the next question, until you reach a cause a team "
            "can change. Ask about systems and processes, not people._",
        ]
    return lines + [f"{i}. {w}" for i, w in enumerate(whys, start=1)]


def _action_items(inp: PostmortemInput) -> list[str]:
    lines = ["## Action items", ""]
    if not inp.action_items:
        return [
            *lines,
            "_No action items yet. Each one needs an owning team (never a person) and a due date._",
        ]
    rows = [[a.description, a.owner_team, a.due.isoformat(), a.status] for a in inp.action_items]
    return lines + _table(["Item", "Owning team", "Due", "Status"], rows)


def _went_well(inp: PostmortemInput) -> list[str]:
    items = [_line(w) for w in inp.what_went_well if w.strip()]
    lines = ["## What went well", ""]
    if not items:
        return [
            *lines,
            "_Not yet written. Note what helped: alerts that fired early, isolation that "
            "kept other tenants healthy, runbooks that worked._",
        ]
    return lines + [f"- {w}" for w in items]


def _runbooks(inp: PostmortemInput) -> list[str]:
    # Every alert of a rule carries the same runbook_url: list each once, in order.
    urls = list(dict.fromkeys(_line(u) for u in inp.runbook_urls if u.strip()))
    lines = ["## Runbooks", ""]
    if not urls:
        return [*lines, "_No runbook URL was attached to the incident's alerts._"]
    return lines + [f"- {u}" for u in urls]


def render_postmortem(inp: PostmortemInput, *, now: datetime) -> str:
    """The postmortem as Markdown; `now` dates the document and measures open steps."""
    require_aware("now", now)
    sections = [
        [
            f"# Postmortem: {inp.incident_id} — {_line(inp.title)}",
            "",
            f"_Generated {_utc(now)} UTC. Blameless: this document describes how systems "
            "and processes behaved; people appear only as the actors recorded in the "
            "audit log._",
        ],
        _summary(inp, now),
        _impact(inp),
        _timeline(inp),
        _detection(inp, now),
        _root_cause(inp),
        _five_whys(inp),
        _action_items(inp),
        _went_well(inp),
        _runbooks(inp),
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


def describe(action: str, d: Mapping[str, Any]) -> str:
    """One line for a timeline entry, from an audit row's action and details."""

    def note(prefix: str) -> str:
        text = d.get("note")
        return f"{prefix}: {text}" if text else prefix

    match action:
        case "incident.opened":
            return f"incident opened at {d.get('priority')}: {d.get('reason', '')}".rstrip(": ")
        case "incident.joined":
            return f"tenant joined ({d.get('cause')}, tier {d.get('tier')})"
        case "incident.escalated":
            return f"escalated {d.get('from')} to {d.get('to')}: {d.get('reason', '')}"
        case "incident.acknowledged":
            return note("acknowledged")
        case "incident.resolved":
            return note("resolved")
        case "incident.alert_linked":
            return f"alert {d.get('alertname')} linked: {d.get('reason', '')}"
        case "incident.postmortem_updated":
            return "postmortem updated"
        case "sla.breached":
            return f"not acknowledged by the due time {d.get('due')}"
        case "breaker.transition":
            return f"breaker {d.get('from')} to {d.get('to')}: {d.get('reason', '')}"
        case "breaker.suppressed":
            return (
                "trip suppressed by the mass-isolation guard "
                f"({d.get('isolated')} isolated, limit {d.get('limit')})"
            )
        case "breaker.override":
            return f"operator {d.get('action')}: {d.get('reason', '')}"
        case "alert.fired" | "alert.resolved":
            return f"alert {d.get('alertname')} {action.split('.')[1]}"
        case "notification.sent" | "notification.failed":
            outcome = action.split(".")[1]
            return f"{d.get('event', 'notification')} {outcome} via {d.get('channel')}"
    return action
