"""What the demo tells, with timestamps: one tenant fails, recovers, and every piece's
reaction is reported the moment it is seen.

    story = run_story(endpoints, failing="tenant-1", deadline=..., emit=print)
    story.detection_seconds

`run_story` makes one tenant fail through the traffic generator, polls Prometheus, the
receiver's API, its audit log and the traffic generator (an `Observer`, through
demo.probes), reports each change as an `Event` when it happens, calls `/recover` some
seconds after the breaker opened, and returns a `Story`: the measured detection time, the
breaker's and the incident's lifecycle, and whether any other tenant was ever isolated.
`intro`, `summary` and `say` are how `make demo` prints it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from demo.probes import Endpoints, StackError, tenant_ids
from demo.processes import REPO, StackOptions

ISOLATING_ALERT = "TenantErrorRateHigh"
ISOLATED_STATES = frozenset({"open", "half_open", "forced_open"})
SHED_QUIET_SECONDS = 3.0


@dataclass(frozen=True)
class Event:
    at: float  # epoch seconds
    kind: str
    text: str
    tenant_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Story:
    failing: str
    tenants: list[str]
    started: float = field(default_factory=time.time)
    events: list[Event] = field(default_factory=list)
    errors_started: float | None = None
    alert_firing_at: float | None = None  # Prometheus lists the isolating alert as firing
    webhook_at: float | None = None  # the receiver recorded the firing alert
    opened_at: float | None = None  # the breaker's opened_at
    recovered_at: float | None = None  # /recover called
    half_open_at: float | None = None
    closed_at: float | None = None
    closed_reason: str | None = None
    incident: dict[str, Any] | None = None  # as last read
    incident_opened_priority: str | None = None
    incident_resolved_at: float | None = None
    incidents_source: str = "api"  # or "sql" when GET /v1/incidents is not there
    others_isolated: list[tuple[str, str, float]] = field(default_factory=list)
    shed: dict[str, int] = field(default_factory=dict)
    finished: bool = False

    @property
    def detection_seconds(self) -> float | None:
        if self.errors_started is None or self.opened_at is None:
            return None
        return self.opened_at - self.errors_started

    def since_errors(self, at: float) -> str:
        if self.errors_started is None:
            return ""
        return f" (+{at - self.errors_started:.1f} s after the errors started)"


def _epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


class Observer:
    """Reads everything once per `poll()` and reports what changed since the last one."""

    def __init__(self, endpoints: Endpoints, story: Story) -> None:
        self.endpoints = endpoints
        self.story = story
        self._alerts: dict[tuple[str, str], str] = {}
        self._breakers: dict[str, str] = dict.fromkeys(story.tenants, "closed")
        self._incidents: dict[str, tuple[str, str]] = {}
        self._audit_id = 0
        self._shed: dict[str, int] = {}
        self._shedding: set[str] = set()
        self._last_shed: dict[str, float] = {}

    def poll(self) -> list[Event]:
        events: list[Event] = []
        readers = (
            self._read_alerts,
            self._read_audit,
            self._read_breakers,
            self._read_incidents,
            self._read_traffic,
        )
        for read in readers:
            try:
                events += read()
            except (OSError, psycopg.Error) as exc:  # one piece away must not end the story
                events.append(Event(time.time(), "warning", f"{read.__name__}: {exc}"))
        return events

    def _read_alerts(self) -> list[Event]:
        now = time.time()
        seen: dict[tuple[str, str], str] = {}
        for alert in self.endpoints.prometheus_alerts():
            labels = alert["labels"]
            who = labels.get("tenant_id") or labels.get("scope", "")
            seen[(labels["alertname"], who)] = alert["state"]
        events = []
        for key, state in seen.items():
            if self._alerts.get(key) != state:
                name, who = key
                text = f"Prometheus: {name} {state} for {who}"
                if state == "firing" and name == ISOLATING_ALERT and who == self.story.failing:
                    text += self.story.since_errors(now)
                    if self.story.alert_firing_at is None:
                        self.story.alert_firing_at = now
                events.append(Event(now, f"alert.{state}", text, who or None, {"alertname": name}))
        for key in self._alerts.keys() - seen.keys():
            name, who = key
            events.append(
                Event(now, "alert.inactive", f"Prometheus: {name} resolved for {who}", who or None)
            )
        self._alerts = seen
        return events

    def _read_audit(self) -> list[Event]:
        """Webhook deliveries as the receiver recorded them (audit log, contract)."""
        rows = self.endpoints.sql(
            "SELECT id, occurred_at, action, tenant_id, details FROM audit_log"
            " WHERE id > %s AND action IN ('alert.fired', 'alert.resolved', 'alert.reconciled')"
            " ORDER BY id",
            self._audit_id,
        )
        events = []
        for row_id, occurred_at, action, tenant_id, details in rows:
            self._audit_id = max(self._audit_id, row_id)
            at = occurred_at.timestamp()
            name = (details or {}).get("alertname", "?")
            if action == "alert.reconciled":
                to = (details or {}).get("to", "?")
                text = f"receiver: reconciliation with Alertmanager's API: {name} {to}"
            else:
                verb = "firing" if action == "alert.fired" else "resolved"
                text = f"receiver: Alertmanager delivered {name} {verb}"
                if (details or {}).get("reason") == "superseded":
                    text += " (superseded by a newer instance)"
            if tenant_id:
                text += f" for {tenant_id}"
            elif name == "Watchdog":
                text += " (the heartbeat)"
            mine = name == ISOLATING_ALERT and tenant_id == self.story.failing
            if action == "alert.fired" and mine and self.story.webhook_at is None:
                self.story.webhook_at = at
            events.append(Event(at, action, text, tenant_id, {"alertname": name}))
        return events

    def _read_breakers(self) -> list[Event]:
        story = self.story
        listed = self.endpoints.api("GET", "/v1/breakers")
        if listed.status != 200:
            raise OSError(f"GET /v1/breakers: {listed.status} {listed.body}")
        current = {b["tenant_id"]: b for b in listed.body["breakers"]}
        one = self.endpoints.api("GET", f"/v1/tenants/{story.failing}/breaker")
        if one.status == 200:
            current[story.failing] = one.body
        now = time.time()
        events = []
        for tenant_id in sorted(set(self._breakers) | set(current)):
            b = current.get(tenant_id, {"state": "closed"})
            state = b["state"]
            before = self._breakers.get(tenant_id, "closed")
            if state == before:
                continue
            self._breakers[tenant_id] = state
            text = f"breaker of {tenant_id}: {before} -> {state}"
            if tenant_id != story.failing:
                if state in ISOLATED_STATES:
                    story.others_isolated.append((tenant_id, state, now))
                events.append(Event(now, "breaker", text, tenant_id, b))
                continue
            if state == "open" and story.opened_at is None:
                story.opened_at = _epoch(b.get("opened_at")) or now
                text += (
                    f": the gateway sheds {tenant_id}"
                    f"{story.since_errors(story.opened_at)}; half-open at "
                    f"{_clock(_epoch(b.get('next_change_at')))}"
                )
            elif state == "half_open" and story.half_open_at is None:
                story.half_open_at = _epoch(b.get("half_open_at")) or now
                text += ": a share of the traffic passes as probes"
            elif state == "closed" and story.opened_at is not None:
                story.closed_at = _epoch(b.get("changed_at")) or now
            events.append(Event(now, "breaker", text, tenant_id, b))
        return events

    def close_reason(self) -> str | None:
        """Why the failing tenant's breaker last closed, from the audit log (the sweeper
        writes a time-driven change within a second of the moment it fell due)."""
        rows = self.endpoints.sql(
            "SELECT details->>'reason' FROM audit_log WHERE action = 'breaker.transition'"
            " AND tenant_id = %s AND details->>'to' = 'closed' ORDER BY id DESC LIMIT 1",
            self.story.failing,
        )
        return rows[0][0] if rows else None

    def _incident_rows(self) -> list[dict[str, Any]]:
        story = self.story
        if story.incidents_source == "api":
            reply = self.endpoints.api("GET", f"/v1/incidents?tenant={story.failing}")
            if reply.status == 200:
                return list(reply.body["incidents"])
            if reply.status != 404:
                raise OSError(f"GET /v1/incidents: {reply.status} {reply.body}")
            story.incidents_source = "sql"  # the API is not there (yet): read the tables
        rows = self.endpoints.sql(
            "SELECT i.id, i.title, i.priority, i.status, i.opened_at, i.resolved_at,"
            " i.resolved_by FROM incidents i JOIN incident_tenants t ON t.incident_id = i.id"
            " WHERE t.tenant_id = %s ORDER BY i.opened_at",
            story.failing,
        )
        keys = ("id", "title", "priority", "status", "opened_at", "resolved_at", "resolved_by")
        return [
            {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in zip(keys, r, strict=True)
            }
            for r in rows
        ]

    def _read_incidents(self) -> list[Event]:
        story = self.story
        now = time.time()
        events = []
        for inc in self._incident_rows():
            key = (inc["priority"], inc["status"])
            before = self._incidents.get(inc["id"])
            if before == key:
                continue
            self._incidents[inc["id"]] = key
            story.incident = inc
            if before is None:
                story.incident_opened_priority = story.incident_opened_priority or inc["priority"]
                text = f"incident {inc['id']} opened, {inc['priority']}: {inc.get('title', '')}"
                events.append(Event(now, "incident.opened", text, story.failing, inc))
            if before is not None and before[0] != inc["priority"]:
                text = f"incident {inc['id']} priority {before[0]} -> {inc['priority']}"
                events.append(Event(now, "incident.priority", text, story.failing, inc))
            if inc["status"] != (before[1] if before else "open"):
                text = f"incident {inc['id']} {inc['status']}"
                if inc["status"] == "resolved":
                    story.incident_resolved_at = _epoch(inc.get("resolved_at")) or now
                    text += f" by {inc.get('resolved_by') or '?'}"
                events.append(Event(now, f"incident.{inc['status']}", text, story.failing, inc))
        return events

    def _read_traffic(self) -> list[Event]:
        reply = self.endpoints.traffic("GET", "/tenants")
        if reply.status != 200:
            raise OSError(f"traffic GET /tenants: {reply.status}")
        now = time.time()
        events = []
        for t in reply.body["tenants"]:
            tenant_id, shed = t["tenant_id"], int(t["shed"])
            self.story.shed[tenant_id] = shed
            if shed > self._shed.get(tenant_id, 0):
                self._last_shed[tenant_id] = now
            self._shed[tenant_id] = shed
            # Half-open sheds most queries, not all: "flowing" only after a quiet while.
            quiet = now - self._last_shed.get(tenant_id, 0.0) > SHED_QUIET_SECONDS
            if not quiet and tenant_id not in self._shedding:
                self._shedding.add(tenant_id)
                text = f"gateway: shedding {tenant_id}'s queries (503 before the platform)"
                events.append(Event(now, "traffic.shedding", text, tenant_id))
            elif quiet and tenant_id in self._shedding:
                self._shedding.discard(tenant_id)
                text = f"gateway: {tenant_id}'s queries all pass again ({shed} shed in all)"
                events.append(Event(now, "traffic.flowing", text, tenant_id))
        return events


def _clock(at: float | None) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S") if at else "?"


def iter_poll(deadline: float, interval: float = 0.5) -> Iterator[None]:
    while time.monotonic() < deadline:
        started = time.monotonic()
        yield
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def run_story(
    endpoints: Endpoints,
    *,
    failing: str,
    deadline: float,
    recover_after: float = 8.0,
    settle: float = 5.0,
    error_ratio: float = 0.9,
    emit: Callable[[Event], None] = lambda _: None,
) -> Story:
    """Make `failing` fail, recover it `recover_after` seconds after its breaker opened, and
    watch until its breaker closed and its incident resolved (plus `settle` seconds to
    catch late surprises), or until `deadline` (time.monotonic())."""
    story = Story(failing=failing, tenants=tenant_ids(endpoints))
    if failing not in story.tenants:
        raise StackError(f"{failing} is not one of the tenants {story.tenants}")

    def record(event: Event) -> None:
        story.events.append(event)
        emit(event)

    observer = Observer(endpoints, story)
    for event in observer.poll():  # the state before anything fails
        record(event)
    reply = endpoints.traffic("POST", f"/tenants/{failing}/fail", {"error_ratio": error_ratio})
    if reply.status != 200:
        raise StackError(f"POST /tenants/{failing}/fail: {reply.status} {reply.body}")
    story.errors_started = _epoch(reply.body["failing_since"]) or time.time()
    what = "every query fails" if error_ratio >= 1 else f"{error_ratio:.0%} of its queries fail"
    record(Event(story.errors_started, "errors", f"{failing}: {what} from now on"))
    done_at: float | None = None
    for _ in iter_poll(deadline):
        for event in observer.poll():
            record(event)
        now = time.time()
        due = story.opened_at is not None and now >= story.opened_at + recover_after
        if due and story.recovered_at is None:
            record(_recover(endpoints, story))
        recovered = story.closed_at is not None and (
            story.incident_resolved_at is not None
            or (story.incident is None and now - story.closed_at > 15)
        )
        if recovered and done_at is None:
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at >= settle:
            story.finished = True
            break
    if story.closed_at is not None:
        story.closed_reason = observer.close_reason()
    return story


def _recover(endpoints: Endpoints, story: Story) -> Event:
    """Fix the failing tenant: its queries succeed again from now on."""
    failing = story.failing
    reply = endpoints.traffic("POST", f"/tenants/{failing}/recover")
    if reply.status != 200:
        raise StackError(f"POST /tenants/{failing}/recover: {reply.status} {reply.body}")
    story.recovered_at = time.time()
    text = (
        f"{failing} is fixed: its queries succeed again (its breaker still decides how many"
        " get through)"
    )
    return Event(story.recovered_at, "recovered", text, failing)


# --- how `make demo` prints it --------------------------------------------------------


def say(text: str, at: float | None = None) -> None:
    clock = datetime.fromtimestamp(at if at is not None else time.time()).strftime("%H:%M:%S")
    print(f"{clock}  {text}", flush=True)


def intro(options: StackOptions, failing: str) -> str:
    count = len(options.tenants.split(","))
    return f"""\
blast-radius demo: one tenant's failure contained, end to end, on 127.0.0.1

  {count} tenants each send {options.rate:g} RAG queries a second through a gateway that
  asks the receiver for their circuit breaker (receiver.client). tenant-1 is gold, the
  others silver or bronze; tenant-6 is noisy (15 % errors, under the 50 % bar) and tenant-7
  bursty (35 % errors in 7-second bursts every 20 s, 5 % between): neither is isolated.
  Prometheus scrapes every 2 s and evaluates alert_rules/tenant_errors.rules.yml;
  Alertmanager posts its alerts to the receiver (deploy/*.yml, local addresses).
  Shortened for the demo: the breaker stays open {options.breaker_open_seconds:g} s and the
  half-open probation lasts {options.probation_seconds:g} s (RECEIVER_BREAKER_OPEN_SECONDS and
  RECEIVER_HALF_OPEN_PROBATION_SECONDS; both are 60 s by default).

  The story: {failing} starts failing 90 % of its queries. Watch Prometheus notice, Alertmanager
  deliver, the receiver open {failing}'s breaker and an incident, the gateway shed it while
  the other tenants carry on; then {failing} is fixed, its breaker lets probes through
  (half-open), closes, and the incident resolves itself.
"""


def summary(story: Story) -> list[str]:
    lines = ["", "what happened:"]
    detection = story.detection_seconds
    if detection is not None:
        lines.append(
            f"  detection: errors started -> breaker open in {detection:.1f} s"
            " (budget 20 s for a tenant failing at 90 %)"
        )
    else:
        lines.append("  the breaker never opened")
    if story.alert_firing_at and story.errors_started and story.opened_at:
        lines.append(
            "  of which Prometheus (scrape, 6 s fast-burn window, for: 10s) took"
            f" {story.alert_firing_at - story.errors_started:.1f} s, and Alertmanager and the"
            f" receiver {story.opened_at - story.alert_firing_at:.1f} s more"
        )
    if story.closed_at and story.opened_at:
        lines.append(
            f"  isolated for {story.closed_at - story.opened_at:.1f} s; closed: "
            f"{story.closed_reason or '?'}"
        )
    inc = story.incident
    if inc is not None:
        lines.append(
            f"  incident {inc['id']}: {inc['priority']}, {inc['status']}"
            + (f" by {inc.get('resolved_by')}" if inc.get("resolved_by") else "")
        )
    elif story.incidents_source == "sql":
        lines.append("  no incident found (GET /v1/incidents is not served; read the tables)")
    others = sorted({t for t, _, _ in story.others_isolated})
    lines.append(f"  other tenants isolated: {', '.join(others) if others else 'none'}")
    shed = ", ".join(f"{t} {n}" for t, n in sorted(story.shed.items()))
    lines.append(f"  queries shed by the gateway: {shed}")
    return lines


# The setting the demo's own story is replayed under at the end: the default open period
# instead of the demo's short one.
REPLAY_SETTING = "breaker_open_seconds=60"


def replay_story(
    endpoints: Endpoints, options: StackOptions, story: Story, *, setting: str = REPLAY_SETTING
) -> list[str]:
    """`python -m receiver replay` of the story just told (from the first error on), with
    the demo's settings against `setting`: its comparison table and timeline."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_") and k != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=endpoints.database_url,
        RECEIVER_BREAKER_OPEN_SECONDS=str(options.breaker_open_seconds),
        RECEIVER_HALF_OPEN_PROBATION_SECONDS=str(options.probation_seconds),
    )
    since = datetime.fromtimestamp((story.errors_started or story.started) - 1, UTC)
    cmd = [sys.executable, "-m", "receiver", "replay", "--since", since.isoformat()]
    try:
        done = subprocess.run(
            [*cmd, "--set", setting],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return ["", "replay: timed out"]
    head = ["", f"what if: the same story replayed with {setting} (python -m receiver replay)"]
    if done.returncode != 0:
        return [*head, f"  replay failed ({done.returncode}): {done.stderr.strip()}"]
    return head + ["  " + line if line else "" for line in done.stdout.splitlines()]
