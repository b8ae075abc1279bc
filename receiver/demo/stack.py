"""The whole pipeline on 127.0.0.1, from the machine's own binaries, for `make demo` and
tests/e2e: start it, watch a tenant fail and recover, stop everything again.

    with Stack() as stack:                       # PostgreSQL, receiver, traffic, Alertmanager,
        story = run_story(stack, failing="tenant-1", emit=print)   # Prometheus
    story.detection_seconds

`Stack` runs, in a temporary directory and on free ports: a private PostgreSQL
(receiver.embedded_pg), `python -m receiver migrate`, `python -m receiver serve`, the
traffic generator (`python -m receiver.demo.traffic`), Debian's `prometheus-alertmanager`
and `prometheus`. Their configurations are deploy/alertmanager.yml and deploy/prometheus.yml
with the docker-compose host names replaced by the local addresses (each is written once
in those files for this purpose); the Prometheus config is written to `<tmp>/deploy/` beside
a copy of `alert_rules/`, so its `../alert_rules/*.rules.yml` resolves as in the repository.
Each process writes to `<tmp>/logs/<name>.log`. Leaving the `with` block, by success, error
or Ctrl-C, stops every process it started (by pid) and the PostgreSQL cluster; the
directory is removed unless something failed (`keep_on_failure`) or `keep` was asked for.

`run_story` makes one tenant fail, polls Prometheus, the receiver's API, its audit log and
the traffic generator, reports each change as an `Event` when it happens, calls
`/recover` some seconds after the breaker opened, and returns a `Story`: the measured
detection time, the breaker's and the incident's lifecycle, and whether any other tenant
was ever isolated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psycopg

from receiver import embedded_pg

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = REPO / "alert_rules"

# binary -> the Debian package that has it
BINARIES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}
# The docker-compose addresses in deploy/*.yml that the stack replaces.
COMPOSE_RECEIVER = "receiver:8080"
COMPOSE_ALERTMANAGER = "alertmanager:9093"
COMPOSE_TRAFFIC = "traffic:9100"
COMPOSE_WEBHOOK_TOKEN = "/etc/alertmanager/webhook_token"

ISOLATING_ALERT = "TenantErrorRateHigh"
ISOLATED_STATES = frozenset({"open", "half_open", "forced_open"})
SHED_QUIET_SECONDS = 3.0


class StackError(RuntimeError):
    """Something did not start or answer in time; the message names the log to read."""


def missing_packages() -> list[str]:
    """Debian packages whose binaries are not on PATH (PostgreSQL included)."""
    need = {pkg for binary, pkg in BINARIES.items() if shutil.which(binary) is None}
    try:
        embedded_pg._bindir()
    except embedded_pg.EmbeddedPostgresError:
        need.add("postgresql")
    return sorted(need)


# --- HTTP without dependencies (and without proxies: everything is on 127.0.0.1) -------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or the text when it is not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def http(
    method: str, url: str, *, token: str | None = None, body: Any = None, timeout: float = 3.0
) -> Reply:
    """One request; HTTP errors are replies, an unreachable server raises OSError."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return Reply(status, json.loads(raw))
    except ValueError:
        return Reply(status, raw.decode(errors="replace"))


# --- the processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class StackOptions:
    tenants: str = "6"  # TRAFFIC_TENANTS
    rate: float = 5.0  # queries a second per tenant
    # Short breaker periods so that recovery fits in the demo (defaults: 60 s and 60 s).
    breaker_open_seconds: float = 20.0
    probation_seconds: float = 10.0
    start_timeout: float = 90.0  # per service
    receiver_log_level: str = "INFO"


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Stack:
    def __init__(
        self,
        options: StackOptions | None = None,
        *,
        keep: bool = False,
        progress: Callable[[str], None] | None = None,
        deadline: float | None = None,
    ) -> None:
        """`deadline` (time.monotonic()) bounds the whole start, whatever the per-service
        `start_timeout`."""
        self.options = options or StackOptions()
        self.deadline = deadline
        self.keep = keep
        self.failed = False
        self._progress = progress or (lambda _: None)
        self.workdir = Path(tempfile.mkdtemp(prefix="blast-radius-stack-"))
        self.logs = self.workdir / "logs"
        self._pgdir = self.workdir / "pg"
        self._pg_started = False
        self._processes: list[_Process] = []
        self.webhook_token = os.urandom(18).hex()
        self.api_token = os.urandom(18).hex()
        ports = [embedded_pg.free_port() for _ in range(5)]
        self.pg_port, receiver, traffic, alertmanager, prometheus = ports
        self.receiver_url = f"http://127.0.0.1:{receiver}"
        self.traffic_url = f"http://127.0.0.1:{traffic}"
        self.alertmanager_url = f"http://127.0.0.1:{alertmanager}"
        self.prometheus_url = f"http://127.0.0.1:{prometheus}"
        self.database_url = ""

    # --- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.failed = True
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.failed = True
        self.stop()

    def start(self) -> None:
        missing = missing_packages()
        if missing:
            raise StackError(
                f"missing binaries: apt-get install {' '.join(missing)} "
                "(or run `make system-deps` as root)"
            )
        self.logs.mkdir(parents=True)
        self._progress(f"PostgreSQL on 127.0.0.1:{self.pg_port}")
        self._pg_started = True
        self.database_url = embedded_pg.start(self._pgdir, self.pg_port, "receiver")
        self._migrate()
        self._progress(f"receiver on {self.receiver_url}")
        self._spawn("receiver", [sys.executable, "-m", "receiver", "serve"], self._receiver_env())
        self._wait("receiver", lambda: http("GET", f"{self.receiver_url}/readyz").status == 200)
        self._progress(f"Alertmanager on {self.alertmanager_url}")
        self._spawn("alertmanager", self._alertmanager_cmd(), self._base_env())
        self._wait("alertmanager", lambda: http("GET", f"{self.alertmanager_url}/-/ready").ok)
        self._progress(f"traffic generator on {self.traffic_url}")
        self._spawn("traffic", [sys.executable, "-m", "receiver.demo.traffic"], self._traffic_env())
        self._wait("traffic", self._traffic_registered)
        self._progress(f"Prometheus on {self.prometheus_url}")
        self._spawn("prometheus", self._prometheus_cmd(), self._base_env())
        self._wait("prometheus", lambda: http("GET", f"{self.prometheus_url}/-/ready").ok)

    def stop(self) -> None:
        """Stop what was started, newest first; safe to call twice. A second Ctrl-C while
        stopping is ignored, so that nothing is left running."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self._stop()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def _stop(self) -> None:
        while self._processes:
            process = self._processes.pop()
            _terminate(process.popen)
            process.log_file.close()
        if self._pg_started:
            self._pg_started = False
            try:
                embedded_pg.stop(self._pgdir)
            except embedded_pg.EmbeddedPostgresError as exc:
                self.failed = True
                print(f"could not stop PostgreSQL: {exc}", file=sys.stderr)
        if self.keep or self.failed:
            print(f"logs kept in {self.logs}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- pieces -----------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        # Hermetic: settings of the caller's own receiver must not leak in.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RECEIVER_", "TRAFFIC_")) and k != "DATABASE_URL"
        }
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _receiver_env(self) -> dict[str, str]:
        o = self.options
        return {
            **self._base_env(),
            "DATABASE_URL": self.database_url,
            "RECEIVER_HOST": "127.0.0.1",
            "RECEIVER_PORT": self.receiver_url.rsplit(":", 1)[1],
            "RECEIVER_WEBHOOK_TOKEN": self.webhook_token,
            "RECEIVER_API_TOKEN": self.api_token,
            "RECEIVER_BREAKER_OPEN_SECONDS": str(o.breaker_open_seconds),
            "RECEIVER_HALF_OPEN_PROBATION_SECONDS": str(o.probation_seconds),
            "RECEIVER_LOG_LEVEL": o.receiver_log_level,
        }

    def _traffic_env(self) -> dict[str, str]:
        return {
            **self._base_env(),
            "TRAFFIC_RECEIVER_URL": self.receiver_url,
            "TRAFFIC_API_TOKEN": self.api_token,
            "TRAFFIC_HOST": "127.0.0.1",
            "TRAFFIC_PORT": self.traffic_url.rsplit(":", 1)[1],
            "TRAFFIC_TENANTS": self.options.tenants,
            "TRAFFIC_RATE": str(self.options.rate),
        }

    def _migrate(self) -> None:
        log = self.logs / "migrate.log"
        env = {**self._base_env(), "DATABASE_URL": self.database_url}
        with log.open("wb") as out:
            try:
                result = subprocess.run(
                    [sys.executable, "-m", "receiver", "migrate"],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=self._remaining(),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise StackError(f"migrate timed out; see {log}") from exc
        if result.returncode != 0:
            raise StackError(f"migrate exited {result.returncode}; see {log}:\n{_tail(log)}")

    def _alertmanager_cmd(self) -> list[str]:
        token = self.workdir / "webhook_token"
        token.write_text(self.webhook_token + "\n")
        config = _substitute(
            (DEPLOY / "alertmanager.yml").read_text(),
            {
                COMPOSE_RECEIVER: self.receiver_url.removeprefix("http://"),
                COMPOSE_WEBHOOK_TOKEN: str(token),
            },
        )
        path = self.workdir / "alertmanager.yml"
        path.write_text(config)
        (self.workdir / "alertmanager-data").mkdir()
        return [
            "prometheus-alertmanager",
            f"--config.file={path}",
            f"--storage.path={self.workdir / 'alertmanager-data'}",
            f"--web.listen-address={self.alertmanager_url.removeprefix('http://')}",
            "--cluster.listen-address=",
        ]

    def _prometheus_cmd(self) -> list[str]:
        # <tmp>/deploy/prometheus.yml beside <tmp>/alert_rules/: `../alert_rules/*.rules.yml`
        # resolves as it does from the repository's deploy/.
        (self.workdir / "deploy").mkdir()
        (self.workdir / "alert_rules").mkdir()
        for rules in RULES.glob("*.rules.yml"):
            shutil.copy(rules, self.workdir / "alert_rules" / rules.name)
        config = _substitute(
            (DEPLOY / "prometheus.yml").read_text(),
            {
                COMPOSE_RECEIVER: self.receiver_url.removeprefix("http://"),
                COMPOSE_ALERTMANAGER: self.alertmanager_url.removeprefix("http://"),
                COMPOSE_TRAFFIC: self.traffic_url.removeprefix("http://"),
            },
        )
        path = self.workdir / "deploy" / "prometheus.yml"
        path.write_text(config)
        return [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
            f"--web.listen-address={self.prometheus_url.removeprefix('http://')}",
        ]

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = self.logs / f"{name}.log"
        out = log.open("wb")
        try:
            popen = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: Ctrl-C reaches only this process, which then stops the
                # others in order.
                start_new_session=True,
            )
        except OSError:
            out.close()
            raise
        self._processes.append(_Process(name, popen, log, out))

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        process = next(p for p in self._processes if p.name == name)
        deadline = time.monotonic() + self._remaining()
        while time.monotonic() < deadline:
            code = process.popen.poll()
            if code is not None:
                raise StackError(
                    f"{name} exited {code} while starting; see {process.log}:\n{_tail(process.log)}"
                )
            with contextlib.suppress(OSError):
                if ready():
                    return
            time.sleep(0.2)
        raise StackError(f"{name} not ready in time; see {process.log}:\n{_tail(process.log)}")

    def _remaining(self) -> float:
        """Seconds the next step may take: its own limit, within the overall deadline."""
        limit = self.options.start_timeout
        if self.deadline is not None:
            limit = min(limit, self.deadline - time.monotonic())
        if limit <= 0:
            raise StackError(f"out of time while starting; see {self.logs}")
        return limit

    def _traffic_registered(self) -> bool:
        reply = http("GET", f"{self.traffic_url}/healthz")
        return reply.status == 200 and bool(reply.body.get("registered"))

    def log_paths(self) -> dict[str, Path]:
        return {p.name: p.log for p in self._processes} | {"migrate": self.logs / "migrate.log"}

    # --- talking to the pieces --------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Reply:
        return http(method, self.receiver_url + path, token=self.api_token, body=body)

    def traffic(self, method: str, path: str, body: Any = None) -> Reply:
        return http(method, self.traffic_url + path, body=body)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query: the `result` list."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        reply = http("GET", url)
        if reply.status != 200:
            raise StackError(f"Prometheus query {expr!r}: {reply.status} {reply.body}")
        return list(reply.body["data"]["result"])

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        reply = http("GET", f"{self.prometheus_url}/api/v1/alerts")
        return list(reply.body["data"]["alerts"]) if reply.status == 200 else []

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        libpq = self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []


def _substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise StackError(f"expected {old!r} exactly once in the deploy config")
        text = text.replace(old, new)
    return text


def _terminate(popen: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            popen.kill()
        popen.wait(timeout=grace)


# --- the story ----------------------------------------------------------------------------


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

    def __init__(self, stack: Stack, story: Story) -> None:
        self.stack = stack
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
        for alert in self.stack.prometheus_alerts():
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
        rows = self.stack.sql(
            "SELECT id, occurred_at, action, tenant_id, details FROM audit_log"
            " WHERE id > %s AND action IN ('alert.fired', 'alert.resolved') ORDER BY id",
            self._audit_id,
        )
        events = []
        for row_id, occurred_at, action, tenant_id, details in rows:
            self._audit_id = max(self._audit_id, row_id)
            at = occurred_at.timestamp()
            name = (details or {}).get("alertname", "?")
            verb = "firing" if action == "alert.fired" else "resolved"
            text = f"receiver: Alertmanager delivered {name} {verb} for {tenant_id}"
            mine = name == ISOLATING_ALERT and tenant_id == self.story.failing
            if action == "alert.fired" and mine and self.story.webhook_at is None:
                self.story.webhook_at = at
            events.append(Event(at, action, text, tenant_id, {"alertname": name}))
        return events

    def _read_breakers(self) -> list[Event]:
        story = self.story
        listed = self.stack.api("GET", "/v1/breakers")
        if listed.status != 200:
            raise OSError(f"GET /v1/breakers: {listed.status} {listed.body}")
        current = {b["tenant_id"]: b for b in listed.body["breakers"]}
        one = self.stack.api("GET", f"/v1/tenants/{story.failing}/breaker")
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
        rows = self.stack.sql(
            "SELECT details->>'reason' FROM audit_log WHERE action = 'breaker.transition'"
            " AND tenant_id = %s AND details->>'to' = 'closed' ORDER BY id DESC LIMIT 1",
            self.story.failing,
        )
        return rows[0][0] if rows else None

    def _incident_rows(self) -> list[dict[str, Any]]:
        story = self.story
        if story.incidents_source == "api":
            reply = self.stack.api("GET", f"/v1/incidents?tenant={story.failing}")
            if reply.status == 200:
                return list(reply.body["incidents"])
            if reply.status != 404:
                raise OSError(f"GET /v1/incidents: {reply.status} {reply.body}")
            story.incidents_source = "sql"  # the API is not there (yet): read the tables
        rows = self.stack.sql(
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
        reply = self.stack.traffic("GET", "/tenants")
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


def tenant_ids(stack: Stack) -> list[str]:
    reply = stack.traffic("GET", "/tenants")
    return [t["tenant_id"] for t in reply.body["tenants"]]


def wait_for_traffic_in_prometheus(
    stack: Stack, tenants: list[str], *, window_seconds: float = 30.0, timeout: float = 90.0
) -> None:
    """Until Prometheus holds a full rate window of every tenant's counters, so that the
    failing tenant's ratio starts from a window of healthy traffic, as in real life."""
    deadline = time.monotonic() + timeout
    expr = f"count_over_time(rag_queries_total[{int(window_seconds)}s])"
    needed = window_seconds / 2.0  # a sample every 2 s (deploy/prometheus.yml)
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, StackError):
            counts = {r["metric"].get("tenant_id"): float(r["value"][1]) for r in stack.query(expr)}
            if all(counts.get(t, 0) >= needed for t in tenants):
                return
        time.sleep(1.0)
    raise StackError(
        f"Prometheus did not collect {window_seconds:.0f} s of traffic within {timeout:.0f} s;"
        f" see {stack.logs}"
    )


def iter_poll(deadline: float, interval: float = 0.5) -> Iterator[None]:
    while time.monotonic() < deadline:
        started = time.monotonic()
        yield
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def run_story(
    stack: Stack,
    *,
    failing: str,
    deadline: float,
    recover_after: float = 8.0,
    settle: float = 5.0,
    emit: Callable[[Event], None] = lambda _: None,
) -> Story:
    """Make `failing` fail, recover it `recover_after` seconds after its breaker opened, and
    watch until its breaker closed and its incident resolved (plus `settle` seconds to
    catch late surprises), or until `deadline` (time.monotonic())."""
    story = Story(failing=failing, tenants=tenant_ids(stack))
    if failing not in story.tenants:
        raise StackError(f"{failing} is not one of the tenants {story.tenants}")

    def record(event: Event) -> None:
        story.events.append(event)
        emit(event)

    observer = Observer(stack, story)
    for event in observer.poll():  # the state before anything fails
        record(event)
    reply = stack.traffic("POST", f"/tenants/{failing}/fail")
    if reply.status != 200:
        raise StackError(f"POST /tenants/{failing}/fail: {reply.status} {reply.body}")
    story.errors_started = _epoch(reply.body["failing_since"]) or time.time()
    record(Event(story.errors_started, "errors", f"{failing}: every query fails from now on"))
    done_at: float | None = None
    for _ in iter_poll(deadline):
        for event in observer.poll():
            record(event)
        now = time.time()
        due = story.opened_at is not None and now >= story.opened_at + recover_after
        if due and story.recovered_at is None:
            reply = stack.traffic("POST", f"/tenants/{failing}/recover")
            if reply.status != 200:
                raise StackError(f"POST /tenants/{failing}/recover: {reply.status} {reply.body}")
            story.recovered_at = time.time()
            record(
                Event(
                    story.recovered_at,
                    "recovered",
                    f"{failing} is fixed: its queries succeed again (its breaker still"
                    " decides how many get through)",
                    failing,
                )
            )
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
