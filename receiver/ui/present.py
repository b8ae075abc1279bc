"""What the console's templates show, built from the services' values: the board's tiles,
an incident's priority history and timeline, safe links, the postmortem as HTML, and the
text filters (times, durations) the templates use. Pure: `now` comes in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markupsafe import Markup

from receiver.cache.breaker_view import BreakerView
from receiver.domain import breaker as domain
from receiver.domain.breaker import BreakerState
from receiver.domain.isolation import AuditEntry
from receiver.domain.postmortem import describe
from receiver.domain.tenant import BoardTenant
from receiver.domain.tiers import Tier

STATES = [s.value for s in BreakerState]
TIERS = [t.value for t in Tier]
UNREGISTERED = "unregistered"
# Isolated first: they are what an operator looks for.
_ORDER = {
    BreakerState.FORCED_OPEN: 0,
    BreakerState.OPEN: 1,
    BreakerState.HALF_OPEN: 2,
    BreakerState.FORCED_CLOSED: 3,
    BreakerState.CLOSED: 4,
}
_LABEL = {
    BreakerState.CLOSED: "closed",
    BreakerState.OPEN: "open",
    BreakerState.HALF_OPEN: "half-open",
    BreakerState.FORCED_OPEN: "forced open",
    BreakerState.FORCED_CLOSED: "forced closed",
}


@dataclass(frozen=True)
class Tile:
    tenant_id: str
    name: str | None
    tier: str
    state: str
    state_label: str
    since: datetime | None
    admit_ratio: float
    half_open_at: datetime | None  # while open: when it lets probes through
    next_change_at: datetime | None
    trips: int
    alert_firing: bool
    forced: bool
    reason: str | None
    reason_at: datetime | None
    reason_actor: str | None


def tiles(view: BreakerView, tenants: Sequence[BoardTenant], *, now: datetime) -> list[Tile]:
    """One tile per known tenant (registered, seen, or with a breaker row in the view),
    isolated first."""
    known = {t.tenant_id: t for t in tenants}
    for row in view.all():
        known.setdefault(row.tenant_id, BoardTenant(row.tenant_id, None, None))
    out = [_tile(view, t, now=now) for t in known.values()]
    return sorted(out, key=lambda t: (_ORDER[BreakerState(t.state)], t.tenant_id))


def matching(all_tiles: Iterable[Tile], *, state: str | None, tier: str | None) -> list[Tile]:
    return [t for t in all_tiles if state in (None, t.state) and tier in (None, t.tier)]


def _tile(view: BreakerView, t: BoardTenant, *, now: datetime) -> Tile:
    b = view.get(t.tenant_id, now=now)
    due = domain.next_change_at(b, policy=view.policy)
    return Tile(
        tenant_id=t.tenant_id,
        name=t.name,
        tier=t.tier or UNREGISTERED,
        state=b.state.value,
        state_label=_LABEL[b.state],
        since=b.changed_at,
        admit_ratio=domain.admit_ratio(b.state, view.policy),
        half_open_at=due if b.state is BreakerState.OPEN else None,
        next_change_at=due,
        trips=b.trips,
        alert_firing=b.alert_firing,
        forced=b.state in (BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED),
        reason=t.last_reason,
        reason_at=t.last_at,
        reason_actor=t.last_actor,
    )


def state_counts(all_tiles: Iterable[Tile]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for t in all_tiles:
        counts[t.state] += 1
    return counts


# --- incidents ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PriorityStep:
    at: datetime
    priority: str
    previous: str | None
    reason: str


def priority_history(timeline: Iterable[AuditEntry]) -> list[PriorityStep]:
    """The priority the incident opened at and every escalation, oldest first."""
    steps = []
    for e in timeline:
        if e.action == "incident.opened":
            reason = str(e.details.get("reason", ""))
            steps.append(PriorityStep(e.occurred_at, str(e.details.get("priority")), None, reason))
        elif e.action == "incident.escalated":
            steps.append(
                PriorityStep(
                    e.occurred_at,
                    str(e.details.get("to")),
                    str(e.details.get("from")),
                    str(e.details.get("reason", "")),
                )
            )
    return steps


@dataclass(frozen=True)
class TimelineRow:
    at: datetime
    actor: str
    action: str
    tenant_id: str | None
    summary: str


def timeline_rows(timeline: Iterable[AuditEntry]) -> list[TimelineRow]:
    return [
        TimelineRow(e.occurred_at, e.actor, e.action, e.tenant_id, describe(e.action, e.details))
        for e in timeline
    ]


def safe_url(url: str | None) -> str | None:
    """A link people may follow: http(s) only (a runbook URL comes from alert labels)."""
    if not url:
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown_html(text: str) -> Markup:
    """Markdown to HTML with raw HTML escaped (markdown-it-py, `html: False`); links with
    unsafe schemes (javascript:, data:) are dropped by its link validation."""
    return Markup(_MARKDOWN.render(text))


# --- text filters for the templates --------------------------------------------------------


def iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""


def clock(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def duration(seconds: float | None) -> str:
    """12 s, 4 min 05 s, 2 h 03 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    s = int(abs(seconds))
    sign = "-" if seconds < 0 else ""
    if abs(seconds) < 10:  # sub-second answers are worth telling apart from 0
        return f"{sign}{abs(seconds):.1f}".rstrip("0").rstrip(".") + " s"
    if s < 60:
        return f"{sign}{s} s"
    if s < 3600:
        return f"{sign}{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{sign}{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{sign}{s // 86400} d {s % 86400 // 3600} h"


def until(value: datetime | None, now: datetime) -> str:
    return duration((value - now).total_seconds()) if value else "—"


def ago(value: datetime | None, now: datetime) -> str:
    return f"{duration((now - value).total_seconds())} ago" if value else "—"


def percent(value: float) -> str:
    return f"{value * 100:.0f} %"
