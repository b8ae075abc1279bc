"""The pure what-if replay (receiver/domain/replay.py): hand-worked stories, then
properties of how settings move the figures."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.domain.alerts import AlertRole
from receiver.domain.breaker import BreakerPolicy, OverrideAction, isolation_limit
from receiver.domain.replay import (
    AlertChange,
    Delivery,
    History,
    Input,
    OperatorOverride,
    ProbeReport,
    Rules,
    TenantConfigured,
    replay,
)
from receiver.domain.tiers import Tier

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def change(tenant: str, n: int, *, firing: bool, role: AlertRole = AlertRole.ISOLATING):
    return AlertChange(
        fingerprint=f"fp-{tenant}", starts_at=at(n), tenant_id=tenant, role=role, firing=firing
    )


def delivery(seq: int, seconds: float, *changes: AlertChange, tenants: set[str] | None = None):
    named = {c.tenant_id for c in changes if c.tenant_id} | (tenants or set())
    return Delivery(at=at(seconds), seq=seq, changes=changes, tenants=frozenset(named))


RULES = Rules(
    policy=BreakerPolicy(open_seconds=60, probation_seconds=60, half_open_probes=4),
    max_isolated_percent=20,
)
FIVE = frozenset(f"t{i}" for i in range(5))


def run(inputs: list[Input], *, rules: Rules = RULES, until: float = 1000, **kw):
    history = History(inputs=tuple(inputs), known=FIVE)
    return replay(history, rules=rules, since=kw.pop("since", T0), until=at(until), **kw)


def test_one_trip_open_half_open_probation_closed() -> None:
    f = run(
        [
            delivery(1, 0, change("t0", 0, firing=True)),
            delivery(2, 30, change("t0", 0, firing=False)),
        ]
    )
    assert f.trips == 1 and f.suppressed == 0
    # open 0..60, half-open 60.., resolved at 30: probation from 60, closed at 120.
    assert f.isolated_seconds == 120
    assert f.per_tenant["t0"].spans == [(at(0), at(120))]
    assert f.incidents == 1 and f.by_priority == {"P0": 0, "P1": 0, "P2": 1}


def test_the_guard_suppresses_and_the_sweeper_retries_on_the_service_schedule() -> None:
    # 5 known, 20 %: one at a time. t1 is suppressed at 10 and retried every 5 s. t0
    # closes at 120; the retry due at that very sweep still counts t0 as stored
    # (half-open), so t1 trips at the next one, 125.
    f = run(
        [
            delivery(1, 0, change("t0", 0, firing=True)),
            delivery(2, 10, change("t1", 10, firing=True)),
            delivery(3, 30, change("t0", 0, firing=False)),
        ]
    )
    assert f.suppressed == 1 and f.trips == 2
    assert f.per_tenant["t1"].spans[0][0] == at(125)
    # One incident: t1 joined t0's (suppressed: P0).
    assert f.incidents == 1 and f.by_priority["P0"] == 1


def test_failed_probes_re_trip_with_a_longer_open_period() -> None:
    f = run(
        [
            delivery(1, 0, change("t0", 0, firing=True)),
            ProbeReport(at=at(70), seq=1, tenant_id="t0", success=1, failure=3),
        ],
        until=400,
    )
    # open 0..60, half-open, 4 probes with 75 % failures at 70: open again for 120 s
    # (half-open at 190, never closes: the alert keeps firing).
    assert f.trips == 2
    assert f.isolated_seconds == 400


def test_override_and_release_while_firing_is_a_trip() -> None:
    f = run(
        [
            OperatorOverride(
                at=at(0), seq=1, tenant_id="t0", action=OverrideAction.FORCE_OPEN, reason="x"
            ),
            delivery(1, 10, change("t0", 10, firing=True)),
            OperatorOverride(
                at=at(50), seq=2, tenant_id="t0", action=OverrideAction.RELEASE, reason="x"
            ),
        ],
        until=100,
    )
    # forced_open 0..50 (the alert waits), release into open (a transition to open).
    assert f.trips == 1 and f.isolated_seconds == 100


def test_tiers_and_platform_alerts_set_priorities() -> None:
    f = run(
        [
            TenantConfigured(at=at(0), seq=1, tenant_id="t0", tier=Tier.GOLD),
            delivery(1, 5, change("t0", 5, firing=True)),
            delivery(2, 2000, change("t1", 2000, firing=True)),
            delivery(3, 2010, change("plat", 2010, firing=True, role=AlertRole.PLATFORM)),
        ],
        until=3000,
    )
    assert f.incidents == 2
    assert f.by_priority == {"P0": 1, "P1": 1, "P2": 0}


def test_a_window_counts_only_its_part_and_the_state_it_starts_in() -> None:
    inputs = [
        delivery(1, 0, change("t0", 0, firing=True)),
        delivery(2, 30, change("t0", 0, firing=False)),
    ]
    f = run(inputs, since=at(100), until=1000)
    assert f.trips == 0 and f.incidents == 0
    assert f.isolated_seconds == 20  # 100..120


def test_proposed_settings_take_effect_at_since() -> None:
    inputs = [
        delivery(1, 0, change("t0", 0, firing=True)),
        delivery(2, 30, change("t0", 0, firing=False)),
    ]
    longer = replace(RULES, policy=replace(RULES.policy, open_seconds=300))
    # The warm-up (t < 10) used 60 s, the window 300 s: half-open at 300, closed at 360.
    f = run(inputs, rules=longer, warmup=RULES, since=at(10))
    assert f.isolated_seconds == 350


# --- properties --------------------------------------------------------------------------

TENANTS = [f"t{i}" for i in range(6)]


@st.composite
def histories(draw: st.DrawFn, *, overrides: bool = True) -> History:
    """Random recorded inputs: fires and resolves of instances, outcomes, overrides, tiers."""
    first = draw(st.sampled_from(TENANTS))
    inputs: list[Input] = [delivery(-1, 0, change(first, -1, firing=True))]
    clock = 0.0
    instance: dict[str, int] = {first: -1}
    for seq in range(draw(st.integers(1, 40))):
        clock += draw(st.floats(0.5, 200))
        kind = draw(
            st.sampled_from(["fire", "fire", "resolve", "resolve", "probe", "override", "tier"])
        )
        tenant = draw(st.sampled_from(TENANTS))
        if kind == "fire":
            instance[tenant] = seq
            inputs.append(delivery(seq, clock, change(tenant, seq, firing=True)))
        elif kind == "resolve" and tenant in instance:
            inputs.append(delivery(seq, clock, change(tenant, instance.pop(tenant), firing=False)))
        elif kind == "probe":
            s, f = draw(st.integers(0, 6)), draw(st.integers(0, 6))
            if s + f:
                inputs.append(
                    ProbeReport(at=at(clock), seq=seq, tenant_id=tenant, success=s, failure=f)
                )
        elif kind == "override" and overrides:
            action = draw(st.sampled_from(list(OverrideAction)))
            inputs.append(
                OperatorOverride(at=at(clock), seq=seq, tenant_id=tenant, action=action, reason="r")
            )
        elif kind == "tier":
            tier = draw(st.sampled_from(list(Tier)))
            inputs.append(TenantConfigured(at=at(clock), seq=seq, tenant_id=tenant, tier=tier))
    return History(inputs=tuple(inputs), known=frozenset(TENANTS[:4]))


def _figures(history: History, rules: Rules):
    end = max(i.at for i in history.inputs) + timedelta(seconds=600)
    return replay(history, rules=rules, since=T0, until=end)


PROPERTY = settings(
    max_examples=int(__import__("os").environ.get("REPLAY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(histories(), st.integers(0, 100))
def test_the_window_bounds_every_figure(history: History, percent: int) -> None:
    f = _figures(history, replace(RULES, max_isolated_percent=percent))
    end = max(i.at for i in history.inputs) + timedelta(seconds=600)
    for t, tf in f.per_tenant.items():
        assert tf.isolated_seconds <= (end - T0).total_seconds() + 1e-6, t
        assert all(T0 <= s < e <= end for s, e in tf.spans)
    assert f.trips == sum(tf.trips for tf in f.per_tenant.values())
    assert sum(f.by_priority.values()) == f.incidents


@PROPERTY
@given(histories())
def test_a_run_with_its_own_settings_as_warm_up_is_the_baseline(history: History) -> None:
    since = T0 + timedelta(seconds=300)
    end = max(i.at for i in history.inputs) + timedelta(seconds=600)
    a = replay(history, rules=RULES, since=since, until=end)
    b = replay(history, rules=RULES, warmup=RULES, since=since, until=end)
    assert a.as_json() == b.as_json()


def _most_isolated_at_once(f) -> int:
    edges = sorted(
        (t, d) for tf in f.per_tenant.values() for s, e in tf.spans for t, d in ((s, 1), (e, -1))
    )
    most = current = 0
    for _, step in edges:  # an end sorts before a start at the same moment
        current += step
        most = max(most, current)
    return most


@PROPERTY
@given(histories(overrides=False), st.integers(0, 100))
def test_the_guard_holds_in_every_run(history: History, percent: int) -> None:
    """Without operators (who may isolate anyone), never more isolated at once than the
    guard's limit for the tenants known by the end."""
    f = _figures(history, replace(RULES, max_isolated_percent=percent))
    known = set(history.known) | {t for i in history.inputs for t in getattr(i, "tenants", ())}
    known |= {i.tenant_id for i in history.inputs if isinstance(i, TenantConfigured)}
    assert _most_isolated_at_once(f) <= isolation_limit(len(known), percent)


@st.composite
def single_failures(draw: st.DrawFn) -> History:
    """Each tenant fails at most once (one instance, perhaps resolved), no probes and no
    operators, every tenant known from the start: the histories in which the domain's
    monotonicity per decision carries over to the whole run."""
    inputs: list[Input] = []
    for seq, tenant in enumerate(TENANTS):
        if draw(st.booleans()) or seq == 0:
            fired = draw(st.floats(0, 600))
            inputs.append(delivery(2 * seq, fired, change(tenant, seq, firing=True)))
            if draw(st.booleans()):
                gone = fired + draw(st.floats(0.5, 600))
                inputs.append(delivery(2 * seq + 1, gone, change(tenant, seq, firing=False)))
    return History(inputs=tuple(inputs), known=frozenset(TENANTS))


@PROPERTY
@given(single_failures(), st.integers(0, 100), st.integers(0, 100))
def test_a_lower_guard_never_gives_more_trips(history: History, a: int, b: int) -> None:
    low, high = sorted((a, b))
    f_low = _figures(history, replace(RULES, max_isolated_percent=low))
    f_high = _figures(history, replace(RULES, max_isolated_percent=high))
    assert f_low.trips <= f_high.trips
    assert f_low.suppressed >= f_high.suppressed


@PROPERTY
@given(single_failures(), st.floats(1, 600), st.floats(1, 600), st.floats(0, 300))
def test_a_longer_open_period_never_gives_fewer_isolated_seconds(
    history: History, a: float, b: float, probation: float
) -> None:
    """With the guard out of the way (100 %): with it, a suppressed tenant's retries every
    5 s can make a longer period cost fewer seconds in all (see the example below)."""
    short, long = sorted((a, b))
    runs = [
        replace(
            RULES,
            max_isolated_percent=100,
            policy=replace(RULES.policy, open_seconds=s, probation_seconds=probation),
        )
        for s in (short, long)
    ]
    f_short, f_long = (_figures(history, r) for r in runs)
    assert f_short.isolated_seconds <= f_long.isolated_seconds + 1e-6
    for t, tf in f_short.per_tenant.items():
        assert tf.isolated_seconds <= f_long.tenant(t).isolated_seconds + 1e-6


@PROPERTY
@given(single_failures(), st.floats(0, 300), st.floats(0, 300))
def test_a_longer_probation_never_gives_fewer_isolated_seconds(
    history: History, a: float, b: float
) -> None:
    short, long = sorted((a, b))
    runs = [
        replace(RULES, max_isolated_percent=100, policy=replace(RULES.policy, probation_seconds=p))
        for p in (short, long)
    ]
    f_short, f_long = (_figures(history, r) for r in runs)
    assert f_short.isolated_seconds <= f_long.isolated_seconds + 1e-6


# What the properties above exclude, found by hypothesis and kept as facts of the domain.


def test_with_the_guard_a_longer_open_period_can_cost_fewer_seconds() -> None:
    # 4 known, 20 %: one at a time. t1 trips at 0 and resolves at 1; t0 is suppressed at
    # 2 and retried at 7, 12, ... 62. Open 1 s: t1 closes at 61, t0 trips at 62. Open
    # 2 s: t1 closes at 62, in the very sweep that retries t0, which still counts t1 as
    # stored: t0 waits until 67.
    inputs = [
        delivery(1, 0, change("t1", 0, firing=True)),
        delivery(2, 1, change("t1", 0, firing=False)),
        delivery(3, 2, change("t0", 2, firing=True)),
    ]
    history = History(inputs=tuple(inputs), known=frozenset(TENANTS[:4]))
    seconds = [
        replay(
            history,
            rules=replace(RULES, policy=replace(RULES.policy, open_seconds=o)),
            since=T0,
            until=at(600),
        ).isolated_seconds
        for o in (1, 2)
    ]
    assert seconds == [61 + 538, 62 + 533]


def test_a_lower_guard_can_trip_more_as_tenants_become_known() -> None:
    # 4 known. t0 trips. t1: 40 % allows 1 (suppressed), 50 % allows 2 (trips). t4 makes
    # itself known (5): 40 % now allows 2, so t4 trips; 50 % allows 2, held by t0 and t1.
    inputs = [
        delivery(1, 0, change("t0", 0, firing=True)),
        delivery(2, 1, change("t1", 1, firing=True)),
        delivery(3, 2, change("t4", 2, firing=True)),
    ]
    history = History(inputs=tuple(inputs), known=frozenset(TENANTS[:4]))
    f = {
        p: replay(history, rules=replace(RULES, max_isolated_percent=p), since=T0, until=at(600))
        for p in (40, 50)
    }
    assert {p: set(x.per_tenant[t].trips > 0 for t in ("t1", "t4")) for p, x in f.items()} == {
        40: {True, False},
        50: {True, False},
    }
    assert f[40].suppressed == 1 and f[50].suppressed == 1
