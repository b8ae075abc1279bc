"""The processes of the whole pipeline on 127.0.0.1, from the machine's own binaries, for
`make demo` and tests/e2e: start them in order, and stop every one again.

    with Stack() as stack:       # PostgreSQL, receiver, Alertmanager, traffic, Prometheus
        stack.endpoints.api("GET", "/v1/breakers")        # demo.probes

`Stack` runs, in a temporary directory and on free ports: a private PostgreSQL
(receiver.embedded_pg), `python -m receiver migrate`, `python -m receiver serve`, Debian's
`prometheus-alertmanager`, the traffic generator (`python -m demo.traffic`) and
`prometheus`, each started once the one before it is ready (demo.probes). Their
configurations are deploy/alertmanager.yml and deploy/prometheus.yml with the
docker-compose host names replaced by the local addresses (each is written once in those
files for this purpose); the Prometheus config is written to `<tmp>/deploy/` beside a copy
of `alert_rules/`, so its `../alert_rules/*.rules.yml` resolves as in the repository. Each
process writes to `<tmp>/logs/<name>.log`. Leaving the `with` block, by success, error or
Ctrl-C, stops every process it started (by pid) and the PostgreSQL cluster; the directory
is removed unless something failed or `keep` was asked for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from demo.probes import Endpoints, StackError
from receiver import embedded_pg

REPO = Path(__file__).resolve().parents[1]
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


def missing_packages() -> list[str]:
    """Debian packages whose binaries are not on PATH (PostgreSQL included)."""
    need = {pkg for binary, pkg in BINARIES.items() if shutil.which(binary) is None}
    try:
        embedded_pg._bindir()
    except embedded_pg.EmbeddedPostgresError:
        need.add("postgresql")
    return sorted(need)


# --- the processes ----------------------------------------------------------------------


# tenant-1 gold (the one the story makes fail), tenant-6 noisy (15 % errors), tenant-7
# bursty (35 % in 7 s bursts every 20 s, 5 % between): neither may ever be isolated.
DEFAULT_TENANTS = (
    "tenant-1:gold,tenant-2:silver,tenant-3:bronze,tenant-4:silver,tenant-5:bronze,"
    "tenant-6:silver:0.15,tenant-7:silver:bursty"
)
BLACK_HOLE_RECEIVER = "black-hole"


@dataclass(frozen=True)
class StackOptions:
    tenants: str = DEFAULT_TENANTS  # TRAFFIC_TENANTS
    rate: float = 5.0  # queries a second per tenant
    # Short breaker periods so that recovery fits in the demo (defaults: 60 s and 60 s).
    breaker_open_seconds: float = 20.0
    probation_seconds: float = 10.0
    start_timeout: float = 90.0  # per service
    receiver_log_level: str = "INFO"
    # Reconciliation with Alertmanager's API (RECEIVER_RECONCILE_SECONDS, default 30):
    # short, so a lost delivery is recovered within seconds in the demo and the test.
    reconcile_seconds: float = 2.0
    # Alerts with this tenant_id are routed to a webhook nobody listens on: their
    # deliveries are lost (Alertmanager retries, then gives up), and only reconciliation
    # can tell the receiver about them (tests/e2e). None: no such route.
    black_hole_tenant: str | None = None


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
    """The running pieces: `endpoints` says where each listens, `logs` where each writes."""

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
        ports = [embedded_pg.free_port() for _ in range(5)]
        self.pg_port, receiver, traffic, alertmanager, prometheus = ports
        self.endpoints = Endpoints(
            receiver_url=f"http://127.0.0.1:{receiver}",
            traffic_url=f"http://127.0.0.1:{traffic}",
            alertmanager_url=f"http://127.0.0.1:{alertmanager}",
            prometheus_url=f"http://127.0.0.1:{prometheus}",
            api_token=os.urandom(18).hex(),
        )

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
        e = self.endpoints
        e.database_url = embedded_pg.start(self._pgdir, self.pg_port, "receiver")
        self._migrate()
        self._progress(f"receiver on {e.receiver_url}")
        self._spawn("receiver", [sys.executable, "-m", "receiver", "serve"], self._receiver_env())
        self._wait("receiver", e.receiver_ready)
        self._progress(f"Alertmanager on {e.alertmanager_url}")
        self._spawn("alertmanager", self._alertmanager_cmd(), self._base_env())
        self._wait("alertmanager", e.alertmanager_ready)
        self._progress(f"traffic generator on {e.traffic_url}")
        self._spawn("traffic", [sys.executable, "-m", "demo.traffic"], self._traffic_env())
        self._wait("traffic", e.traffic_registered)
        self._progress(f"Prometheus on {e.prometheus_url}")
        self._spawn("prometheus", self._prometheus_cmd(), self._base_env())
        self._wait("prometheus", e.prometheus_ready)

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
            "DATABASE_URL": self.endpoints.database_url,
            "RECEIVER_HOST": "127.0.0.1",
            "RECEIVER_PORT": self.endpoints.receiver_url.rsplit(":", 1)[1],
            "RECEIVER_WEBHOOK_TOKEN": self.webhook_token,
            "RECEIVER_API_TOKEN": self.endpoints.api_token,
            "RECEIVER_BREAKER_OPEN_SECONDS": str(o.breaker_open_seconds),
            "RECEIVER_HALF_OPEN_PROBATION_SECONDS": str(o.probation_seconds),
            "RECEIVER_LOG_LEVEL": o.receiver_log_level,
            "RECEIVER_ALERTMANAGER_URLS": self.endpoints.alertmanager_url,
            "RECEIVER_RECONCILE_SECONDS": str(o.reconcile_seconds),
        }

    def _traffic_env(self) -> dict[str, str]:
        return {
            **self._base_env(),
            "TRAFFIC_RECEIVER_URL": self.endpoints.receiver_url,
            "TRAFFIC_API_TOKEN": self.endpoints.api_token,
            "TRAFFIC_HOST": "127.0.0.1",
            "TRAFFIC_PORT": self.endpoints.traffic_url.rsplit(":", 1)[1],
            "TRAFFIC_TENANTS": self.options.tenants,
            "TRAFFIC_RATE": str(self.options.rate),
        }

    def _migrate(self) -> None:
        log = self.logs / "migrate.log"
        env = {**self._base_env(), "DATABASE_URL": self.endpoints.database_url}
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
                COMPOSE_RECEIVER: self.endpoints.receiver_url.removeprefix("http://"),
                COMPOSE_WEBHOOK_TOKEN: str(token),
            },
        )
        if self.options.black_hole_tenant is not None:
            config = _with_black_hole(config, self.options.black_hole_tenant)
        path = self.workdir / "alertmanager.yml"
        path.write_text(config)
        (self.workdir / "alertmanager-data").mkdir()
        return [
            "prometheus-alertmanager",
            f"--config.file={path}",
            f"--storage.path={self.workdir / 'alertmanager-data'}",
            f"--web.listen-address={self.endpoints.alertmanager_url.removeprefix('http://')}",
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
                COMPOSE_RECEIVER: self.endpoints.receiver_url.removeprefix("http://"),
                COMPOSE_ALERTMANAGER: self.endpoints.alertmanager_url.removeprefix("http://"),
                COMPOSE_TRAFFIC: self.endpoints.traffic_url.removeprefix("http://"),
            },
        )
        path = self.workdir / "deploy" / "prometheus.yml"
        path.write_text(config)
        return [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
            f"--web.listen-address={self.endpoints.prometheus_url.removeprefix('http://')}",
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

    def log_paths(self) -> dict[str, Path]:
        return {p.name: p.log for p in self._processes} | {"migrate": self.logs / "migrate.log"}


def _with_black_hole(config: str, tenant: str) -> str:
    """deploy/alertmanager.yml plus a first route sending `tenant`'s alerts to a webhook
    on a port nobody listens on: every delivery of that group fails."""
    route = (
        "  routes:\n"
        f"    - receiver: {BLACK_HOLE_RECEIVER}\n"
        "      matchers:\n"
        f'        - tenant_id="{tenant}"\n'
    )
    receiver = (
        f"  - name: {BLACK_HOLE_RECEIVER}\n"
        "    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{embedded_pg.free_port()}/v1/alertmanager\n"
        "        send_resolved: true\n"
    )
    return _substitute(config, {"  routes:\n": route}) + "\n" + receiver


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
