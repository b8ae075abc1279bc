"""Unit and property tests for the pure breaker state machine (receiver/domain/breaker.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.domain.breaker import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    NotOverridden,
    Outcome,
    OverrideAction,
    Suppressed,
    Transition,
    admit_ratio,
    advance,
    allows,
    counts_as_isolated,
    effective,
    isolation_limit,
    next_change_at,
    on_alert_fired,
    on_alert_resolved,
    on_outcomes,
    override,
)

S = BreakerState
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = BreakerPolicy()
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def transitions(out: Outcome) -> list[tuple[BreakerState, BreakerState]]:
    return [(e.from_state, e.to_state) for e in out.events if isinstance(e, Transition)]


def kinds(out: Outcome) -> list[str]:
    return [type(e).__name__ for e in out.events]


# --- starting points --------------------------------------------------------------------


def closed() -> Breaker:
    return Breaker("t1")


def open_(streak: int = 1, *, firing: bool = True, opened: float = 0) -> Breaker:
    return Breaker(
        "t1",
        S.OPEN,
        opened_at=at(opened),
        trips=streak,
        streak=streak,
        alert_firing=firing,
        changed_at=at(opened),
    )


def half_open(
    streak: int = 1, *, firing: bool = True, since: float = 0, resolved: float | None = None
) -> Breaker:
    return Breaker(
        "t1",
        S.HALF_OPEN,
        opened_at=at(since - 60),
        trips=streak,
        streak=streak,
        half_open_at=at(since),
        alert_firing=firing,
        resolved_at=None if resolved is None else at(resolved),
        changed_at=at(since),
    )


def forced_open(*, firing: bool = True) -> Breaker:
    return Breaker("t1", S.FORCED_OPEN, trips=1, streak=1, alert_firing=firing, changed_at=T0)


def forced_closed(*, firing: bool = False) -> Breaker:
    return Breaker("t1", S.FORCED_CLOSED, alert_firing=firing, changed_at=T0)


STARTS: dict[str, Callable[[], Breaker]] = {
    "closed": closed,
    "open": open_,
    "half_open": half_open,
    "forced_open": forced_open,
    "forced_closed": forced_closed,
}

# --- events, all at T0 + 1 s (inside the first open period and the probation) ------------

NOW = at(1)
Apply = Callable[[Breaker], Outcome]

EVENTS: dict[str, Apply] = {
    "fire": lambda b: on_alert_fired(
        b, now=NOW, policy=POLICY, isolated=0, known_tenants=10, max_isolated_percent=20
    ),
    "fire_at_limit": lambda b: on_alert_fired(
        b, now=NOW, policy=POLICY, isolated=2, known_tenants=10, max_isolated_percent=20
    ),
    "resolve": lambda b: on_alert_resolved(b, now=NOW, policy=POLICY, still_firing=False),
    "resolve_other_firing": lambda b: on_alert_resolved(
        b, now=NOW, policy=POLICY, still_firing=True
    ),
    "probes_healthy": lambda b: on_outcomes(b, success=10, failure=0, now=NOW, policy=POLICY),
    "probes_failing": lambda b: on_outcomes(b, success=0, failure=10, now=NOW, policy=POLICY),
    "probes_too_few": lambda b: on_outcomes(b, success=3, failure=3, now=NOW, policy=POLICY),
    "force_open": lambda b: override(
        b, action=OverrideAction.FORCE_OPEN, reason="maint", now=NOW, policy=POLICY
    ),
    "force_close": lambda b: override(
        b, action=OverrideAction.FORCE_CLOSE, reason="maint", now=NOW, policy=POLICY
    ),
    "release": lambda b: override(
        b, action=OverrideAction.RELEASE, reason="done", now=NOW, policy=POLICY
    ),
    "advance": lambda b: advance(b, now=NOW, policy=POLICY),
}

T, SUP = "Transition", "Suppressed"
# (start, event) -> (end state, event kinds); NotOverridden where the event must raise.
TABLE: dict[tuple[str, str], tuple[BreakerState, list[str]] | type[Exception]] = {
    ("closed", "fire"): (S.OPEN, [T]),
    ("closed", "fire_at_limit"): (S.CLOSED, [SUP]),
    ("closed", "resolve"): (S.CLOSED, []),
    ("closed", "resolve_other_firing"): (S.CLOSED, []),
    ("closed", "probes_healthy"): (S.CLOSED, []),
    ("closed", "probes_failing"): (S.CLOSED, []),
    ("closed", "probes_too_few"): (S.CLOSED, []),
    ("closed", "force_open"): (S.FORCED_OPEN, [T]),
    ("closed", "force_close"): (S.FORCED_CLOSED, [T]),
    ("closed", "release"): NotOverridden,
    ("closed", "advance"): (S.CLOSED, []),
    ("open", "fire"): (S.OPEN, []),
    ("open", "fire_at_limit"): (S.OPEN, []),
    ("open", "resolve"): (S.OPEN, []),
    ("open", "resolve_other_firing"): (S.OPEN, []),
    ("open", "probes_healthy"): (S.OPEN, []),
    ("open", "probes_failing"): (S.OPEN, []),
    ("open", "probes_too_few"): (S.OPEN, []),
    ("open", "force_open"): (S.FORCED_OPEN, [T]),
    ("open", "force_close"): (S.FORCED_CLOSED, [T]),
    ("open", "release"): NotOverridden,
    ("open", "advance"): (S.OPEN, []),
    ("half_open", "fire"): (S.OPEN, [T]),
    ("half_open", "fire_at_limit"): (S.OPEN, [T]),
    ("half_open", "resolve"): (S.HALF_OPEN, []),
    ("half_open", "resolve_other_firing"): (S.HALF_OPEN, []),
    ("half_open", "probes_healthy"): (S.CLOSED, [T]),
    ("half_open", "probes_failing"): (S.OPEN, [T]),
    ("half_open", "probes_too_few"): (S.HALF_OPEN, []),
    ("half_open", "force_open"): (S.FORCED_OPEN, [T]),
    ("half_open", "force_close"): (S.FORCED_CLOSED, [T]),
    ("half_open", "release"): NotOverridden,
    ("half_open", "advance"): (S.HALF_OPEN, []),
    ("forced_open", "fire"): (S.FORCED_OPEN, []),
    ("forced_open", "fire_at_limit"): (S.FORCED_OPEN, []),
    ("forced_open", "resolve"): (S.FORCED_OPEN, []),
    ("forced_open", "resolve_other_firing"): (S.FORCED_OPEN, []),
    ("forced_open", "probes_healthy"): (S.FORCED_OPEN, []),
    ("forced_open", "probes_failing"): (S.FORCED_OPEN, []),
    ("forced_open", "probes_too_few"): (S.FORCED_OPEN, []),
    ("forced_open", "force_open"): (S.FORCED_OPEN, []),
    ("forced_open", "force_close"): (S.FORCED_CLOSED, [T]),
    ("forced_open", "release"): (S.OPEN, [T]),  # its alert is firing
    ("forced_open", "advance"): (S.FORCED_OPEN, []),
    ("forced_closed", "fire"): (S.FORCED_CLOSED, []),
    ("forced_closed", "fire_at_limit"): (S.FORCED_CLOSED, []),
    ("forced_closed", "resolve"): (S.FORCED_CLOSED, []),
    ("forced_closed", "resolve_other_firing"): (S.FORCED_CLOSED, []),
    ("forced_closed", "probes_healthy"): (S.FORCED_CLOSED, []),
    ("forced_closed", "probes_failing"): (S.FORCED_CLOSED, []),
    ("forced_closed", "probes_too_few"): (S.FORCED_CLOSED, []),
    ("forced_closed", "force_open"): (S.FORCED_OPEN, [T]),
    ("forced_closed", "force_close"): (S.FORCED_CLOSED, []),
    ("forced_closed", "release"): (S.CLOSED, [T]),  # no alert firing
    ("forced_closed", "advance"): (S.FORCED_CLOSED, []),
}


def test_table_covers_every_state_and_event() -> None:
    assert set(TABLE) == {(s, e) for s in STARTS for e in EVENTS}


@pytest.mark.parametrize(("start", "event"), sorted(TABLE), ids="-".join)
def test_transition_table(start: str, event: str) -> None:
    before = STARTS[start]()
    expected = TABLE[(start, event)]
    if isinstance(expected, type):
        with pytest.raises(expected):
            EVENTS[event](before)
        return
    state, expected_kinds = expected
    out = EVENTS[event](before)
    assert out.breaker.state is state
    assert kinds(out) == expected_kinds
    for e in out.events:
        assert e.tenant_id == "t1"
        assert e.at == NOW
        if isinstance(e, Transition):
            assert (e.from_state, e.to_state) == (before.state, state)
            assert out.breaker.changed_at == NOW
    if not out.events:
        # Nothing happened to the state, so nothing but the alert bookkeeping may change.
        assert dataclasses.replace(
            out.breaker, alert_firing=before.alert_firing, resolved_at=before.resolved_at
        ) == dataclasses.replace(
            before,
            probe_successes=out.breaker.probe_successes,
            probe_failures=out.breaker.probe_failures,
        )


# --- open duration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("streak", "seconds"),
    [(1, 60), (2, 120), (3, 240), (4, 480), (5, 900), (6, 900), (10_000, 900)],
)
def test_open_duration_doubles_and_caps(streak: int, seconds: float) -> None:
    assert POLICY.open_duration(streak) == timedelta(seconds=seconds)


def test_open_duration_cap_below_base_wins() -> None:
    policy = BreakerPolicy(open_seconds=120, max_open_seconds=30)
    assert policy.open_duration(1) == timedelta(seconds=30)


@pytest.mark.parametrize("streak", [0, -1])
def test_open_duration_rejects_streak_below_one(streak: int) -> None:
    with pytest.raises(ValueError):
        POLICY.open_duration(streak)


def test_streak_doubles_each_reopen_until_the_cap() -> None:
    b, now, periods = closed(), T0, []
    for _ in range(6):
        b = on_alert_fired(
            b, now=now, policy=POLICY, isolated=0, known_tenants=10, max_isolated_percent=20
        ).breaker
        assert b.state is S.OPEN
        opened = now
        now = next_change_at(b, policy=POLICY) or now
        periods.append((now - opened).total_seconds())
        assert effective(b, now=now - timedelta(microseconds=1), policy=POLICY).state is S.OPEN
        b = advance(b, now=now, policy=POLICY).breaker
        assert b.state is S.HALF_OPEN
    assert periods == [60, 120, 240, 480, 900, 900]
    assert (b.trips, b.streak) == (6, 6)


def test_open_with_streak_zero_is_treated_as_first_period() -> None:
    b = dataclasses.replace(open_(), streak=0)
    assert next_change_at(b, policy=POLICY) == at(60)
    assert advance(b, now=at(60), policy=POLICY).breaker.state is S.HALF_OPEN


# --- advance ----------------------------------------------------------------------------


def test_open_becomes_half_open_at_the_end_of_the_period_not_at_now() -> None:
    out = advance(open_(), now=at(100), policy=POLICY)
    assert out.breaker.state is S.HALF_OPEN
    assert out.breaker.half_open_at == at(60)
    assert out.breaker.changed_at == at(60)
    assert out.events == (Transition("t1", S.OPEN, S.HALF_OPEN, "open period elapsed", at(60)),)
    assert (out.breaker.probe_successes, out.breaker.probe_failures) == (0, 0)


def test_open_stays_open_until_the_exact_moment() -> None:
    assert advance(open_(), now=at(59.999), policy=POLICY).events == ()
    assert advance(open_(), now=at(60), policy=POLICY).breaker.state is S.HALF_OPEN


def test_advance_chains_open_to_half_open_to_closed() -> None:
    b = dataclasses.replace(open_(), alert_firing=False, resolved_at=at(10))
    out = advance(b, now=at(500), policy=POLICY)
    assert transitions(out) == [(S.OPEN, S.HALF_OPEN), (S.HALF_OPEN, S.CLOSED)]
    assert [e.at for e in out.events] == [at(60), at(120)]
    assert out.breaker.state is S.CLOSED
    assert out.breaker.streak == 0
    assert out.breaker.trips == 1
    assert out.breaker.changed_at == at(120)
    assert out.breaker.half_open_at is None
    assert out.events[1] == Transition(
        "t1", S.HALF_OPEN, S.CLOSED, "alert resolved and probation passed", at(120)
    )


def test_advance_keeps_half_open_while_the_alert_fires() -> None:
    assert advance(half_open(), now=at(10_000), policy=POLICY).events == ()


@pytest.mark.parametrize("state", [S.CLOSED, S.FORCED_OPEN, S.FORCED_CLOSED])
def test_time_never_moves_closed_or_forced(state: BreakerState) -> None:
    b = Breaker("t1", state, opened_at=T0, streak=1, trips=1, resolved_at=T0)
    assert advance(b, now=at(1e7), policy=POLICY) == Outcome(b)


@pytest.mark.parametrize(
    ("resolved", "half_open_since", "closes_at"),
    [
        (-30, 0, 60),  # resolved while still open: probation counts from half-open
        (0, 0, 60),
        (25, 0, 85),  # resolved during half-open: probation counts from the resolve
    ],
)
def test_probation_counts_from_the_later_of_resolve_and_half_open(
    resolved: float, half_open_since: float, closes_at: float
) -> None:
    b = half_open(firing=False, since=half_open_since, resolved=resolved)
    assert next_change_at(b, policy=POLICY) == at(closes_at)
    assert effective(b, now=at(closes_at - 0.001), policy=POLICY).state is S.HALF_OPEN
    out = advance(b, now=at(closes_at + 5), policy=POLICY)
    assert out.breaker.state is S.CLOSED
    assert out.events[0].at == at(closes_at)


def test_resolve_while_open_then_close_after_half_open_plus_probation() -> None:
    b = on_alert_resolved(open_(), now=at(10), policy=POLICY, still_firing=False).breaker
    assert (b.state, b.alert_firing, b.resolved_at) == (S.OPEN, False, at(10))
    assert effective(b, now=at(119), policy=POLICY).state is S.HALF_OPEN
    assert effective(b, now=at(120), policy=POLICY).state is S.CLOSED


def test_zero_probation_closes_at_the_resolve_instant() -> None:
    policy = BreakerPolicy(probation_seconds=0)
    out = on_alert_resolved(half_open(), now=at(5), policy=policy, still_firing=False)
    assert out.breaker.state is S.CLOSED
    assert out.events == (
        Transition("t1", S.HALF_OPEN, S.CLOSED, "alert resolved and probation passed", at(5)),
    )


def test_zero_probation_resolved_while_open_closes_when_half_open_begins() -> None:
    policy = BreakerPolicy(probation_seconds=0)
    b = on_alert_resolved(open_(), now=at(5), policy=policy, still_firing=False).breaker
    out = advance(b, now=at(60), policy=policy)
    assert transitions(out) == [(S.OPEN, S.HALF_OPEN), (S.HALF_OPEN, S.CLOSED)]
    assert [e.at for e in out.events] == [at(60), at(60)]


def test_advance_is_idempotent_at_the_same_instant() -> None:
    b = dataclasses.replace(open_(), alert_firing=False, resolved_at=at(10))
    first = advance(b, now=at(90), policy=POLICY)
    assert len(first.events) == 1
    assert advance(first.breaker, now=at(90), policy=POLICY) == Outcome(first.breaker)


def test_effective_equals_advance() -> None:
    b = open_()
    assert effective(b, now=at(70), policy=POLICY) == advance(b, now=at(70), policy=POLICY).breaker


def test_next_change_at() -> None:
    assert next_change_at(closed(), policy=POLICY) is None
    assert next_change_at(forced_open(), policy=POLICY) is None
    assert next_change_at(forced_closed(), policy=POLICY) is None
    assert next_change_at(open_(streak=2), policy=POLICY) == at(120)
    assert next_change_at(half_open(), policy=POLICY) is None  # only probes or a resolve
    assert next_change_at(half_open(firing=False, resolved=3), policy=POLICY) == at(63)


# --- alert fired ------------------------------------------------------------------------


def fire(b: Breaker, now: datetime = NOW, *, isolated: int = 0, known: int = 10) -> Outcome:
    return on_alert_fired(
        b, now=now, policy=POLICY, isolated=isolated, known_tenants=known, max_isolated_percent=20
    )


def test_fire_trips_a_closed_breaker() -> None:
    b = dataclasses.replace(closed(), resolved_at=T0, trips=4)
    out = fire(b)
    assert out.tripped and not out.suppressed
    assert out.breaker == dataclasses.replace(
        b,
        state=S.OPEN,
        opened_at=NOW,
        trips=5,
        streak=1,
        alert_firing=True,
        resolved_at=None,
        changed_at=NOW,
    )
    assert out.events == (Transition("t1", S.CLOSED, S.OPEN, "isolating alert fired", NOW),)


def test_fire_in_half_open_reopens_with_a_longer_period_and_no_guard() -> None:
    b = dataclasses.replace(half_open(streak=2, firing=False, resolved=0), probe_successes=3)
    out = fire(b, isolated=50, known=10)
    assert out.tripped and not out.suppressed
    nb = out.breaker
    assert (nb.state, nb.streak, nb.trips, nb.opened_at) == (S.OPEN, 3, 3, NOW)
    assert (nb.half_open_at, nb.probe_successes, nb.resolved_at) == (None, 0, None)
    assert nb.alert_firing
    assert next_change_at(nb, policy=POLICY) == NOW + timedelta(seconds=240)


def test_fire_on_open_is_not_a_new_trip() -> None:
    b = dataclasses.replace(open_(), alert_firing=False, resolved_at=at(0.5))
    out = fire(b)
    assert out.events == ()
    assert not out.tripped
    assert out.breaker == dataclasses.replace(b, alert_firing=True, resolved_at=None)


def test_time_driven_change_comes_before_the_event() -> None:
    out = fire(open_(), now=at(61))
    assert transitions(out) == [(S.OPEN, S.HALF_OPEN), (S.HALF_OPEN, S.OPEN)]
    assert [e.at for e in out.events] == [at(60), at(61)]
    assert out.breaker.streak == 2
    assert out.tripped


@pytest.mark.parametrize("make", [forced_open, forced_closed])
def test_fire_on_forced_only_records_the_alert(make: Callable[..., Breaker]) -> None:
    b = make(firing=False)
    out = fire(b)
    assert out.events == ()
    assert out.breaker == dataclasses.replace(b, alert_firing=True, resolved_at=None)


@pytest.mark.parametrize(
    ("known", "pct", "limit"),
    [
        (10, 20, 2),
        (1, 20, 1),
        (0, 20, 1),
        (4, 20, 1),
        (5, 20, 1),
        (14, 20, 2),
        (15, 20, 3),
        (50, 20, 10),
        (10, 0, 1),
        (10, 100, 10),
        (100, 29, 29),
        (1000, 33.3, 333),
        (3, 33.34, 1),
        (375, 18.4, 69),  # 68.99999999999999 in binary floats
    ],
)
def test_isolation_limit(known: int, pct: float, limit: int) -> None:
    assert isolation_limit(known, pct) == limit


@pytest.mark.parametrize(("known", "pct"), [(-1, 20), (10, -0.1), (10, 100.1), (10, float("nan"))])
def test_isolation_limit_rejects_bad_input(known: int, pct: float) -> None:
    with pytest.raises(ValueError):
        isolation_limit(known, pct)


@pytest.mark.parametrize(
    ("known", "isolated", "trips"),
    [(10, 0, True), (10, 1, True), (10, 2, False), (10, 7, False), (1, 0, True), (0, 0, True)],
)
def test_guard(known: int, isolated: int, trips: bool) -> None:
    out = fire(closed(), isolated=isolated, known=known)
    assert out.tripped is trips
    assert out.suppressed is not trips
    assert out.breaker.alert_firing
    if not trips:
        assert out.breaker.state is S.CLOSED
        assert out.events == (Suppressed("t1", isolated, isolation_limit(known, 20), NOW),)


def test_fire_rejects_negative_isolated() -> None:
    with pytest.raises(ValueError):
        fire(closed(), isolated=-1)


def test_suppressed_tenant_trips_on_a_later_instance_once_there_is_room() -> None:
    b = fire(closed(), isolated=2).breaker
    assert b.state is S.CLOSED
    assert fire(b, isolated=1).tripped


# --- alert resolved ---------------------------------------------------------------------


def test_resolve_records_the_time_without_changing_state() -> None:
    out = on_alert_resolved(half_open(), now=at(5), policy=POLICY, still_firing=False)
    assert out.events == ()
    assert (out.breaker.alert_firing, out.breaker.resolved_at) == (False, at(5))


def test_duplicate_resolve_keeps_the_first_time() -> None:
    b = on_alert_resolved(half_open(), now=at(5), policy=POLICY, still_firing=False).breaker
    again = on_alert_resolved(b, now=at(30), policy=POLICY, still_firing=False)
    assert again == Outcome(b)
    assert effective(again.breaker, now=at(65), policy=POLICY).state is S.CLOSED


def test_resolve_without_a_seen_firing_sets_resolved_at() -> None:
    out = on_alert_resolved(closed(), now=NOW, policy=POLICY, still_firing=False)
    assert out == Outcome(dataclasses.replace(closed(), resolved_at=NOW))


def test_resolve_while_another_instance_fires_keeps_firing() -> None:
    b = half_open(firing=False, resolved=0)
    out = on_alert_resolved(b, now=NOW, policy=POLICY, still_firing=True)
    assert out.events == ()
    assert (out.breaker.alert_firing, out.breaker.resolved_at) == (True, None)
    assert effective(out.breaker, now=at(1e6), policy=POLICY).state is S.HALF_OPEN


def test_resolve_on_forced_breaker_then_release_closes() -> None:
    b = on_alert_resolved(forced_open(), now=NOW, policy=POLICY, still_firing=False).breaker
    assert b.state is S.FORCED_OPEN and not b.alert_firing
    out = override(b, action=OverrideAction.RELEASE, reason="ok", now=at(2), policy=POLICY)
    assert out.breaker.state is S.CLOSED


# --- probe outcomes ---------------------------------------------------------------------


def probes(b: Breaker, success: int, failure: int, now: datetime = NOW) -> Outcome:
    return on_outcomes(b, success=success, failure=failure, now=now, policy=POLICY)


def test_probes_accumulate_until_enough() -> None:
    b = probes(half_open(), 4, 0).breaker
    b = probes(b, 5, 0).breaker
    assert (b.state, b.probe_successes, b.probe_failures) == (S.HALF_OPEN, 9, 0)
    out = probes(b, 0, 1)
    assert out.breaker.state is S.CLOSED
    assert out.breaker.streak == 0
    assert (out.breaker.probe_successes, out.breaker.probe_failures) == (0, 0)
    assert out.breaker.half_open_at is None
    reason = out.events[0].reason if isinstance(out.events[0], Transition) else ""
    assert "0.10" in reason and "1/10" in reason


def test_failure_ratio_at_the_threshold_reopens() -> None:
    out = probes(half_open(streak=1), 5, 5)
    nb = out.breaker
    assert (nb.state, nb.streak, nb.trips, nb.opened_at) == (S.OPEN, 2, 2, NOW)
    assert out.tripped
    reason = out.events[0].reason if isinstance(out.events[0], Transition) else ""
    assert "0.50" in reason and "5/10" in reason


def test_failure_ratio_just_under_the_threshold_closes() -> None:
    assert probes(half_open(), 6, 4).breaker.state is S.CLOSED


def test_big_batch_counts_whole() -> None:
    b = probes(half_open(), 0, 3).breaker
    out = probes(b, 20, 0)  # 3/23 failing
    assert out.breaker.state is S.CLOSED
    reason = out.events[0].reason if isinstance(out.events[0], Transition) else ""
    assert "3/23" in reason


def test_probes_after_the_open_period_count_in_the_new_half_open() -> None:
    out = probes(open_(), 10, 0, now=at(61))
    assert transitions(out) == [(S.OPEN, S.HALF_OPEN), (S.HALF_OPEN, S.CLOSED)]


def test_zero_probes_change_nothing() -> None:
    b = half_open()
    assert probes(b, 0, 0) == Outcome(b)


@pytest.mark.parametrize("start", sorted(STARTS))
@pytest.mark.parametrize(("success", "failure"), [(-1, 0), (0, -1), (-5, 10)])
def test_negative_outcomes_raise(start: str, success: int, failure: int) -> None:
    with pytest.raises(ValueError):
        probes(STARTS[start](), success, failure)


# --- overrides --------------------------------------------------------------------------


def act(b: Breaker, action: OverrideAction, reason: str = "db migration") -> Outcome:
    return override(b, action=action, reason=reason, now=NOW, policy=POLICY)


def test_release_with_a_firing_alert_opens_a_new_streak() -> None:
    b = dataclasses.replace(forced_open(), streak=4, trips=7)
    out = act(b, OverrideAction.RELEASE, "fixed upstream")
    nb = out.breaker
    assert (nb.state, nb.streak, nb.trips, nb.opened_at) == (S.OPEN, 1, 8, NOW)
    assert out.events == (
        Transition("t1", S.FORCED_OPEN, S.OPEN, "operator release: fixed upstream", NOW),
    )
    assert not out.tripped  # the operator's decision, not an automatic trip
    assert next_change_at(nb, policy=POLICY) == NOW + timedelta(seconds=60)


def test_release_without_a_firing_alert_closes() -> None:
    b = dataclasses.replace(forced_open(firing=False), streak=3)
    out = act(b, OverrideAction.RELEASE)
    assert (out.breaker.state, out.breaker.streak, out.breaker.trips) == (S.CLOSED, 0, 1)


def test_release_of_forced_closed_with_firing_alert_opens_ignoring_the_guard() -> None:
    out = act(forced_closed(firing=True), OverrideAction.RELEASE)
    assert out.breaker.state is S.OPEN
    assert out.breaker.streak == 1


@pytest.mark.parametrize("start", ["closed", "open", "half_open"])
def test_release_of_a_breaker_not_forced_raises(start: str) -> None:
    with pytest.raises(NotOverridden):
        act(STARTS[start](), OverrideAction.RELEASE)
    assert issubclass(NotOverridden, ValueError)


def test_release_after_time_moved_it_is_judged_on_the_effective_state() -> None:
    b = dataclasses.replace(open_(), alert_firing=False, resolved_at=T0)
    with pytest.raises(NotOverridden):
        override(b, action=OverrideAction.RELEASE, reason="x", now=at(500), policy=POLICY)


def test_override_reason_is_carried() -> None:
    out = act(closed(), OverrideAction.FORCE_OPEN, "tenant asked for maintenance")
    assert out.events == (
        Transition(
            "t1",
            S.CLOSED,
            S.FORCED_OPEN,
            "operator force_open: tenant asked for maintenance",
            NOW,
        ),
    )
    assert not out.tripped


@pytest.mark.parametrize("reason", ["", "   "])
def test_override_needs_a_reason(reason: str) -> None:
    with pytest.raises(ValueError):
        act(closed(), OverrideAction.FORCE_OPEN, reason)


def test_forcing_from_half_open_drops_the_probe_period() -> None:
    b = dataclasses.replace(half_open(), probe_successes=2, probe_failures=1)
    nb = act(b, OverrideAction.FORCE_CLOSE).breaker
    assert (nb.state, nb.half_open_at, nb.probe_successes, nb.probe_failures) == (
        S.FORCED_CLOSED,
        None,
        0,
        0,
    )


def test_forced_states_ignore_the_guard() -> None:
    # force_open has no guard input at all: many tenants may be forced open.
    bs = [act(Breaker(f"t{i}"), OverrideAction.FORCE_OPEN).breaker for i in range(10)]
    assert all(counts_as_isolated(b.state) for b in bs)


# --- validation -------------------------------------------------------------------------


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError):
        advance(closed(), now=datetime(2024, 1, 1), policy=POLICY)


def test_other_offsets_are_fine() -> None:
    plus2 = timezone(timedelta(hours=2))
    out = advance(open_(), now=datetime(2024, 5, 1, 14, 1, tzinfo=plus2), policy=POLICY)
    assert out.breaker.state is S.HALF_OPEN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"state": S.OPEN},
        {"state": S.HALF_OPEN, "opened_at": T0},
        {"trips": -1},
        {"streak": -1},
        {"probe_failures": -1},
        {"opened_at": datetime(2024, 1, 1)},
    ],
)
def test_breaker_rejects_impossible_rows(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Breaker("t1", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"open_seconds": 0},
        {"max_open_seconds": -1},
        {"half_open_probes": 0},
        {"probe_failure_ratio": 0},
        {"probe_failure_ratio": 1.5},
        {"probation_seconds": -1},
        {"probation_seconds": float("inf")},
        {"half_open_admit_ratio": 0},
        {"half_open_admit_ratio": 1.1},
        {"open_seconds": float("nan")},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**kwargs)  # type: ignore[arg-type]


# --- what a gateway reads ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "allow", "ratio", "isolated"),
    [
        (S.CLOSED, True, 1.0, False),
        (S.FORCED_CLOSED, True, 1.0, False),
        (S.HALF_OPEN, True, 0.1, True),
        (S.OPEN, False, 0.0, True),
        (S.FORCED_OPEN, False, 0.0, True),
    ],
)
def test_gateway_view(state: BreakerState, allow: bool, ratio: float, isolated: bool) -> None:
    assert allows(state) is allow
    assert admit_ratio(state, POLICY) == ratio
    assert counts_as_isolated(state) is isolated


def test_outcome_flags() -> None:
    assert not Outcome(closed()).tripped
    assert not Outcome(closed()).suppressed
    assert Outcome(closed(), (Suppressed("t1", 2, 2, T0),)).suppressed


# --- properties -------------------------------------------------------------------------

policies = st.builds(
    BreakerPolicy,
    open_seconds=st.sampled_from([1.0, 30.0, 60.0]),
    max_open_seconds=st.sampled_from([60.0, 300.0, 900.0]),
    half_open_probes=st.integers(1, 10),
    probe_failure_ratio=st.sampled_from([0.2, 0.5, 1.0]),
    probation_seconds=st.sampled_from([0.0, 30.0, 60.0]),
    half_open_admit_ratio=st.sampled_from([0.05, 0.1, 1.0]),
)

# One step: (kind, time step in seconds, integer a, integer b, flag).
steps = st.tuples(
    st.sampled_from(["fire", "resolve", "outcomes", "tick", "force", "release"]),
    st.sampled_from([0.0, 0.5, 1.0, 10.0, 30.0, 61.0, 200.0, 1000.0]),
    st.integers(0, 6),
    st.integers(0, 6),
    st.booleans(),
)


def apply_step(
    b: Breaker,
    step: tuple[str, float, int, int, bool],
    now: datetime,
    policy: BreakerPolicy,
    *,
    isolated: int = 0,
    known: int = 10,
    pct: float = 20,
    overrides: bool = True,
) -> Outcome:
    kind, _, x, y, flag = step
    if kind == "fire":
        return on_alert_fired(
            b,
            now=now,
            policy=policy,
            isolated=isolated,
            known_tenants=known,
            max_isolated_percent=pct,
        )
    if kind == "resolve":
        return on_alert_resolved(b, now=now, policy=policy, still_firing=flag)
    if kind == "outcomes":
        return on_outcomes(b, success=x, failure=y, now=now, policy=policy)
    if kind == "force" and overrides:
        action = OverrideAction.FORCE_OPEN if flag else OverrideAction.FORCE_CLOSE
        return override(b, action=action, reason="prop", now=now, policy=policy)
    if kind == "release" and overrides:
        try:
            return override(b, action=OverrideAction.RELEASE, reason="prop", now=now, policy=policy)
        except NotOverridden:
            assert effective(b, now=now, policy=policy).state not in (
                S.FORCED_OPEN,
                S.FORCED_CLOSED,
            )
            return advance(b, now=now, policy=policy)
    return advance(b, now=now, policy=policy)


def check_outcome(before: Breaker, out: Outcome, now: datetime, policy: BreakerPolicy) -> None:
    """Invariants every Outcome keeps, whatever produced it."""
    state, last_at = before.state, None
    for e in out.events:
        assert e.at <= now
        assert last_at is None or last_at <= e.at
        last_at = e.at
        if isinstance(e, Transition):
            assert e.from_state is state and e.to_state is not state
            state = e.to_state
    assert out.breaker.state is state
    nb = out.breaker
    assert nb.trips >= before.trips
    assert nb.tenant_id == before.tenant_id
    if nb.state is S.CLOSED:
        assert nb.streak == 0
    if nb.state in (S.OPEN, S.HALF_OPEN):
        assert nb.streak >= 1
    if nb.state is S.HALF_OPEN:
        assert nb.half_open_at is not None
        assert nb.probe_successes + nb.probe_failures < policy.half_open_probes
    else:
        assert (nb.probe_successes, nb.probe_failures, nb.half_open_at) == (0, 0, None)
    assert not (nb.alert_firing and nb.resolved_at is not None)


@st.composite
def reachable(
    draw: st.DrawFn, *, overrides: bool = True
) -> tuple[Breaker, datetime, BreakerPolicy]:
    policy = draw(policies)
    b, now = Breaker("t1"), T0
    for step in draw(st.lists(steps, max_size=15)):
        now += timedelta(seconds=step[1])
        out = apply_step(b, step, now, policy, overrides=overrides)
        check_outcome(b, out, now, policy)
        b = out.breaker
    return b, now, policy


# Fire-heavy and mostly short gaps, so that fleets actually press against the limit.
fleet_steps = st.tuples(
    st.sampled_from(["fire"] * 5 + ["resolve", "outcomes", "tick", "force", "release"]),
    st.sampled_from([0.0, 1.0, 5.0, 30.0, 61.0, 200.0]),
    st.integers(0, 6),
    st.integers(0, 6),
    st.booleans(),
)


@settings(FAST, max_examples=150)
@given(
    n=st.integers(1, 12),
    pct=st.sampled_from([0.0, 10.0, 20.0, 33.3, 50.0, 100.0]),
    policy=policies,
    script=st.lists(st.tuples(st.integers(0, 11), fleet_steps), max_size=40),
    overrides=st.booleans(),
)
def test_property_guard_never_auto_isolates_past_the_limit(
    n: int,
    pct: float,
    policy: BreakerPolicy,
    script: list[tuple[int, tuple[str, float, int, int, bool]]],
    overrides: bool,
) -> None:
    limit = isolation_limit(n, pct)
    fleet = {f"t{i}": Breaker(f"t{i}") for i in range(n)}
    now = T0
    for index, step in script:
        tenant = f"t{index % n}"
        now += timedelta(seconds=step[1])
        others = sum(
            counts_as_isolated(effective(b, now=now, policy=policy).state)
            for t, b in fleet.items()
            if t != tenant
        )
        before = fleet[tenant]
        out = apply_step(
            before, step, now, policy, isolated=others, known=n, pct=pct, overrides=overrides
        )
        check_outcome(before, out, now, policy)
        fleet[tenant] = out.breaker
        for e in out.events:
            if isinstance(e, Transition) and e.from_state is S.CLOSED and e.to_state is S.OPEN:
                assert others + 1 <= limit
        if not overrides:
            isolated_now = sum(
                counts_as_isolated(effective(b, now=now, policy=policy).state)
                for b in fleet.values()
            )
            assert isolated_now <= limit


@FAST
@given(start=reachable(), later=st.floats(0, 5000), later2=st.floats(0, 5000))
def test_property_advance_is_idempotent_and_path_independent(
    start: tuple[Breaker, datetime, BreakerPolicy], later: float, later2: float
) -> None:
    b, now, policy = start
    t1 = now + timedelta(seconds=later)
    t2 = t1 + timedelta(seconds=later2)
    first = advance(b, now=t1, policy=policy)
    assert advance(first.breaker, now=t1, policy=policy) == Outcome(first.breaker)
    # Sweeping at t1 then reading at t2 tells the same story as reading at t2 directly.
    second = advance(first.breaker, now=t2, policy=policy)
    direct = advance(b, now=t2, policy=policy)
    assert second.breaker == direct.breaker
    assert first.events + second.events == direct.events
    assert effective(b, now=t2, policy=policy) == direct.breaker


@FAST
@given(start=reachable(), gap=st.floats(0, 5000))
def test_property_duplicate_resolved_changes_nothing(
    start: tuple[Breaker, datetime, BreakerPolicy], gap: float
) -> None:
    b, now, policy = start
    once = on_alert_resolved(b, now=now, policy=policy, still_firing=False)
    assert on_alert_resolved(once.breaker, now=now, policy=policy, still_firing=False) == Outcome(
        once.breaker
    )
    later = now + timedelta(seconds=gap)
    assert on_alert_resolved(once.breaker, now=later, policy=policy, still_firing=False) == advance(
        once.breaker, now=later, policy=policy
    )


@FAST
@given(start=reachable(), resolve=st.booleans())
def test_property_healthy_tenant_ends_closed(
    start: tuple[Breaker, datetime, BreakerPolicy], resolve: bool
) -> None:
    b, now, policy = start
    if b.state in (S.FORCED_OPEN, S.FORCED_CLOSED):
        b = override(b, action=OverrideAction.RELEASE, reason="p", now=now, policy=policy).breaker
    if resolve:
        b = on_alert_resolved(b, now=now, policy=policy, still_firing=False).breaker
    step = timedelta(seconds=policy.max_open_seconds + policy.probation_seconds + 1)
    for _ in range(2):
        now += step
        b = on_outcomes(
            b, success=policy.half_open_probes, failure=0, now=now, policy=policy
        ).breaker
        b = advance(b, now=now, policy=policy).breaker
    assert b.state is S.CLOSED
    assert b.streak == 0


@FAST
@given(start=reachable(overrides=False))
def test_property_resolved_tenant_closes_by_time_alone(
    start: tuple[Breaker, datetime, BreakerPolicy],
) -> None:
    b, now, policy = start
    b = on_alert_resolved(b, now=now, policy=policy, still_firing=False).breaker
    later = now + timedelta(seconds=policy.max_open_seconds + policy.probation_seconds)
    assert effective(b, now=later, policy=policy).state is S.CLOSED


@FAST
@given(
    base=st.floats(1e-3, 1e4),
    cap=st.floats(1e-3, 1e5),
    streak=st.integers(1, 3000),
)
def test_property_open_duration_monotonic_and_capped(base: float, cap: float, streak: int) -> None:
    policy = BreakerPolicy(open_seconds=base, max_open_seconds=cap)
    d = policy.open_duration(streak)
    assert d <= policy.open_duration(streak + 1)
    assert d <= timedelta(seconds=cap)
    assert d > timedelta(0) or base < 1e-6


@FAST
@given(state=st.sampled_from(BreakerState), policy=policies)
def test_property_allows_and_admit_ratio_agree(state: BreakerState, policy: BreakerPolicy) -> None:
    ratio = admit_ratio(state, policy)
    assert 0.0 <= ratio <= 1.0
    assert allows(state) == (ratio > 0)
    assert (ratio == 1.0 and state is not S.HALF_OPEN) == (not counts_as_isolated(state))


# --- retrying a suppressed trip -------------------------------------------------------------


def _suppressed_breaker() -> Breaker:
    from receiver.domain.breaker import on_alert_fired

    out = on_alert_fired(
        Breaker(tenant_id="t"),
        now=_T0,
        policy=BreakerPolicy(),
        isolated=2,
        known_tenants=10,
        max_isolated_percent=20,
    )
    assert out.suppressed
    return out.breaker


_T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_suppressed_trip_waits_for_room_then_trips():
    from receiver.domain.breaker import awaiting_isolation, retry_suppressed

    b = _suppressed_breaker()
    assert awaiting_isolation(b)
    still_full = retry_suppressed(
        b, now=_T0, policy=BreakerPolicy(), isolated=2, known_tenants=10, max_isolated_percent=20
    )
    assert still_full.breaker == b and still_full.events == ()
    room = retry_suppressed(
        b, now=_T0, policy=BreakerPolicy(), isolated=1, known_tenants=10, max_isolated_percent=20
    )
    assert room.tripped and room.breaker.state is BreakerState.OPEN
    assert room.breaker.trips == 1 and room.breaker.streak == 1
    assert "guard has room" in room.events[-1].reason


def test_retry_does_nothing_once_the_alert_resolved_or_for_other_states():
    from receiver.domain.breaker import on_alert_resolved, retry_suppressed

    policy = BreakerPolicy()
    resolved = on_alert_resolved(
        _suppressed_breaker(), now=_T0, policy=policy, still_firing=False
    ).breaker
    for b in (
        resolved,
        Breaker(tenant_id="t"),
        Breaker(tenant_id="t", state=BreakerState.FORCED_CLOSED, alert_firing=True),
    ):
        out = retry_suppressed(
            b, now=_T0, policy=policy, isolated=0, known_tenants=10, max_isolated_percent=20
        )
        assert out.events == () and out.breaker == b


def test_a_breaker_closed_by_probes_while_its_alert_fires_awaits_isolation():
    from receiver.domain.breaker import awaiting_isolation, on_outcomes

    policy = BreakerPolicy(half_open_probes=2)
    half_open = Breaker(
        tenant_id="t",
        state=BreakerState.HALF_OPEN,
        opened_at=_T0,
        half_open_at=_T0,
        trips=1,
        streak=1,
        alert_firing=True,
        changed_at=_T0,
    )
    closed = on_outcomes(half_open, success=2, failure=0, now=_T0, policy=policy).breaker
    assert closed.state is BreakerState.CLOSED
    assert awaiting_isolation(closed)
