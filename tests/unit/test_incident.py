from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.incident import (
    MAX_ACTION_ITEMS,
    ActionItem,
    AlreadyAcknowledged,
    AlreadyResolved,
    CostImpact,
    IncidentError,
    IncidentStatus,
    IsolationSpan,
    acknowledge,
    cost_impact,
    format_incident_id,
    isolated_hours,
    joins_open_incident,
    parse_incident_id,
    resolve,
    should_auto_resolve,
    validate_action_items,
)
from receiver.domain.tiers import Tier

OPEN, ACKED, RESOLVED = IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED, IncidentStatus.RESOLVED
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
WINDOW = timedelta(minutes=10)


# --- identifiers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "seq", "expected"),
    [
        (date(2026, 11, 24), 1, "INC-20261124-0001"),
        (date(2026, 1, 2), 42, "INC-20260102-0042"),
        (date(2026, 12, 31), 9999, "INC-20261231-9999"),
        (date(999, 3, 4), 7, "INC-09990304-0007"),  # years below 1000 are zero-padded
    ],
)
def test_format_incident_id(day: date, seq: int, expected: str) -> None:
    assert format_incident_id(day, seq) == expected


@pytest.mark.parametrize("seq", [0, -1, 10000, 123456])
def test_format_incident_id_rejects_seq_out_of_range(seq: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.9999"):
        format_incident_id(date(2026, 11, 24), seq)


def test_parse_incident_id() -> None:
    assert parse_incident_id("INC-20261124-0001") == (date(2026, 11, 24), 1)
    assert parse_incident_id("INC-20261231-9999") == (date(2026, 12, 31), 9999)


@pytest.mark.parametrize(
    "s",
    [
        "",
        "INC-",
        "INC-20261124-1",  # seq not padded
        "INC-20261124-00001",
        "INC-2026112-0001",
        "inc-20261124-0001",
        "INC20261124-0001",
        "INC-20261124_0001",
        " INC-20261124-0001",
        "INC-20261124-0001 ",
        "INC-20261124-0001\n",
        "INC-20261124-0000",  # seq 0 is never issued
        "INC-20261324-0001",  # month 13
        "INC-20260230-0001",  # 30 February
        "INC-00001124-0001",  # year 0
        "INC-2026112\u0664-0001",  # ARABIC-INDIC DIGIT FOUR
        "XYZ-20261124-0001",
    ],
)
def test_parse_incident_id_rejects_malformed(s: str) -> None:
    assert parse_incident_id(s) is None


@given(st.dates(), st.integers(min_value=1, max_value=9999))
def test_incident_id_round_trip(day: date, seq: int) -> None:
    text = format_incident_id(day, seq)
    assert len(text) == len("INC-YYYYMMDD-NNNN")
    assert parse_incident_id(text) == (day, seq)


@given(st.text(max_size=30))
def test_parse_incident_id_never_raises(s: str) -> None:
    parsed = parse_incident_id(s)
    if parsed is not None:
        assert format_incident_id(*parsed) == s


# --- correlation window ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "status", "joins"),
    [
        (timedelta(0), OPEN, True),
        (1 * MIN, OPEN, True),
        (WINDOW - timedelta(microseconds=1), OPEN, True),
        (WINDOW, OPEN, False),  # exactly at the window: too late
        (WINDOW + timedelta(microseconds=1), OPEN, False),
        (60 * MIN, OPEN, False),
        (1 * MIN, ACKED, True),  # acknowledged incidents still gather tenants
        (WINDOW, ACKED, False),
        (timedelta(0), RESOLVED, False),
        (1 * MIN, RESOLVED, False),
        (-timedelta(seconds=2), OPEN, True),  # replica clocks slightly apart
    ],
)
def test_joins_open_incident(age: timedelta, status: IncidentStatus, joins: bool) -> None:
    result = joins_open_incident(
        incident_opened_at=T0, incident_status=status, now=T0 + age, window=WINDOW
    )
    assert result is joins


def test_joins_open_incident_compares_instants_across_offsets() -> None:
    cet = timezone(timedelta(hours=1))
    now = (T0 + 9 * MIN).astimezone(cet)
    assert joins_open_incident(incident_opened_at=T0, incident_status=OPEN, now=now, window=WINDOW)


def test_zero_window_never_joins() -> None:
    assert not joins_open_incident(
        incident_opened_at=T0, incident_status=OPEN, now=T0, window=timedelta(0)
    )


def test_joins_open_incident_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        joins_open_incident(
            incident_opened_at=T0,
            incident_status=OPEN,
            now=datetime(2026, 11, 24, 10, 1),
            window=WINDOW,
        )


# --- lifecycle -------------------------------------------------------------------------


def test_acknowledge_open() -> None:
    assert acknowledge(OPEN) is ACKED


@pytest.mark.parametrize(
    ("status", "error"), [(ACKED, AlreadyAcknowledged), (RESOLVED, AlreadyResolved)]
)
def test_acknowledge_errors(status: IncidentStatus, error: type[IncidentError]) -> None:
    with pytest.raises(error):
        acknowledge(status)


@pytest.mark.parametrize("status", [OPEN, ACKED])
def test_resolve(status: IncidentStatus) -> None:
    assert resolve(status) is RESOLVED


def test_resolve_resolved_raises() -> None:
    with pytest.raises(AlreadyResolved, match="already resolved"):
        resolve(RESOLVED)


def test_errors_are_value_errors() -> None:
    # the HTTP layer maps IncidentError (and so ValueError) to a 4xx
    assert issubclass(AlreadyResolved, IncidentError)
    assert issubclass(AlreadyAcknowledged, IncidentError)
    assert issubclass(IncidentError, ValueError)


def test_status_values_are_the_contract_words() -> None:
    assert [s.value for s in IncidentStatus] == ["open", "acknowledged", "resolved"]


@pytest.mark.parametrize(
    ("status", "closed", "platform", "expected"),
    [
        (OPEN, [True], False, True),
        (ACKED, [True, True, True], False, True),
        (OPEN, [True, False], False, False),  # one tenant still isolated
        (OPEN, [False], False, False),
        (OPEN, [True, True], True, False),  # platform alert still firing
        (ACKED, [True], True, False),
        (RESOLVED, [True], False, False),  # already resolved
        (RESOLVED, [], False, False),
        (OPEN, [], False, True),  # platform-only incident, platform alert stopped
        (OPEN, [], True, False),  # platform-only incident, still firing
    ],
)
def test_should_auto_resolve(
    status: IncidentStatus, closed: list[bool], platform: bool, expected: bool
) -> None:
    assert (
        should_auto_resolve(
            status=status, breaker_states_closed=closed, platform_alert_firing=platform
        )
        is expected
    )


# --- isolation spans -------------------------------------------------------------------


def span(
    tenant: str,
    start_min: float,
    end_min: float | None,
    cost: float | None = None,
    tier: Tier | None = None,
) -> IsolationSpan:
    return IsolationSpan(
        tenant_id=tenant,
        tier=tier,
        hourly_cost=cost,
        start=T0 + timedelta(minutes=start_min),
        end=None if end_min is None else T0 + timedelta(minutes=end_min),
    )


NOW = T0 + timedelta(minutes=120)


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ([], {}),
        ([span("a", 0, 30)], {"a": 0.5}),
        ([span("a", 0, 30), span("a", 60, 90)], {"a": 1.0}),  # disjoint add up
        ([span("a", 0, 30), span("a", 15, 45)], {"a": 0.75}),  # overlap merged
        ([span("a", 0, 60), span("a", 10, 20)], {"a": 1.0}),  # contained span
        ([span("a", 0, 30), span("a", 30, 60)], {"a": 1.0}),  # touching
        ([span("a", 15, 45), span("a", 0, 30)], {"a": 0.75}),  # order does not matter
        ([span("a", 0, 30), span("b", 0, 30)], {"a": 0.5, "b": 0.5}),  # per tenant
        ([span("a", 60, None)], {"a": 1.0}),  # open span ends now
        ([span("a", 0, 30), span("a", 20, None)], {"a": 2.0}),
        ([span("a", 10, 10)], {"a": 0.0}),
        ([span("a", 130, None)], {"a": 0.0}),  # starts after now: zero, not negative
    ],
)
def test_isolated_hours(spans: list[IsolationSpan], expected: dict[str, float]) -> None:
    assert isolated_hours(spans, now=NOW) == pytest.approx(expected)


@st.composite
def span_lists(draw: st.DrawFn) -> list[IsolationSpan]:
    n = draw(st.integers(min_value=1, max_value=12))
    out = []
    for _ in range(n):
        start = draw(st.integers(min_value=0, max_value=600))
        length = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=600)))
        cost = draw(st.one_of(st.none(), st.floats(min_value=0, max_value=1000)))
        out.append(
            span(
                draw(st.sampled_from(["a", "b", "c"])),
                start,
                None if length is None else start + length,
                cost,
            )
        )
    return out


def _first_to_last_hours(spans: list[IsolationSpan], now: datetime) -> float:
    first = min(s.start for s in spans)
    last = max(max(s.start, s.end if s.end is not None else now) for s in spans)
    return (last - first).total_seconds() / 3600


@given(span_lists(), st.integers(min_value=0, max_value=1500))
def test_isolated_hours_bounds(spans: list[IsolationSpan], now_min: int) -> None:
    now = T0 + timedelta(minutes=now_min)
    hours = isolated_hours(spans, now=now)
    assert set(hours) == {s.tenant_id for s in spans}
    for tenant, h in hours.items():
        assert h >= 0
        assert h <= _first_to_last_hours(spans, now) + 1e-9
        own = [s for s in spans if s.tenant_id == tenant]
        # merging never loses time: at least the longest single span
        assert h >= max(_first_to_last_hours([s], now) for s in own) - 1e-9
        # ... and never double counts: at most the sum of the spans
        assert h <= sum(_first_to_last_hours([s], now) for s in own) + 1e-9


@given(span_lists(), st.integers(min_value=0, max_value=1500))
def test_cost_contained_never_exceeds_uncontained(spans: list[IsolationSpan], now_min: int) -> None:
    now = T0 + timedelta(minutes=now_min)
    # the platform's hourly cost includes at least every affected tenant's
    per_tenant: dict[str, float] = {}
    for s in spans:
        per_tenant[s.tenant_id] = max(per_tenant.get(s.tenant_id, 0.0), s.hourly_cost or 0.0)
    impact = cost_impact(spans=spans, platform_hourly_cost=sum(per_tenant.values()), now=now)
    assert impact.hours == pytest.approx(_first_to_last_hours(spans, now))
    assert 0 <= impact.contained <= impact.uncontained + 1e-6


def test_isolation_span_validation() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        span("a", 30, 10)
    with pytest.raises(ValueError, match="hourly_cost"):
        span("a", 0, 10, cost=-1.0)
    with pytest.raises(ValueError, match="hourly_cost"):
        span("a", 0, 10, cost=float("nan"))
    with pytest.raises(ValueError, match="timezone-aware"):
        IsolationSpan(
            tenant_id="a", tier=None, hourly_cost=None, start=datetime(2026, 1, 1), end=None
        )


# --- cost impact -----------------------------------------------------------------------


def test_cost_impact_no_spans() -> None:
    assert cost_impact(spans=[], platform_hourly_cost=500.0, now=NOW) == CostImpact(0.0, 0.0, 0.0)


def test_cost_impact_single_tenant() -> None:
    impact = cost_impact(spans=[span("a", 0, 30, cost=100.0)], platform_hourly_cost=1000.0, now=NOW)
    assert impact.contained == pytest.approx(50.0)
    assert impact.uncontained == pytest.approx(500.0)
    assert impact.hours == pytest.approx(0.5)


def test_cost_impact_several_tenants() -> None:
    spans = [
        span("a", 0, 60, cost=100.0, tier=Tier.GOLD),
        span("a", 30, 90, cost=100.0, tier=Tier.GOLD),  # overlaps: a isolated 1.5 h
        span("b", 30, 60, cost=40.0),  # 0.5 h
        span("c", 60, None, cost=None),  # unknown cost counts 0; open until now (1 h)
    ]
    impact = cost_impact(spans=spans, platform_hourly_cost=2000.0, now=NOW)
    assert impact.contained == pytest.approx(100.0 * 1.5 + 40.0 * 0.5)
    assert impact.hours == pytest.approx(2.0)  # first start (0) to now (120)
    assert impact.uncontained == pytest.approx(4000.0)


def test_cost_impact_prices_a_changed_cost_at_its_highest() -> None:
    spans = [span("a", 0, 60, cost=10.0), span("a", 60, 120, cost=30.0)]
    reversed_spans = list(reversed(spans))
    for ordering in (spans, reversed_spans):
        impact = cost_impact(spans=ordering, platform_hourly_cost=100.0, now=NOW)
        assert impact.contained == pytest.approx(60.0)


def test_cost_impact_rejects_bad_platform_cost() -> None:
    with pytest.raises(ValueError, match="platform_hourly_cost"):
        cost_impact(spans=[], platform_hourly_cost=-1.0, now=NOW)


# --- action items ----------------------------------------------------------------------


_DROP = object()  # marks a key to leave out of the item


def item(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "description": "Alert on per-tenant connection pool saturation",
        "owner_team": "platform-sre",
        "due": "2026-12-15",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def test_validate_action_items_ok() -> None:
    items = validate_action_items(
        [
            item(),
            item(description="  Add a runbook  ", owner_team=" search ", status="done"),
            item(due=date(2027, 1, 31)),
        ]
    )
    assert items == [
        ActionItem(
            description="Alert on per-tenant connection pool saturation",
            owner_team="platform-sre",
            due=date(2026, 12, 15),
            status="open",
        ),
        ActionItem("Add a runbook", "search", date(2026, 12, 15), "done"),
        ActionItem(
            "Alert on per-tenant connection pool saturation", "platform-sre", date(2027, 1, 31)
        ),
    ]


def test_validate_action_items_empty_list() -> None:
    assert validate_action_items([]) == []


def test_validate_action_items_limits_are_inclusive() -> None:
    assert len(validate_action_items([item()] * MAX_ACTION_ITEMS)) == MAX_ACTION_ITEMS
    assert validate_action_items([item(description="x" * 500)])[0].description == "x" * 500


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (item(description=_DROP), r"action_items\[0\]\.description is required"),
        (item(description=""), r"description must not be empty"),
        (item(description="   \n"), r"description must not be empty"),
        (item(description=42), r"description must be a string"),
        (item(description="x" * 501), r"description is 501 characters long; the limit is 500"),
        (item(owner_team=_DROP), r"owner_team is required"),
        (item(owner_team=""), r"owner_team must not be empty"),
        (item(owner_team="alice@example.com"), r"owner_team must name a team, not a person"),
        (item(owner_team="@alice"), r"owner_team must name a team, not a person"),
        (item(owner_team="x" * 101), r"owner_team is longer than 100"),
        (item(due=_DROP), r"due is required"),
        (item(due="next week"), r"due must be an ISO date"),
        (item(due="2026-02-30"), r"due must be an ISO date"),
        (item(due="15/12/2026"), r"due must be an ISO date"),
        (item(due="20261215"), r"due must be an ISO date"),
        (item(due="2026-12-15T10:00:00"), r"due must be an ISO date"),
        (item(due=datetime(2026, 12, 15, tzinfo=UTC)), r"due must be an ISO date"),
        (item(due=20261215), r"due must be an ISO date"),
        (item(status=""), r"status must not be empty"),
        (item(status=3), r"status must be a string"),
    ],
)
def test_validate_action_items_errors(bad: Mapping[str, object], message: str) -> None:
    with pytest.raises(IncidentError, match=message):
        validate_action_items([bad])


def test_validate_action_items_names_the_bad_item() -> None:
    with pytest.raises(IncidentError, match=r"action_items\[2\]\.owner_team"):
        validate_action_items([item(), item(), item(owner_team="bob@corp.example")])


def test_validate_action_items_too_many() -> None:
    with pytest.raises(IncidentError, match="too many action items: 51; the limit is 50"):
        validate_action_items([item()] * (MAX_ACTION_ITEMS + 1))


def test_validate_action_items_rejects_non_objects() -> None:
    with pytest.raises(IncidentError, match=r"action_items\[0\] must be an object"):
        validate_action_items(["fix it"])  # type: ignore[list-item]
    with pytest.raises(IncidentError, match="action_items must be a list"):
        validate_action_items("fix it")  # type: ignore[arg-type]
