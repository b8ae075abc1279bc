from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from receiver.domain.incident import ActionItem, CostImpact
from receiver.domain.postmortem import (
    PostmortemInput,
    TenantImpact,
    TimelineEntry,
    durations,
    human_duration,
    render_postmortem,
)
from receiver.domain.tiers import Priority, Tier

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


def at(minutes: float, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def full_input(**changes: object) -> PostmortemInput:
    inp = PostmortemInput(
        incident_id="INC-20261124-0001",
        title="Tenant acme error ratio high",
        priority=Priority.P0,
        status="resolved",
        opened_at=T0,
        acknowledged_at=at(4, 12),
        acknowledged_by="alice",
        resolved_at=at(95),
        resolved_by="system",
        first_alert_at=at(-2, -30),
        tenants=[
            TenantImpact("acme", Tier.PLATINUM, "Acme Corp", isolated_hours=1.5, cost=300.0),
            TenantImpact("t-42", None, None, isolated_hours=0.25, cost=0.0),
        ],
        cost=CostImpact(contained=300.0, uncontained=12_500.0, hours=1.5),
        timeline=[
            TimelineEntry(at(4, 12), "alice", "incident.acknowledged", "acknowledged"),
            TimelineEntry(at(0), "system", "incident.opened", "opened as P0", "acme"),
            TimelineEntry(at(0), "system", "breaker.transition", "closed -> open", "acme"),
            TimelineEntry(at(95), "system", "incident.resolved", "all breakers closed"),
        ],
        root_cause="A schema migration left an index missing for acme's largest collection.",
        five_whys=[
            "Why did acme's queries fail? They timed out.",
            "Why did they time out? A full scan ran on every query.",
            "Why a full scan? The migration dropped the index.",
        ],
        action_items=[
            ActionItem("Check indexes after migrations in CI", "data-platform", date(2026, 12, 1)),
            ActionItem("Per-tenant query latency alert", "sre", date(2026, 12, 8), "done"),
        ],
        what_went_well=["The breaker isolated acme within a minute; other tenants were fine."],
        false_positive=False,
        ack_due_at=at(15),
        sla_breached=False,
        runbook_urls=[
            "https://runbooks.example/tenant-errors",
            "https://runbooks.example/tenant-errors",
            "https://runbooks.example/db-index",
        ],
    )
    return dataclasses.replace(inp, **changes)  # type: ignore[arg-type]


def empty_input(**changes: object) -> PostmortemInput:
    return full_input(
        **{
            "status": "open",
            "acknowledged_at": None,
            "acknowledged_by": None,
            "resolved_at": None,
            "resolved_by": None,
            "first_alert_at": None,
            "tenants": [],
            "cost": CostImpact(0.0, 0.0, 0.0),
            "timeline": [],
            "root_cause": None,
            "five_whys": [],
            "action_items": [],
            "what_went_well": [],
            "runbook_urls": [],
            **changes,
        }
    )


def section(md: str, title: str) -> str:
    """The body of one `## title` section."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, re.M | re.S)
    assert m is not None, f"section {title!r} missing"
    return m.group(1)


def table_rows(text: str) -> list[list[str]]:
    """Data rows of the first Markdown table in `text`, split on unescaped pipes."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]]
        for ln in lines[2:]  # header and separator
    ]


SECTIONS = [
    "Summary",
    "Impact",
    "Timeline",
    "Detection and response",
    "Root cause",
    "Five whys",
    "Action items",
    "What went well",
    "Runbooks",
]


# --- durations -------------------------------------------------------------------------


def test_durations() -> None:
    assert durations(full_input()) == {
        "time_to_detect": timedelta(minutes=2, seconds=30),
        "time_to_acknowledge": timedelta(minutes=4, seconds=12),
        "time_to_resolve": timedelta(minutes=95),
    }


def test_durations_not_yet() -> None:
    assert durations(empty_input()) == {
        "time_to_detect": None,
        "time_to_acknowledge": None,
        "time_to_resolve": None,
    }


def test_durations_across_offsets() -> None:
    cet = timezone(timedelta(hours=1))
    inp = full_input(acknowledged_at=at(5).astimezone(cet))
    assert durations(inp)["time_to_acknowledge"] == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0 s"),
        (timedelta(seconds=42), "42 s"),
        (timedelta(seconds=59, milliseconds=999), "59 s"),
        (timedelta(minutes=1), "1 min"),
        (timedelta(minutes=4, seconds=12), "4 min 12 s"),
        (timedelta(minutes=59, seconds=59), "59 min 59 s"),
        (timedelta(hours=1), "1 h"),
        (timedelta(hours=2, minutes=5, seconds=59), "2 h 5 min"),
        (timedelta(days=1), "1 d"),
        (timedelta(days=3, hours=4, minutes=30), "3 d 4 h"),
        (-timedelta(seconds=90), "-1 min 30 s"),
    ],
)
def test_human_duration(value: timedelta, text: str) -> None:
    assert human_duration(value) == text


# --- rendering -------------------------------------------------------------------------


def test_title_and_sections_in_order() -> None:
    md = render_postmortem(full_input(), now=NOW)
    assert md.startswith("# Postmortem: INC-20261124-0001 — Tenant acme error ratio high\n")
    positions = [md.index(f"\n## {s}\n") for s in SECTIONS]
    assert positions == sorted(positions)
    assert md.endswith("\n") and not md.endswith("\n\n")


def test_deterministic() -> None:
    assert render_postmortem(full_input(), now=NOW) == render_postmortem(full_input(), now=NOW)


def test_summary() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "Summary")
    assert "**Priority:** P0" in s
    assert "**Status:** resolved" in s
    assert "**Opened:** 2026-11-24 10:00:00 UTC" in s
    assert "**Acknowledged:** 2026-11-24 10:04:12 UTC by alice" in s
    assert "**Resolved:** 2026-11-24 11:35:00 UTC by system" in s
    assert "**Acknowledgement due:** 2026-11-24 10:15:00 UTC (SLA met)" in s
    assert "**False positive:** no" in s


def test_summary_times_are_utc() -> None:
    cet = timezone(timedelta(hours=1))
    s = section(render_postmortem(full_input(opened_at=T0.astimezone(cet)), now=NOW), "Summary")
    assert "**Opened:** 2026-11-24 10:00:00 UTC" in s


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sla_breached": True}, "(SLA breached: not acknowledged in time)"),
        ({"acknowledged_at": None, "acknowledged_by": None}, "(SLA met)"),  # resolved first
        (
            {"acknowledged_at": None, "resolved_at": None, "sla_breached": False},
            "(overdue, not yet acknowledged)",
        ),
    ],
)
def test_summary_sla(changes: dict[str, object], expected: str) -> None:
    s = section(render_postmortem(full_input(**changes), now=NOW), "Summary")
    assert expected in s


def test_summary_sla_pending() -> None:
    s = section(render_postmortem(empty_input(), now=at(5)), "Summary")
    assert "(pending, 10 min left)" in s
    assert "**Acknowledged:** not yet" in s
    assert "**Resolved:** not yet" in s


def test_summary_false_positive() -> None:
    s = section(render_postmortem(full_input(false_positive=True), now=NOW), "Summary")
    assert "**False positive:** yes" in s


def test_impact_table() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "Impact")
    assert table_rows(s) == [
        ["Acme Corp (acme)", "platinum", "1 h 30 min", "300.00"],
        ["t-42", "unknown (bronze SLA)", "15 min", "0.00"],
    ]
    assert "| Tenant | Tier | Isolated for | Cost |" in s


def test_impact_cost_in_plain_words() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "Impact")
    assert "Isolating the affected tenants cost an estimated 300.00" in s
    assert "Had the whole platform gone down for the same 1 h 30 min" in s
    assert "estimated 12,500.00" in s
    assert "containment avoided about 12,200.00" in s


def test_impact_without_costs_configured() -> None:
    inp = full_input(cost=CostImpact(contained=0.0, uncontained=0.0, hours=2.0))
    s = section(render_postmortem(inp, now=NOW), "Impact")
    assert "no hourly costs are configured" in s
    assert "2 h" in s


def test_impact_platform_only() -> None:
    s = section(render_postmortem(empty_input(), now=NOW), "Impact")
    assert "platform-wide incident" in s
    assert "no containment cost" in s
    assert table_rows(s) == []


def test_timeline_rows_sorted_by_time() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "Timeline")
    assert "| Time (UTC) | Actor | Action | What |" in s
    assert table_rows(s) == [
        ["2026-11-24 10:00:00", "system", "incident.opened", "opened as P0 (tenant acme)"],
        ["2026-11-24 10:00:00", "system", "breaker.transition", "closed -> open (tenant acme)"],
        ["2026-11-24 10:04:12", "alice", "incident.acknowledged", "acknowledged"],
        ["2026-11-24 11:35:00", "system", "incident.resolved", "all breakers closed"],
    ]


def test_timeline_empty() -> None:
    s = section(render_postmortem(empty_input(), now=NOW), "Timeline")
    assert "No events recorded" in s


def test_table_cells_escape_pipes_and_newlines() -> None:
    inp = full_input(
        timeline=[TimelineEntry(at(1), "bob|ops", "note", "a | b\nsecond line \\| c")],
        action_items=[ActionItem("use a|b", "team|x", date(2026, 12, 1))],
        tenants=[TenantImpact("t|1", None, "Pipe | Co", 1.0, 2.0)],
    )
    md = render_postmortem(inp, now=NOW)
    timeline = section(md, "Timeline")
    assert "bob\\|ops" in timeline
    assert "a \\| b second line \\\\\\| c" in timeline
    rows = table_rows(timeline)
    assert len(rows) == 1 and len(rows[0]) == 4  # the pipes did not add columns
    assert table_rows(section(md, "Action items")) == [
        ["use a\\|b", "team\\|x", "2026-12-01", "open"]
    ]
    assert table_rows(section(md, "Impact"))[0][0] == "Pipe \\| Co (t\\|1)"


def test_detection_and_response() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "Detection and response")
    assert "**Time to detect:** 2 min 30 s" in s
    assert "**Time to acknowledge:** 4 min 12 s" in s
    assert "**Time to resolve:** 1 h 35 min" in s
    assert "`for:`" in s  # says that detection is measured after the rule's for: period


def test_detection_and_response_not_yet() -> None:
    s = section(render_postmortem(empty_input(), now=at(30)), "Detection and response")
    assert "**Time to detect:** unknown" in s
    assert "`for:`" not in s
    assert "**Time to acknowledge:** not yet (30 min since the incident opened)" in s
    assert "**Time to resolve:** not yet (30 min since the incident opened)" in s


def test_detection_and_response_resolved_without_acknowledgement() -> None:
    inp = full_input(acknowledged_at=None, acknowledged_by=None)
    md = render_postmortem(inp, now=NOW)
    s = section(md, "Detection and response")
    assert "**Time to acknowledge:** none (resolved before anyone acknowledged)" in s
    assert "**Time to resolve:** 1 h 35 min" in s
    assert "**Acknowledged:** never: resolved before anyone acknowledged" in section(md, "Summary")


def test_root_cause() -> None:
    md = render_postmortem(full_input(), now=NOW)
    assert "A schema migration left an index missing" in section(md, "Root cause")
    placeholder = section(render_postmortem(empty_input(), now=NOW), "Root cause")
    assert "Not yet written" in placeholder


def test_five_whys_numbered() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "Five whys")
    assert "1. Why did acme's queries fail? They timed out." in s
    assert "2. Why did they time out? A full scan ran on every query." in s
    assert "3. Why a full scan? The migration dropped the index." in s
    assert "4. " not in s


def test_five_whys_placeholder() -> None:
    for whys in ([], ["", "  "]):
        s = section(render_postmortem(empty_input(five_whys=whys), now=NOW), "Five whys")
        assert "Not yet filled in" in s
        assert '"why?"' in s
        assert "1. " not in s


def test_action_items_table() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "Action items")
    assert "| Item | Owning team | Due | Status |" in s
    assert table_rows(s) == [
        ["Check indexes after migrations in CI", "data-platform", "2026-12-01", "open"],
        ["Per-tenant query latency alert", "sre", "2026-12-08", "done"],
    ]


def test_action_items_placeholder() -> None:
    s = section(render_postmortem(empty_input(), now=NOW), "Action items")
    assert "No action items yet" in s
    assert "owning team" in s


def test_what_went_well_and_placeholder() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "What went well")
    assert "- The breaker isolated acme within a minute" in s
    assert "Not yet written" in section(render_postmortem(empty_input(), now=NOW), "What went well")


def test_runbooks_deduplicated_in_order() -> None:
    s = section(render_postmortem(full_input(), now=NOW), "Runbooks")
    assert [ln for ln in s.splitlines() if ln.startswith("- ")] == [
        "- https://runbooks.example/tenant-errors",
        "- https://runbooks.example/db-index",
    ]
    assert "No runbook" in section(render_postmortem(empty_input(), now=NOW), "Runbooks")


def test_title_is_one_line() -> None:
    md = render_postmortem(full_input(title="two\nlines"), now=NOW)
    assert md.splitlines()[0] == "# Postmortem: INC-20261124-0001 — two lines"


def test_blameless_wording() -> None:
    for inp in (full_input(), empty_input()):
        md = render_postmortem(inp, now=NOW).lower()
        for word in ("fault", "blame ", "to blame", "culprit", "negligen"):
            assert word not in md


def test_actors_appear_only_as_recorded() -> None:
    md = render_postmortem(full_input(), now=NOW)
    # alice acknowledged: she appears in the summary line and the timeline, nowhere else
    lines_with_alice = [ln for ln in md.splitlines() if "alice" in ln]
    assert len(lines_with_alice) == 2
    assert lines_with_alice[0].startswith("- **Acknowledged:**")
    assert lines_with_alice[1].startswith("| 2026-11-24 10:04:12 | alice |")


def test_placeholders_when_everything_is_empty() -> None:
    md = render_postmortem(empty_input(), now=NOW)
    for s in SECTIONS:
        assert section(md, s).strip(), f"section {s} is empty"


def test_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render_postmortem(full_input(), now=datetime(2026, 11, 24, 13, 0))
