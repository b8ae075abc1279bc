"""What-if replay: recorded inputs through the breaker and incident rules, on a simulated
clock (DESIGN.md "What-if replay").

Pure: a `History` (the inputs as the receiver saw them, each at the moment it decided on
it) and `Rules` (the settings a run uses) go in, `Figures` come out; no clock is read and
nothing is stored.

The run mirrors the service layer step by step, on the rows it would have stored:

- a delivery (receiver/service/ingest.py, service/breakers.py apply_alert_transitions):
  its tenants become known, its alert instances are written, then each isolating tenant
  is tripped, suppressed or resolved against the guard's counts of the stored rows, then
  incidents follow (service/incidents/flow.py, here replay_incidents.py);
- probe outcomes and operator overrides: one breaker, then incidents;
- the sweeper: a breaker is looked at again at its `next_check_at` (when time will move it,
  or every `suppressed_retry` while a trip the guard suppressed waits for room), exactly
  then. The live sweeper wakes every `sweep_interval_seconds`, so it is that much later
  (a second by default): the replay is the sweeper with no lag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from receiver.domain import breaker as domain
from receiver.domain.alerts import AlertRole
from receiver.domain.breaker import Breaker, BreakerChange, BreakerPolicy, OverrideAction
from receiver.domain.replay_figures import Figures, Tally
from receiver.domain.replay_incidents import AlertKey, IncidentBook
from receiver.domain.tiers import Tier

# The service's retry period of a suppressed trip (service/breakers.py SUPPRESSED_RETRY).
SUPPRESSED_RETRY = timedelta(seconds=5)

Progress = Callable[[int, int], None]


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertChange:
    """One alert instance that changed in a delivery: fired, or resolved."""

    fingerprint: str
    starts_at: datetime
    tenant_id: str | None
    role: AlertRole
    firing: bool

    @property
    def key(self) -> AlertKey:
        return (self.fingerprint, self.starts_at)


@dataclass(frozen=True)
class Delivery:
    """One transaction of alert changes: a webhook delivery (or a reconciliation)."""

    at: datetime
    seq: int
    changes: tuple[AlertChange, ...] = ()
    # Every tenant the delivery named, copies and stale instances included: they become
    # known to the mass-isolation guard.
    tenants: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProbeReport:
    at: datetime
    seq: int
    tenant_id: str
    success: int
    failure: int


@dataclass(frozen=True)
class OperatorOverride:
    at: datetime
    seq: int
    tenant_id: str
    action: OverrideAction
    reason: str


@dataclass(frozen=True)
class TenantConfigured:
    at: datetime
    seq: int
    tenant_id: str
    tier: Tier | None


Input = Delivery | ProbeReport | OperatorOverride | TenantConfigured
_RANK = {TenantConfigured: 0, Delivery: 1, OperatorOverride: 2, ProbeReport: 3}


@dataclass(frozen=True)
class History:
    inputs: tuple[Input, ...] = ()
    known: frozenset[str] = frozenset()  # tenants known before the first input
    tiers: Mapping[str, Tier | None] = field(default_factory=dict)  # and their tiers

    def ordered(self) -> list[Input]:
        return sorted(self.inputs, key=lambda i: (i.at, _RANK[type(i)], i.seq))

    def decisions_between(self, since: datetime, until: datetime) -> int:
        """Inputs in [since, until] that can change a breaker or an incident."""
        return sum(
            since <= i.at <= until for i in self.inputs if not isinstance(i, TenantConfigured)
        )


@dataclass(frozen=True)
class Rules:
    """The settings a run decides with."""

    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    max_isolated_percent: float = 20.0
    correlation_window: timedelta = timedelta(minutes=10)
    suppressed_retry: timedelta = SUPPRESSED_RETRY

    def __post_init__(self) -> None:
        domain.isolation_limit(0, self.max_isolated_percent)  # validates the percent
        if self.suppressed_retry <= timedelta(0):
            raise ValueError("suppressed_retry must be > 0")


def replay(
    history: History,
    *,
    rules: Rules,
    since: datetime,
    until: datetime,
    warmup: Rules | None = None,
    progress: Progress | None = None,
) -> Figures:
    """One run over every input up to `until`, counting what falls in [since, until].

    Inputs before `since` are replayed with `warmup` (default: `rules`), so a run with
    other settings starts the window from the state the warm-up reached, as if the
    settings had been changed at `since`."""
    run = _Run(history, warmup or rules, since, until)
    inputs = [i for i in history.ordered() if i.at <= until]
    switched = warmup is None or warmup == rules
    for n, item in enumerate(inputs, start=1):
        if not switched and item.at >= since:
            run.sweep_until(since, before=True)
            run.switch(rules, at=since)
            switched = True
        run.sweep_until(item.at)
        run.apply(item)
        if progress is not None:
            progress(n, len(inputs))
    if not switched:
        run.sweep_until(since, before=True)
        run.switch(rules, at=since)
    run.sweep_until(until)
    return run.tally.finish(run.incidents.outcomes())


# --- one run -------------------------------------------------------------------------------


class _Run:
    """The rows the service would have stored, moved by the inputs and the sweeper."""

    def __init__(self, history: History, rules: Rules, since: datetime, until: datetime) -> None:
        self.rules = rules
        self.breakers: dict[str, Breaker] = {}
        self.next_check: dict[str, datetime] = {}
        self.known: set[str] = set(history.known)
        self.tiers: dict[str, Tier | None] = dict(history.tiers)
        self.isolating: dict[str, set[AlertKey]] = {}  # tenant -> its firing instances
        self.platform: dict[AlertKey, str | None] = {}  # firing platform alert -> tenant
        self.incidents = IncidentBook(rules.correlation_window)
        self.tally = Tally(since, until)

    # -- World (what the incident rules read) ------------------------------------------

    def breaker(self, tenant_id: str) -> Breaker:
        return self.breakers.get(tenant_id) or Breaker(tenant_id)

    def tier(self, tenant_id: str) -> Tier | None:
        return self.tiers.get(tenant_id)

    def platform_firing(self, key: AlertKey) -> bool:
        return key in self.platform

    def firing_platform_of(self, tenant_id: str) -> list[AlertKey]:
        return sorted(k for k, t in self.platform.items() if t == tenant_id)

    # -- shared steps --------------------------------------------------------------------

    def _isolated(self, exclude: Sequence[str] = ()) -> int:
        return sum(
            domain.counts_as_isolated(b.state) for t, b in self.breakers.items() if t not in exclude
        )

    def _next_check(self, b: Breaker, now: datetime) -> datetime | None:
        """service/breakers.py next_check_at."""
        due = domain.next_change_at(b, policy=self.rules.policy)
        if due is None and domain.awaiting_isolation(b):
            return now + self.rules.suppressed_retry
        return due

    def _save(self, changes: Sequence[BreakerChange], now: datetime) -> None:
        for change in changes:
            b = change.breaker
            self.breakers[b.tenant_id] = b
            due = self._next_check(b, now)
            if due is None:
                self.next_check.pop(b.tenant_id, None)
            else:
                self.next_check[b.tenant_id] = due
            self.tally.add(change.events)

    def switch(self, rules: Rules, *, at: datetime) -> None:
        """New settings from `at` on: the stored rows stay, the next checks follow the new
        policy (one that fell due before `at` is swept at `at`)."""
        self.rules = rules
        self.incidents.window = rules.correlation_window
        for tenant, b in self.breakers.items():
            if tenant in self.next_check and not domain.awaiting_isolation(b):
                due = domain.next_change_at(b, policy=rules.policy)
                if due is None:
                    del self.next_check[tenant]
                else:
                    self.next_check[tenant] = max(due, at)

    # -- the sweeper -----------------------------------------------------------------------

    def sweep_until(self, t: datetime, *, before: bool = False) -> None:
        """Every sweep due at `t` or earlier (`before`: earlier only)."""
        while self.next_check:
            due = min(self.next_check.values())
            if due > t or (before and due == t):
                return
            self._sweep(due)

    def _sweep(self, now: datetime) -> None:
        """service/breakers.py sweep, at `now`."""
        due = sorted((d, tenant) for tenant, d in self.next_check.items() if d <= now)
        waiting = [t for _, t in due if domain.awaiting_isolation(self.breakers[t])]
        changes: list[BreakerChange] = []
        for _, tenant in due:
            before = self.breakers[tenant]
            if not domain.awaiting_isolation(before):
                out = domain.advance(before, now=now, policy=self.rules.policy)
                changes.append(BreakerChange(before, out.breaker, out.events))
        still_waiting = self._retry(waiting, changes, now)
        changes = [c for c in changes if c.events or c.breaker != c.before]
        moved = {c.breaker.tenant_id for c in changes}
        for _, tenant in due:
            if tenant in still_waiting:
                self.next_check[tenant] = now + self.rules.suppressed_retry
            elif tenant not in moved:
                # Due but unmoved (cannot happen with rows the service wrote): look again
                # when the row says, never twice at one moment.
                again = self._next_check(self.breakers[tenant], now)
                if again is None or again <= now:
                    self.next_check.pop(tenant, None)
                else:
                    self.next_check[tenant] = again
        if changes:
            self._save(changes, now)
            self.incidents.transaction(self, changes=changes, now=now)

    def _retry(
        self, waiting: Sequence[str], changes: list[BreakerChange], now: datetime
    ) -> set[str]:
        """Trips the guard suppressed, tried again; the guard counts the rows as stored
        before this sweep. Returns the tenants still waiting."""
        if not waiting:
            return set()
        isolated, still = self._isolated(), set()
        for tenant in waiting:
            before = self.breakers[tenant]
            out = domain.retry_suppressed(
                before,
                now=now,
                policy=self.rules.policy,
                isolated=isolated,
                known_tenants=len(self.known),
                max_isolated_percent=self.rules.max_isolated_percent,
            )
            if out.tripped:
                isolated += 1
                changes.append(BreakerChange(before, out.breaker, out.events))
            else:
                still.add(tenant)
        return still

    # -- inputs ----------------------------------------------------------------------------

    def apply(self, item: Input) -> None:
        if isinstance(item, Delivery):
            self._deliver(item)
        elif isinstance(item, ProbeReport):
            self._one(item.tenant_id, item.at, self._outcomes(item), always=False)
        elif isinstance(item, OperatorOverride):
            # The service saves an override's row even when it changes nothing, and lets
            # incidents look at it (a forced_closed breaker counts as recovered).
            self._one(item.tenant_id, item.at, self._override(item), always=True)
        else:
            self.known.add(item.tenant_id)
            self.tiers[item.tenant_id] = item.tier

    def _outcomes(self, item: ProbeReport) -> Callable[[Breaker], domain.Outcome]:
        def step(b: Breaker) -> domain.Outcome:
            return domain.on_outcomes(
                b,
                success=item.success,
                failure=item.failure,
                now=item.at,
                policy=self.rules.policy,
            )

        return step

    def _override(self, item: OperatorOverride) -> Callable[[Breaker], domain.Outcome]:
        def step(b: Breaker) -> domain.Outcome:
            try:
                return domain.override(
                    b,
                    action=item.action,
                    reason=item.reason or "replayed override",
                    now=item.at,
                    policy=self.rules.policy,
                )
            except domain.NotOverridden:
                # Cannot happen in a run (only overrides force a breaker), but a release
                # the live service refused is no change.
                return domain.Outcome(b)

        return step

    def _one(
        self,
        tenant: str,
        now: datetime,
        step: Callable[[Breaker], domain.Outcome],
        *,
        always: bool,
    ) -> None:
        """One breaker changed outside a webhook (outcomes, an override), then incidents."""
        before = self.breaker(tenant)
        out = step(before)
        if out.breaker == before and not always:
            self.breakers.setdefault(tenant, before)
            return
        change = BreakerChange(before, out.breaker, out.events)
        self._save([change], now)
        self.incidents.transaction(self, changes=[change], now=now)

    def _write_alerts(self, changes: Sequence[AlertChange]) -> None:
        for c in changes:
            if c.role is AlertRole.ISOLATING and c.tenant_id:
                firing = self.isolating.setdefault(c.tenant_id, set())
                if c.firing:
                    firing.add(c.key)
                else:
                    firing.discard(c.key)
            elif c.role is AlertRole.PLATFORM:
                if c.firing:
                    self.platform[c.key] = c.tenant_id
                else:
                    self.platform.pop(c.key, None)

    def _deliver(self, d: Delivery) -> None:
        """service/ingest.py: tenants known, alerts written, breakers, then incidents."""
        now = d.at
        self.known |= d.tenants
        self._write_alerts(d.changes)
        isolating = [c for c in d.changes if c.role is AlertRole.ISOLATING and c.tenant_id]
        fired = {c.tenant_id for c in isolating if c.firing and c.tenant_id}
        resolved = {c.tenant_id for c in isolating if not c.firing and c.tenant_id}
        changes = self._alert_effects(sorted(fired | resolved), fired, resolved, now)
        self._save(changes, now)
        self.incidents.transaction(
            self,
            changes=changes,
            now=now,
            platform_fired=[c.key for c in d.changes if c.firing and c.role is AlertRole.PLATFORM],
            platform_resolved=[
                c.key for c in d.changes if not c.firing and c.role is AlertRole.PLATFORM
            ],
            resolved_tenants=resolved,
        )

    def _alert_effects(
        self, tenants: Sequence[str], fired: set[str], resolved: set[str], now: datetime
    ) -> list[BreakerChange]:
        """service/breakers.py apply_alert_transitions."""
        current = {t: self.breaker(t) for t in tenants}
        for t in tenants:
            self.breakers.setdefault(t, current[t])  # lock_breakers creates the row
        isolated_elsewhere = self._isolated(exclude=tenants) if fired else 0
        known = len(self.known) if fired else 0
        policy, changes = self.rules.policy, []
        for tenant in tenants:
            before = b = current[tenant]
            events: tuple[domain.Event, ...] = ()
            if tenant in fired:
                isolated = isolated_elsewhere + sum(
                    domain.counts_as_isolated(current[t].state) for t in tenants if t != tenant
                )
                out = domain.on_alert_fired(
                    b,
                    now=now,
                    policy=policy,
                    isolated=isolated,
                    known_tenants=known,
                    max_isolated_percent=self.rules.max_isolated_percent,
                )
                b, events = out.breaker, events + out.events
            if tenant in resolved:
                still = bool(self.isolating.get(tenant))
                out = domain.on_alert_resolved(b, now=now, policy=policy, still_firing=still)
                b, events = out.breaker, events + out.events
            current[tenant] = b
            if b != before or events:
                changes.append(BreakerChange(before, b, events))
        return changes
