"""Per-tenant circuit breaker: states, transitions and the mass-isolation guard.

Pure: every function takes the current breaker and the time, and returns the new breaker
together with the events (audit rows) the change caused. Nothing here reads the clock or
touches the database, so one replica, the sweeper and the tests all compute the same
answer from the same stored row.

Every public transition first calls `advance`, so a change that time already made (the
open period ran out, probation passed) happens, and is audited, before the event is
applied to the breaker as it really is at `now`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any

__all__ = [
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "Event",
    "NotOverridden",
    "Outcome",
    "OverrideAction",
    "Suppressed",
    "Transition",
    "admit_ratio",
    "advance",
    "allows",
    "counts_as_isolated",
    "effective",
    "isolation_limit",
    "next_change_at",
    "on_alert_fired",
    "on_alert_resolved",
    "on_outcomes",
    "override",
]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


class OverrideAction(StrEnum):
    FORCE_OPEN = "force_open"
    FORCE_CLOSE = "force_close"
    RELEASE = "release"


class NotOverridden(ValueError):
    """`release` was asked of a breaker that no operator has forced."""


_FORCED = frozenset({BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED})
_ISOLATED = frozenset({BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.FORCED_OPEN})
_ALLOWING = frozenset({BreakerState.CLOSED, BreakerState.FORCED_CLOSED, BreakerState.HALF_OPEN})

# Past 2**1000 any real base period is far beyond any real cap; bounding the exponent keeps
# the float arithmetic finite (or +inf, which the cap absorbs) for absurd streaks.
_MAX_EXPONENT = 1000


def _require_aware(name: str, value: datetime | None) -> None:
    # Naive datetimes would only fail later, on the first comparison with an aware one, or
    # worse, be compared with each other in an unknown zone: refuse them at the door.
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True)
class BreakerPolicy:
    open_seconds: float = 60.0
    max_open_seconds: float = 900.0
    half_open_probes: int = 10
    probe_failure_ratio: float = 0.5
    probation_seconds: float = 60.0
    half_open_admit_ratio: float = 0.1

    def __post_init__(self) -> None:
        # Written as `not (x > y)` so that NaN is rejected too.
        if not self.open_seconds > 0:
            raise ValueError(f"open_seconds must be > 0, got {self.open_seconds}")
        if not self.max_open_seconds > 0:
            raise ValueError(f"max_open_seconds must be > 0, got {self.max_open_seconds}")
        if self.half_open_probes < 1:
            raise ValueError(f"half_open_probes must be >= 1, got {self.half_open_probes}")
        if not 0 < self.probe_failure_ratio <= 1:
            raise ValueError(
                f"probe_failure_ratio must be in (0, 1], got {self.probe_failure_ratio}"
            )
        if not self.probation_seconds >= 0 or math.isinf(self.probation_seconds):
            raise ValueError(f"probation_seconds must be >= 0, got {self.probation_seconds}")
        # Zero would make half-open say "allow" while letting nothing through: no probe
        # could ever arrive, and `allows` and `admit_ratio` would disagree.
        if not 0 < self.half_open_admit_ratio <= 1:
            raise ValueError(
                f"half_open_admit_ratio must be in (0, 1], got {self.half_open_admit_ratio}"
            )

    def open_duration(self, streak: int) -> timedelta:
        """How long the `streak`-th trip in a row stays open: doubling, capped."""
        if streak < 1:
            raise ValueError(f"streak must be >= 1, got {streak}")
        seconds = self.open_seconds * 2.0 ** min(streak - 1, _MAX_EXPONENT)
        # The cap also wins when it is configured below the base period.
        return timedelta(seconds=min(seconds, self.max_open_seconds))

    @property
    def probation(self) -> timedelta:
        return timedelta(seconds=self.probation_seconds)


@dataclass(frozen=True)
class Breaker:
    tenant_id: str
    state: BreakerState = BreakerState.CLOSED
    opened_at: datetime | None = None
    trips: int = 0
    streak: int = 0
    half_open_at: datetime | None = None
    probe_successes: int = 0
    probe_failures: int = 0
    alert_firing: bool = False
    resolved_at: datetime | None = None
    changed_at: datetime | None = None

    def __post_init__(self) -> None:
        # A row that breaks these could never move by time again (no moment to count
        # from), so it is better to fail loudly where it was built than to stick.
        # Written out rather than looped over names: a 10,000-trip delivery builds tens of
        # thousands of these.
        _require_aware("opened_at", self.opened_at)
        _require_aware("half_open_at", self.half_open_at)
        _require_aware("resolved_at", self.resolved_at)
        _require_aware("changed_at", self.changed_at)
        if self.state is BreakerState.OPEN and self.opened_at is None:
            raise ValueError("an open breaker needs opened_at")
        if self.state is BreakerState.HALF_OPEN and self.half_open_at is None:
            raise ValueError("a half-open breaker needs half_open_at")
        if min(self.trips, self.streak, self.probe_successes, self.probe_failures) < 0:
            for name in ("trips", "streak", "probe_successes", "probe_failures"):
                if getattr(self, name) < 0:
                    raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True)
class Transition:
    """One state change; the caller writes it as an audit row `breaker.transition`."""

    tenant_id: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    at: datetime


@dataclass(frozen=True)
class Suppressed:
    """The mass-isolation guard refused a trip; audit row `breaker.suppressed`."""

    tenant_id: str
    isolated: int
    limit: int
    at: datetime


Event = Transition | Suppressed


@dataclass(frozen=True)
class Outcome:
    breaker: Breaker
    events: tuple[Event, ...] = ()

    @property
    def tripped(self) -> bool:
        """An automatic trip happened: a transition into `open` not made by an operator.

        `release` may also land in `open` (from a forced state); that is the operator's
        decision, not a trip by an alert or by probes, so it does not count here.
        """
        return any(
            isinstance(e, Transition)
            and e.to_state is BreakerState.OPEN
            and e.from_state not in _FORCED
            for e in self.events
        )

    @property
    def suppressed(self) -> bool:
        return any(isinstance(e, Suppressed) for e in self.events)


@lru_cache(maxsize=256)  # asked once per tenant of a delivery, with the same numbers
def isolation_limit(known_tenants: int, max_isolated_percent: float) -> int:
    """How many tenants may be isolated at once: max(1, floor(known * pct / 100))."""
    if known_tenants < 0:
        raise ValueError(f"known_tenants must be >= 0, got {known_tenants}")
    if not 0 <= max_isolated_percent <= 100:
        raise ValueError(f"max_isolated_percent must be in [0, 100], got {max_isolated_percent}")
    # Decimal of the shortest repr keeps the percent the operator wrote: in binary floats
    # 375 * 18.4 / 100 is 68.99999999999999, and floor would allow one tenant too few.
    exact = Decimal(known_tenants) * Decimal(repr(float(max_isolated_percent))) / 100
    return max(1, math.floor(exact))


def counts_as_isolated(state: BreakerState) -> bool:
    return state in _ISOLATED


def allows(state: BreakerState) -> bool:
    return state in _ALLOWING


def admit_ratio(state: BreakerState, policy: BreakerPolicy) -> float:
    if state is BreakerState.HALF_OPEN:
        return policy.half_open_admit_ratio
    return 1.0 if allows(state) else 0.0


def _open_until(b: Breaker, policy: BreakerPolicy) -> datetime:
    assert b.opened_at is not None  # guaranteed for OPEN by Breaker.__post_init__
    # A row from before streaks were kept (or hand-edited) may say 0: treat as the first.
    return b.opened_at + policy.open_duration(max(1, b.streak))


def _probation_ends(b: Breaker, policy: BreakerPolicy) -> datetime | None:
    if b.alert_firing or b.resolved_at is None:
        return None
    assert b.half_open_at is not None  # guaranteed for HALF_OPEN by Breaker.__post_init__
    # Counted from whichever came last: an alert that resolved while the breaker was still
    # open must not let it close the instant it turns half-open, with no probe seen.
    return max(b.resolved_at, b.half_open_at) + policy.probation


def next_change_at(b: Breaker, *, policy: BreakerPolicy) -> datetime | None:
    """When `advance` would next move this breaker by time alone; None if only an event can.

    For the sweeper's index: the breaker as stored is due for `advance` at that moment.
    """
    if b.state is BreakerState.OPEN:
        return _open_until(b, policy)
    if b.state is BreakerState.HALF_OPEN:
        return _probation_ends(b, policy)
    return None


def _move(b: Breaker, to: BreakerState, reason: str, at: datetime, **fields: Any) -> Outcome:
    """b in state `to` with its field updates, described as a Transition. One `replace`
    (each one validates every field again: a 10,000-trip delivery makes 10,000 of these)."""
    if b.state is BreakerState.HALF_OPEN and to is not BreakerState.HALF_OPEN:
        # Probe counts and half_open_at describe one half-open period only.
        fields.update(half_open_at=None, probe_successes=0, probe_failures=0)
    new = replace(b, state=to, changed_at=at, **fields)
    return Outcome(new, (Transition(b.tenant_id, b.state, to, reason, at),))


def _trip(b: Breaker, reason: str, at: datetime, *, streak: int, **fields: Any) -> Outcome:
    return _move(
        b, BreakerState.OPEN, reason, at, opened_at=at, trips=b.trips + 1, streak=streak, **fields
    )


def _close(b: Breaker, reason: str, at: datetime) -> Outcome:
    return _move(b, BreakerState.CLOSED, reason, at, streak=0)


def _then(first: Outcome, second: Outcome) -> Outcome:
    return Outcome(second.breaker, first.events + second.events)


def advance(b: Breaker, *, now: datetime, policy: BreakerPolicy) -> Outcome:
    """Apply the changes that time alone makes, each stamped with the moment it fell due."""
    _require_aware("now", now)
    out = Outcome(b)
    if b.state is BreakerState.OPEN:
        until = _open_until(b, policy)
        if now < until:
            return out
        # half_open_at is when the period ended, not `now`: a late sweep must not stretch
        # the probation, and every replica must compute the same row.
        out = _move(
            b,
            BreakerState.HALF_OPEN,
            "open period elapsed",
            until,
            half_open_at=until,
            probe_successes=0,
            probe_failures=0,
        )
    if out.breaker.state is BreakerState.HALF_OPEN:
        ends = _probation_ends(out.breaker, policy)
        if ends is not None and now >= ends:
            out = _then(out, _close(out.breaker, "alert resolved and probation passed", ends))
    return out


def effective(b: Breaker, *, now: datetime, policy: BreakerPolicy) -> Breaker:
    """The breaker as it is at `now`, for readers that answer without persisting."""
    return advance(b, now=now, policy=policy).breaker


def on_alert_fired(
    b: Breaker,
    *,
    now: datetime,
    policy: BreakerPolicy,
    isolated: int,
    known_tenants: int,
    max_isolated_percent: float,
) -> Outcome:
    """A new firing instance of an isolating alert for this tenant.

    `isolated` counts the OTHER tenants isolated right now; the caller counts them.
    """
    if isolated < 0:
        raise ValueError(f"isolated must be >= 0, got {isolated}")
    limit = isolation_limit(known_tenants, max_isolated_percent)
    timed = advance(b, now=now, policy=policy)
    firing: dict[str, Any] = {"alert_firing": True, "resolved_at": None}
    if timed.breaker.state is BreakerState.CLOSED and isolated + 1 <= limit:
        # The common case of a storm, with one `replace` instead of two.
        streak = timed.breaker.streak + 1
        return _then(
            timed, _trip(timed.breaker, "isolating alert fired", now, streak=streak, **firing)
        )
    cur = replace(timed.breaker, **firing)
    if cur.state is BreakerState.CLOSED:
        # Past the limit the failure is almost surely shared: isolating one more
        # tenant would cause the outage the breaker exists to prevent.
        return _then(timed, Outcome(cur, (Suppressed(cur.tenant_id, isolated, limit, now),)))
    if cur.state is BreakerState.HALF_OPEN:
        # Already counted as isolated, so no guard; the longer next period is what stops
        # a still-broken tenant from thrashing between open and half-open.
        return _then(
            timed,
            _trip(cur, "isolating alert fired while half-open", now, streak=cur.streak + 1),
        )
    # OPEN stays open (this is not a new trip); forced states wait for the operator.
    return _then(timed, Outcome(cur))


def awaiting_isolation(b: Breaker) -> bool:
    """Closed while its isolating alert fires: a trip the guard suppressed, or a breaker
    that healthy probes closed while the alert still says the tenant fails.

    Alertmanager will not send a *new* firing instance while the alert keeps firing, so
    the receiver must retry the trip itself once the guard has room, or a tenant that is
    still broken (after a shared failure eases, or at full traffic after passing a
    trickle of probes) would never be isolated again."""
    return b.state is BreakerState.CLOSED and b.alert_firing


def retry_suppressed(
    b: Breaker,
    *,
    now: datetime,
    policy: BreakerPolicy,
    isolated: int,
    known_tenants: int,
    max_isolated_percent: float,
) -> Outcome:
    """Try again a trip the guard suppressed; no event while there is still no room (the
    first suppression was audited, repeating it every round would only add noise)."""
    if isolated < 0:
        raise ValueError(f"isolated must be >= 0, got {isolated}")
    timed = advance(b, now=now, policy=policy)
    cur = timed.breaker
    if not awaiting_isolation(cur):
        return timed
    if isolated + 1 > isolation_limit(known_tenants, max_isolated_percent):
        return timed
    return _then(
        timed,
        _trip(
            cur,
            "isolating alert still firing; the mass-isolation guard has room to isolate it",
            now,
            streak=cur.streak + 1,
        ),
    )


def on_alert_resolved(
    b: Breaker, *, now: datetime, policy: BreakerPolicy, still_firing: bool
) -> Outcome:
    """An isolating alert instance of this tenant resolved.

    `still_firing`: another isolating instance for the tenant is still firing.
    """
    timed = advance(b, now=now, policy=policy)
    cur = timed.breaker
    if still_firing:
        return _then(timed, Outcome(replace(cur, alert_firing=True, resolved_at=None)))
    # A duplicate (or late) resolved keeps the first resolve time: taking `now` would
    # postpone the probation every time Alertmanager resends.
    first = cur.resolved_at if not cur.alert_firing else None
    resolved_at = first if first is not None else now
    cur = replace(cur, alert_firing=False, resolved_at=resolved_at)
    # Only matters with probation_seconds == 0 (or a resolve older than the half-open
    # start): the probation may already be over at this instant.
    return _then(timed, advance(cur, now=now, policy=policy))


def on_outcomes(
    b: Breaker, *, success: int, failure: int, now: datetime, policy: BreakerPolicy
) -> Outcome:
    """Probe results reported by a gateway; they only count while half-open."""
    if success < 0 or failure < 0:
        raise ValueError(f"outcome counts must be >= 0, got success={success} failure={failure}")
    timed = advance(b, now=now, policy=policy)
    cur = timed.breaker
    if cur.state is not BreakerState.HALF_OPEN or success + failure == 0:
        # Elsewhere the traffic is either everything (closed) or nothing (open), so these
        # numbers say nothing about recovery; Prometheus judges closed tenants.
        return timed
    cur = replace(
        cur,
        probe_successes=cur.probe_successes + success,
        probe_failures=cur.probe_failures + failure,
    )
    total = cur.probe_successes + cur.probe_failures
    if total < policy.half_open_probes:
        return _then(timed, Outcome(cur))
    ratio = cur.probe_failures / total
    detail = (
        f"probe failure ratio {ratio:.2f} ({cur.probe_failures}/{total})"
        f" {'>=' if ratio >= policy.probe_failure_ratio else '<'}"
        f" {policy.probe_failure_ratio:.2f}"
    )
    if ratio >= policy.probe_failure_ratio:
        return _then(timed, _trip(cur, detail, now, streak=cur.streak + 1))
    return _then(timed, _close(cur, detail, now))


def override(
    b: Breaker, *, action: OverrideAction, reason: str, now: datetime, policy: BreakerPolicy
) -> Outcome:
    """An operator's force_open, force_close or release. The guard does not apply."""
    if not reason.strip():
        raise ValueError("an override needs a reason")
    timed = advance(b, now=now, policy=policy)
    cur = timed.breaker
    text = f"operator {action.value}: {reason}"
    if action is OverrideAction.RELEASE:
        if cur.state not in _FORCED:
            raise NotOverridden(f"breaker of {cur.tenant_id} is {cur.state.value}, not forced")
        if cur.alert_firing:
            # A fresh streak: the time spent forced says nothing about how long this
            # tenant has been failing on its own.
            return _then(timed, _trip(cur, text, now, streak=1))
        return _then(timed, _close(cur, text, now))
    target = (
        BreakerState.FORCED_OPEN
        if action is OverrideAction.FORCE_OPEN
        else BreakerState.FORCED_CLOSED
    )
    if cur.state is target:
        return timed
    return _then(timed, _move(cur, target, text, now))


# --- what one unit of work changed ------------------------------------------------


@dataclass
class BreakerChange:
    before: Breaker
    breaker: Breaker
    events: tuple[Event, ...]
    version: int = 0  # set when saved


@dataclass
class BreakerChanges:
    changed: list[BreakerChange] = field(default_factory=list)

    @property
    def transition_count(self) -> int:
        return sum(isinstance(e, Transition) for c in self.changed for e in c.events)

    def events(self) -> Iterable[Event]:
        for change in self.changed:
            yield from change.events
