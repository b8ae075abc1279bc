"""Incident rules moved out of the service: the SLA breach, the incident's priority and
its reason, links, analytics totals, timeline lines and the postmortem's input."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.analytics import PriorityTotals, summarise
from receiver.domain.breaker import BreakerState
from receiver.domain.incident import ActionItem, CostImpact, IncidentRecord, IncidentStatus
from receiver.domain.incident import sla_breached as breached
from receiver.domain.incident_detail import IncidentDetail, LinkedAlert, postmortem_input
from receiver.domain.isolation import AuditEntry, Impact
from receiver.domain.links import incident_url, postmortem_path, timeline_path
from receiver.domain.members import SUPPRESSED, Member
from receiver.domain.postmortem import PostmortemFields, describe
from receiver.domain.priority import incident_priority, priority_reason, tier_text
from receiver.domain.tiers import Priority, Tier

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
P0, P1, P2 = Priority.P0, Priority.P1, Priority.P2
PT, G, S, B = Tier.PLATINUM, Tier.GOLD, Tier.SILVER, Tier.BRONZE

# --- the SLA breach --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acked", "resolved", "now", "expected"),
    [
        (None, None, T0 - MIN, False),  # pending
        (None, None, T0, False),  # exactly due is in time
        (None, None, T0 + MIN, True),  # overdue, nobody answered
        (T0 - MIN, None, T0 + 60 * MIN, False),  # acknowledged in time
        (T0 + MIN, None, T0 + 60 * MIN, True),  # acknowledged late
        (None, T0 - MIN, T0 + 60 * MIN, False),  # resolved before anyone acked, in time
        (None, T0 + MIN, T0 + 60 * MIN, True),
        (T0 - MIN, T0 + MIN, T0 + 60 * MIN, False),  # the first response counts
    ],
)
def test_sla_breached(
    acked: datetime | None, resolved: datetime | None, now: datetime, expected: bool
) -> None:
    assert breached(ack_due_at=T0, acknowledged_at=acked, resolved_at=resolved, now=now) is expected


@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_an_answer_freezes_the_breach_whatever_now(answer: int, later: int) -> None:
    acked = T0 + answer * MIN
    first = breached(ack_due_at=T0, acknowledged_at=acked, resolved_at=None, now=T0)
    again = breached(ack_due_at=T0, acknowledged_at=acked, resolved_at=None, now=T0 + later * MIN)
    assert first is again is (answer > 0)


def record(**changes: object) -> IncidentRecord:
    values: dict[str, object] = {
        "id": "INC-20261124-0001",
        "title": "Tenant a isolated: Down",
        "priority": P1,
        "status": IncidentStatus.OPEN,
        "opened_at": T0,
        "ack_due_at": T0 + 60 * MIN,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "sla_breached_at": None,
    }
    values.update(changes)
    return IncidentRecord(**values)  # type: ignore[arg-type]


def test_the_record_applies_the_rule_and_takes_tenants() -> None:
    r = record()
    assert not r.sla_breached(T0 + 60 * MIN) and r.sla_breached(T0 + 61 * MIN)
    assert r.with_tenants(iter(["a", "b"])).tenants == ("a", "b") and r.tenants == ()


# --- priority --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "tiers", "platform", "suppressed", "expected"),
    [
        (None, [B], False, False, P2),
        (None, [G], False, False, P1),
        (None, [PT], False, False, P0),
        (None, [B], True, False, P0),
        (None, [B], False, True, P0),  # the guard suppressed a trip: shared failure
        (None, [None] * 5, False, False, P1),
        (None, [None] * 10, False, False, P0),
        (P0, [B], False, False, P0),  # never de-escalates
        (P1, [B], False, False, P1),
        (P2, [G], False, False, P1),
    ],
)
def test_incident_priority(
    current: Priority | None,
    tiers: list[Tier | None],
    platform: bool,
    suppressed: bool,
    expected: Priority,
) -> None:
    got = incident_priority(current, tiers=tiers, platform=platform, suppressed=suppressed)
    assert got is expected


@given(
    current=st.none() | st.sampled_from(Priority),
    tiers=st.lists(st.none() | st.sampled_from(Tier), max_size=12),
    platform=st.booleans(),
    suppressed=st.booleans(),
)
def test_priority_never_drops_below_current(
    current: Priority | None,
    tiers: list[Tier | None],
    platform: bool,
    suppressed: bool,
) -> None:
    got = incident_priority(current, tiers=tiers, platform=platform, suppressed=suppressed)
    assert current is None or got.rank <= current.rank
    if platform or suppressed:
        assert got is P0
    reason = priority_reason(got, tiers=tiers, platform=platform, suppressed=suppressed)
    assert f"{len(tiers)} tenant" in reason


@pytest.mark.parametrize(
    ("priority", "tiers", "platform", "suppressed", "reason"),
    [
        (P0, [B], True, False, "a platform alert fires (1 tenant affected)"),
        (
            P0,
            [B, B],
            False,
            True,
            "the mass-isolation guard suppressed a trip (2 tenants affected)",
        ),
        (P0, [PT], False, False, "a platinum tenant is affected (1 tenant affected)"),
        (P0, [None] * 10, False, False, "10 tenants affected, 10 or more"),
        (P1, [G, B], False, False, "a gold tenant is affected (2 tenants affected)"),
        (P1, [S] * 5, False, False, "5 tenants affected, 5 or more"),
        (P2, [], False, False, "0 tenants affected, none platinum or gold"),
        (P2, ["gold"], False, False, "1 tenant affected, none platinum or gold"),
    ],
)
def test_priority_reason(
    priority: Priority, tiers: list[Tier | None], platform: bool, suppressed: bool, reason: str
) -> None:
    assert priority_reason(priority, tiers=tiers, platform=platform, suppressed=suppressed) == (
        reason
    )


def test_tier_text() -> None:
    assert tier_text(Tier.GOLD) == "gold"
    assert tier_text(None) == "unregistered, handled as bronze"


# --- links -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "url"),
    [
        (None, None),
        ("", None),
        ("https://rx.example", "https://rx.example/v1/incidents/INC-1"),
        ("https://rx.example/base/", "https://rx.example/base/v1/incidents/INC-1"),
    ],
)
def test_incident_url(public_url: str | None, url: str | None) -> None:
    assert incident_url(public_url, "INC-1") == url


def test_paths() -> None:
    assert timeline_path("INC-1") == "/v1/incidents/INC-1/timeline"
    assert postmortem_path("INC-1") == "/v1/incidents/INC-1/postmortem"


# --- analytics -------------------------------------------------------------------------


def totals(
    priority: str, n: int, *, acked: int, ack: float, resolved: int, res: float
) -> PriorityTotals:
    return PriorityTotals(
        priority=priority,
        incidents=n,
        sla_breaches=1,
        false_positives=0,
        mtta_seconds=ack / acked if acked else None,
        mttr_seconds=res / resolved if resolved else None,
        acknowledged=acked,
        ack_seconds=ack if acked else None,
        resolved=resolved,
        resolve_seconds=res if resolved else None,
    )


def test_summarise_weights_means_by_the_incidents_that_answered() -> None:
    got = summarise(
        since=T0,
        until=T0 + MIN,
        totals=[
            totals("P0", 2, acked=2, ack=100.0, resolved=1, res=600.0),
            totals("P2", 3, acked=1, ack=20.0, resolved=0, res=0.0),
        ],
        by_status={"open": 3, "resolved": 2},
        trips_by_tenant={"a": 2, "b": 1},
    )
    assert list(got.by_priority) == ["P0", "P1", "P2"]
    assert got.by_priority["P1"].incidents == 0 and got.by_priority["P1"].mtta_seconds is None
    assert got.by_priority["P0"].mtta_seconds == 50.0
    assert got.total.incidents == 5 and got.total.sla_breaches == 2
    assert got.total.mtta_seconds == 40.0  # (100 + 20) / 3, not the mean of the means
    assert got.total.mttr_seconds == 600.0
    assert got.by_status == {"open": 3, "acknowledged": 0, "resolved": 2}
    assert got.trips == 3 and got.false_positive_rate == 0.0


def test_an_empty_period() -> None:
    got = summarise(since=T0, until=T0 + MIN, totals=[], by_status={}, trips_by_tenant={})
    assert got.total.incidents == 0 and got.total.mtta_seconds is None
    assert got.false_positive_rate is None and got.trips == 0


# --- timeline lines and the postmortem's input -----------------------------------------


@pytest.mark.parametrize(
    ("action", "details", "line"),
    [
        ("incident.opened", {"priority": "P1", "reason": "r"}, "incident opened at P1: r"),
        ("incident.opened", {"priority": "P1"}, "incident opened at P1"),
        ("incident.acknowledged", {"note": "on it"}, "acknowledged: on it"),
        ("incident.resolved", {}, "resolved"),
        ("incident.escalated", {"from": "P1", "to": "P0", "reason": "r"}, "escalated P1 to P0: r"),
        (
            "breaker.suppressed",
            {"isolated": 2, "limit": 2},
            ("trip suppressed by the mass-isolation guard (2 isolated, limit 2)"),
        ),
        ("alert.resolved", {"alertname": "Down"}, "alert Down resolved"),
        (
            "notification.failed",
            {"event": "opened", "channel": "slack"},
            ("opened failed via slack"),
        ),
        ("something.new", {}, "something.new"),
    ],
)
def test_describe(action: str, details: dict[str, object], line: str) -> None:
    assert describe(action, details) == line


def test_postmortem_input_from_the_detail() -> None:
    m = Member("a", SUPPRESSED, T0, Tier.GOLD, "Acme", 100.0, None, BreakerState.CLOSED, False)
    alert = LinkedAlert("f", T0 - 5 * MIN, None, "firing", "Down", "a", False, True, {}, {}, "", T0)
    fields = PostmortemFields(
        root_cause="disk",
        five_whys=["why"],
        action_items=[ActionItem("fix", "storage", date(2026, 12, 1))],
        what_went_well=["paged"],
        false_positive=False,
        updated_at=T0,
        updated_by="alice",
    )
    impact = Impact(
        spans=[], hours={"a": 0.5}, cost=CostImpact(50.0, 500.0, 0.5), platform_hourly_cost=1e3
    )
    entry = AuditEntry(1, T0, "system", "incident.resolved", None, {"note": "done"})
    detail = IncidentDetail(record(), [m], [alert], ["http://rb"], impact, fields, T0 + 90 * MIN)
    got = postmortem_input(detail, [entry])
    assert got.first_alert_at == T0 - 5 * MIN
    assert [(t.tenant_id, t.isolated_hours, t.cost) for t in got.tenants] == [("a", 0.5, 50.0)]
    assert got.timeline[0].summary == "resolved: done"
    assert got.root_cause == "disk" and got.action_items == fields.action_items
    assert got.sla_breached and got.status == "open" and got.runbook_urls == ["http://rb"]
    bare = postmortem_input(IncidentDetail(record(), [], [], [], impact, None, T0), [])
    assert bare.root_cause is None and bare.five_whys == [] and not bare.false_positive
    assert bare.first_alert_at is None and not bare.sla_breached
