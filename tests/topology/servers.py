"""Real etcd, Patroni-managed PostgreSQL 15 and PgBouncer processes on 127.0.0.1.

What these need to run on Debian (scripts/system-deps.sh --with-topology) and the traps
met on the way (shared/REAL-PARTS.md): etcd 3.4 speaks only the v3 API, so Patroni gets
`etcd3:`; Patroni runs PostgreSQL and so runs as `postgres`, from a clean environment (a
PGPASSWORD inherited from the test's environment would reach libpq inside Patroni and
break replication and pg_rewind); the postmaster's PID is the first line of
`data/postmaster.pid`; the REST API is polled (patronictl costs about 0.8 s a call).

Every process here is started by the tests and stopped by them, by its own PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psycopg
import yaml

from receiver import embedded_pg
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN
from tests.integration.helpers import ServerProcess, server_env

T = TypeVar("T")

# The newest of Debian's PostgreSQL server packages (collection must not fail without one).
PG_BINDIR = max(
    (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")),
    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    default=Path("/usr/lib/postgresql/15/bin"),
)
SUPERUSER_PASSWORD = "topology-superuser"
APP_USER = "receiver"
APP_PASSWORD = "topology-receiver"
APP_DB = "receiver"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def wait_for(probe: Callable[[], T], until: Callable[[T], bool], *, within: float, what: str) -> T:
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = probe()
            if until(last):
                return last
        except Exception as exc:  # a server that is not up yet: keep polling
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last: {last!r}")
        time.sleep(0.1)


def http_json(url: str, *, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def postgres_owned_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    pw = pwd.getpwnam("postgres")
    os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(0o700)
    return path


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --- etcd ----------------------------------------------------------------------------------


@dataclass
class Etcd:
    workdir: Path
    client_port: int = field(default_factory=embedded_pg.free_port)
    peer_port: int = field(default_factory=embedded_pg.free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> Etcd:
        client = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "etcd.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "etcd",
                "--name=etcd0",
                f"--data-dir={self.workdir / 'data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=etcd0={peer}",
                "--initial-cluster-state=new",
                "--log-level=warn",
            ],
            env={"PATH": CLEAN_PATH},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(
            lambda: http_json(f"{client}/health"),
            lambda r: r[0] == 200,
            within=30,
            what="etcd health",
        )
        return self

    def stop(self) -> None:
        _stop_process(self.proc)


# --- Patroni -------------------------------------------------------------------------------


@dataclass
class PatroniNode:
    name: str
    scope: str
    etcd: Etcd
    workdir: Path  # owned by postgres
    pg_port: int = field(default_factory=embedded_pg.free_port)
    rest_port: int = field(default_factory=embedded_pg.free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "patroni.yml"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def config(self) -> dict[str, Any]:
        address = f"127.0.0.1:{self.pg_port}"
        return {
            "scope": self.scope,
            "name": self.name,
            "log": {"level": "INFO", "dir": str(self.workdir), "file_num": 2},
            "restapi": {
                "listen": f"127.0.0.1:{self.rest_port}",
                "connect_address": f"127.0.0.1:{self.rest_port}",
            },
            "etcd3": {"hosts": [self.etcd.endpoint]},
            "bootstrap": {
                "dcs": {
                    "ttl": 10,
                    "loop_wait": 2,
                    "retry_timeout": 5,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {
                            "max_connections": 200,
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "shared_buffers": "64MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth-local": "trust"}],
                "pg_hba": [
                    "local all all trust",
                    "host replication replicator 127.0.0.1/32 scram-sha-256",
                    "host all all 127.0.0.1/32 scram-sha-256",
                ],
            },
            "postgresql": {
                "listen": address,
                "connect_address": address,
                "data_dir": str(self.datadir),
                "bin_dir": str(PG_BINDIR),
                "pgpass": str(self.workdir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                    "replication": {"username": "replicator", "password": "topology-repl"},
                    "rewind": {"username": "rewinder", "password": "topology-rewind"},
                },
                "parameters": {"unix_socket_directories": str(self.workdir)},
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }

    def start(self) -> PatroniNode:
        pw = pwd.getpwnam("postgres")
        self.config_path.write_text(yaml.safe_dump(self.config()))
        os.chown(self.config_path, pw.pw_uid, pw.pw_gid)
        log = (self.workdir / "patroni.out").open("ab")
        # setpriv execs Patroni itself, so proc.pid is Patroni's (runuser would stay the
        # parent); env -i semantics: nothing of the test's environment reaches libpq.
        self.proc = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--init-groups",
                "--",
                "patroni",
                str(self.config_path),
            ],
            env={"PATH": CLEAN_PATH, "HOME": pw.pw_dir, "LANG": "C.UTF-8"},
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def postmaster_pid(self) -> int | None:
        """The running postmaster of this node's data directory, if any (a stale pid file's
        PID may belong to another process by now: its command line must name the folder)."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(self.datadir).encode() in cmdline else None

    def _signal_postmaster(self, sig: signal.Signals) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL Patroni and then its postmaster: the machine dies, nothing shuts down."""
        pid = self.postmaster_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        # Patroni stops its PostgreSQL on SIGTERM; a postmaster left behind is stopped too.
        _stop_process(self.proc, timeout=30)
        self._signal_postmaster(signal.SIGQUIT)

    def patroni_state(self) -> dict[str, Any]:
        status, body = http_json(f"{self.rest}/patroni")
        return body if isinstance(body, dict) else {"status": status}

    def log(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("patroni*")):
            if path.suffix != ".yml":
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


@dataclass
class PatroniCluster:
    """One etcd and two Patroni nodes (synchronous_mode: true) on 127.0.0.1."""

    etcd: Etcd
    nodes: list[PatroniNode]

    @classmethod
    def create(cls, root: Path) -> PatroniCluster:
        scope = f"receiver-{os.getpid()}"
        etcd = Etcd(root / "etcd").start()
        nodes = [
            PatroniNode(name, scope, etcd, postgres_owned_dir(f"patroni-{name}-"))
            for name in ("node1", "node2")
        ]
        return cls(etcd, nodes)

    @property
    def ports(self) -> list[int]:
        return [n.pg_port for n in self.nodes]

    def node(self, name: str) -> PatroniNode:
        return next(n for n in self.nodes if n.name == name)

    def members(self) -> list[dict[str, Any]]:
        for node in self.nodes:
            try:
                status, body = http_json(f"{node.rest}/cluster")
            except OSError:
                continue
            if status == 200 and isinstance(body, dict):
                return list(body.get("members", []))
        return []

    def leader(self) -> PatroniNode | None:
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            try:
                if http_json(f"{node.rest}/primary")[0] == 200:
                    return node
            except OSError:
                continue
        return None

    def healthy(self) -> bool:
        """A leader and a streaming sync standby (Patroni 3.0.2 calls the standby's state
        `running`; the role says sync_standby)."""
        roles = sorted(
            m.get("role", "") for m in self.members() if m.get("state") in ("running", "streaming")
        )
        return roles == ["leader", "sync_standby"]

    def bootstrap(self) -> None:
        first, second = self.nodes
        first.start()
        wait_for(self.leader, lambda n: n is first, within=60, what="node1 to lead")
        second.start()
        self.wait_healthy(within=90)

    def wait_healthy(self, within: float = 60) -> None:
        try:
            wait_for(self.healthy, bool, within=within, what="a leader and a sync standby")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nmembers: {self.members()}\n"
                + "\n".join(f"--- {n.name}\n{n.log()}" for n in self.nodes)
            ) from None

    def superuser_conninfo(self, node: PatroniNode, dbname: str = "postgres") -> str:
        return (
            f"host=127.0.0.1 port={node.pg_port} user=postgres "
            f"password={SUPERUSER_PASSWORD} dbname={dbname} connect_timeout=3"
        )

    def create_app_database(self) -> None:
        leader = self.leader()
        assert leader is not None
        with psycopg.connect(self.superuser_conninfo(leader), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
            conn.execute(f"CREATE DATABASE {APP_DB} OWNER {APP_USER}")

    def query(self, node: PatroniNode, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.superuser_conninfo(node, APP_DB), autocommit=True) as conn:
            cur = conn.execute(sql, params or None)
            return cur.fetchall() if cur.description else []

    def multi_host_url(self, ports: list[int] | None = None) -> str:
        """The receiver's DATABASE_URL: libpq multi-host, as SQLAlchemy's psycopg dialect
        passes it on (host and port lists kept in step, target_session_attrs as is)."""
        ports = ports or self.ports
        hosts = ",".join("127.0.0.1" for _ in ports)
        return (
            f"postgresql+psycopg://{APP_USER}:{APP_PASSWORD}@/{APP_DB}"
            f"?host={hosts}&port={','.join(map(str, ports))}&target_session_attrs=read-write"
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.etcd.stop()
        for node in self.nodes:
            shutil.rmtree(node.workdir, ignore_errors=True)


# --- PgBouncer -----------------------------------------------------------------------------


@dataclass
class PgBouncer:
    """PgBouncer in transaction mode in front of one PostgreSQL on 127.0.0.1."""

    workdir: Path  # owned by postgres: pgbouncer refuses to run as root
    upstream_port: int
    port: int = field(default_factory=embedded_pg.free_port)
    pool_size: int = 4
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        pw = pwd.getpwnam("postgres")
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.upstream_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.workdir}\n"
            "auth_type = trust\n"
            "admin_users = postgres\n"
            f"auth_file = {self.workdir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            # Few server connections for many clients: statements of different clients
            # run on the same server connections, one transaction after another.
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.workdir / 'pgbouncer.log'}\n"
        )
        (self.workdir / "userlist.txt").write_text('"postgres" ""\n')
        for path in (ini, self.workdir / "userlist.txt"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        self.proc = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--init-groups",
                "--",
                "pgbouncer",
                str(ini),
            ],
            env={"PATH": CLEAN_PATH, "HOME": pw.pw_dir},
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

        def connect() -> bool:
            with psycopg.connect(
                f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=2"
            ) as conn:
                conn.execute("SELECT 1")
            return True

        wait_for(connect, bool, within=30, what="pgbouncer to accept connections")
        return self

    def show(self, what: str) -> list[dict[str, Any]]:
        """SHOW <what> on pgbouncer's admin console, a dict per row."""
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=pgbouncer",
            autocommit=True,
            prepare_threshold=None,
        ) as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def log(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        _stop_process(self.proc)


# --- receiver replicas ---------------------------------------------------------------------


REPLICA_ENV = {
    "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "RECEIVER_API_TOKEN": API_TOKEN,
    # Many tenants trip in these tests: keep the mass-isolation guard out of the way.
    "RECEIVER_MAX_ISOLATED_PERCENT": "100",
}


def start_replicas(workdir: Path, urls: list[str], **extra: str) -> list[ServerProcess]:
    servers = []
    for i, url in enumerate(urls):
        port = embedded_pg.free_port()
        env = server_env(url, port, **REPLICA_ENV, **extra)
        name = "ab"[i]
        servers.append(
            ServerProcess(env=env, log_path=workdir / f"replica-{name}.log", port=port).start()
        )

    async def ready() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await asyncio.gather(*(s.wait_ready(http) for s in servers))

    try:
        asyncio.run(ready())
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers
