"""`make bench`: webhook ingest against its PostgreSQL floor, breaker reads against a
hello-world server, a 1,000-alert delivery, and the receiver's memory, in one run.

Everything runs on this machine, on 127.0.0.1 only: a private PostgreSQL cluster in a
temporary directory, the receiver (`python -m receiver serve`) and bench/hello.py as
subprocesses, wrk and pgbench as load generators, each run bounded in time. See
bench/README.md for what each figure means.

Environment:
    BENCH_SECONDS          duration of each measured run (default 15)
    BENCH_READ_CONNECTIONS connections for the read runs (default 64)
    BENCH_WRK_THREADS      wrk threads (default 1: wrk needs one core at most here, and
                           the other is the server's)
    BENCH_MAX_ISOLATED_PERCENT  the receiver's mass-isolation guard (default 100, see README)
    BENCH_RECEIVER_<NAME>  passed to the receiver as RECEIVER_<NAME> (experiments, e.g.
                           BENCH_RECEIVER_DB_POOL_SIZE=20)
    BENCH_WORKERS=N        experiment: N receiver processes sharing the port (SO_REUSEPORT)
    BENCH_UVLOOP=1         experiment: receiver and hello-world on uvloop
    BENCH_KEEP=1           keep the temporary directory (logs, pgbench logs)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.load import BENCH_DIR, LoadResult, merge, pgbench, pgbench_binary, wrk
from bench.procs import BenchError, Server, measure_cpu, memory_kib
from receiver import embedded_pg
from receiver.db import migrate

TENANTS = 1000
INGEST_CONNECTIONS = 32
LARGE_ALERTS = 1000
# One isolating delivery this large (a group across every tenant: the mass-isolation
# guard's worst case, quadratic before it counted once). Target: under 2 s.
HUGE_ALERTS = 10_000
LARGE_REPEATS = 3
TIERS = {50: "platinum", 10: "gold", 3: "silver"}  # every Nth tenant; the rest bronze


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


SECONDS = _env_number("BENCH_SECONDS", 15)
READ_CONNECTIONS = int(_env_number("BENCH_READ_CONNECTIONS", 64))
WRK_THREADS = int(_env_number("BENCH_WRK_THREADS", 1))
MAX_ISOLATED_PERCENT = _env_number("BENCH_MAX_ISOLATED_PERCENT", 100)
WORKERS = int(_env_number("BENCH_WORKERS", 1))
UVLOOP = os.environ.get("BENCH_UVLOOP") == "1"
# A run during which the rest of the machine used more than this (percent of one core)
# was measured on a busy machine: the report says so.
OTHER_CPU_WARNING = 15.0
WARMUP_SECONDS = 3
# Slices per side of an interleaved comparison (A B B A A B for 3).
ROUNDS = max(1, min(4, int(_env_number("BENCH_ROUNDS", 3))))


def _without_age(body: bytes) -> bytes:
    return b"".join(body.partition(b',"view_age_ms":')[:1]) + b"}"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tier_of(n: int) -> str:
    for every, tier in TIERS.items():
        if n % every == 0:
            return tier
    return "bronze"


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pg_port = embedded_pg.free_port()
        self.db_url = ""
        self.postmaster_pid = 0
        self.webhook_token = secrets.token_urlsafe(24)
        self.api_token = secrets.token_urlsafe(24)
        # The gateways' own token, as they read breakers in production.
        self.gateway_token = secrets.token_urlsafe(24)
        self.receivers: list[Server] = []
        self.hello: Server | None = None
        self.receiver_url = ""
        self.hello_url = ""
        self.results: dict[str, Any] = {}

    # --- set-up ------------------------------------------------------------------------

    def start_postgres(self) -> None:
        say(f"starting a private PostgreSQL on 127.0.0.1:{self.pg_port}")
        self.db_url = embedded_pg.start(self.workdir / "pg", self.pg_port)
        pidfile = self.workdir / "pg" / "data" / "postmaster.pid"
        self.postmaster_pid = int(pidfile.read_text().split()[0])
        migrate.upgrade(self.db_url, configure_logging=False)
        with self.connect() as conn:
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers', "
                    "'max_connections', 'full_page_writes', 'server_version')"
                ).fetchall()
            )
        self.results["postgres"] = settings

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(
            f"host=127.0.0.1 port={self.pg_port} user=postgres dbname={embedded_pg.DEFAULT_DB}",
            autocommit=True,
        )

    def receiver_env(self, port: int) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RECEIVER_") and k != "DATABASE_URL"
        }
        env.update(
            DATABASE_URL=self.db_url,
            RECEIVER_HOST="127.0.0.1",
            RECEIVER_PORT=str(port),
            RECEIVER_WEBHOOK_TOKEN=self.webhook_token,
            RECEIVER_API_TOKEN=self.api_token,
            RECEIVER_GATEWAY_TOKEN=self.gateway_token,
            RECEIVER_LOG_LEVEL="WARNING",
            RECEIVER_MAX_ISOLATED_PERCENT=str(MAX_ISOLATED_PERCENT),
            # Breakers tripped by the isolating run stay open until the end, so that no
            # sweep (open -> half_open) writes in the background of a later measurement.
            RECEIVER_BREAKER_OPEN_SECONDS="3600",
            RECEIVER_BREAKER_MAX_OPEN_SECONDS="3600",
        )
        overrides = {
            "RECEIVER_" + k.removeprefix("BENCH_RECEIVER_"): v
            for k, v in os.environ.items()
            if k.startswith("BENCH_RECEIVER_")
        }
        env.update(overrides)
        self.results["receiver_overrides"] = overrides
        return env

    @property
    def receiver(self) -> Server | None:
        return self.receivers[0] if self.receivers else None

    @property
    def receiver_pids(self) -> list[int]:
        return [r.pid for r in self.receivers]

    def start_servers(self) -> None:
        port = embedded_pg.free_port()
        self.receiver_url = f"http://127.0.0.1:{port}"
        env = self.receiver_env(port)
        cmd = [sys.executable, "-m", "receiver", "serve"]
        if WORKERS > 1 or UVLOOP:
            cmd = [sys.executable, "-m", "bench.experiment"]
            env.update(PYTHONPATH=str(BENCH_DIR.parent), BENCH_UVLOOP="1" if UVLOOP else "0")
            env["BENCH_REUSE_PORT"] = "1" if WORKERS > 1 else "0"
        say(f"starting the receiver on {self.receiver_url} ({WORKERS} process(es))")
        for n in range(WORKERS):
            server = Server(f"receiver-{n}", cmd, env, self.workdir / f"receiver-{n}.log")
            self.receivers.append(server)
            server.wait_http(self.receiver_url + "/readyz")
        hport = embedded_pg.free_port()
        self.hello_url = f"http://127.0.0.1:{hport}"
        say(f"starting the hello-world server on {self.hello_url}")
        self.hello = Server(
            "hello",
            [sys.executable, "-m", "bench.hello", "--port", str(hport)],
            {
                **os.environ,
                "PYTHONPATH": str(BENCH_DIR.parent),
                "BENCH_UVLOOP": "1" if UVLOOP else "0",
            },
            self.workdir / "hello.log",
        )
        self.hello.wait_http(self.hello_url + "/v1/tenants/t/breaker")

    async def register_tenants(self) -> None:
        say(f"registering {TENANTS} tenants through PUT /v1/tenants/{{id}}")
        headers = {"Authorization": f"Bearer {self.api_token}"}
        sem = asyncio.Semaphore(16)
        async with aiohttp.ClientSession(headers=headers) as http:

            async def put(n: int) -> None:
                async with (
                    sem,
                    http.put(
                        f"{self.receiver_url}/v1/tenants/tenant-{n}",
                        json={"tier": tier_of(n), "hourly_cost": 10.0 * (n % 7 + 1)},
                    ) as r,
                ):
                    if r.status != 200:
                        raise BenchError(f"PUT tenant-{n}: {r.status} {await r.text()}")

            await asyncio.gather(*(put(n) for n in range(TENANTS)))

    async def check_same_body(self) -> None:
        """The hello-world server must answer the very bytes the receiver answers."""
        headers = {"Authorization": f"Bearer {self.api_token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            bodies = []
            for base in (self.receiver_url, self.hello_url):
                async with http.get(f"{base}/v1/tenants/tenant-7/breaker") as r:
                    bodies.append((r.status, await r.read()))
        # Alike but for view_age_ms, which each server computes when it answers.
        (st0, b0), (st1, b1) = bodies
        same = (st0, _without_age(b0)) == (st1, _without_age(b1))
        self.results["read_body"] = {
            "receiver": bodies[0][1].decode(),
            "hello": bodies[1][1].decode(),
            "identical": same,
        }
        if not same:
            say(f"WARNING: bodies differ: receiver {bodies[0]!r}, hello {bodies[1]!r}")

    # --- measured runs ----------------------------------------------------------------
    #
    # A figure and the one it is compared with (receiver reads and hello-world, record-only
    # ingest and its pgbench floor) run interleaved, A B B A A B in slices of a third of
    # the duration each, so that whatever else the machine does weighs on both alike.

    def reads_load(self, base_url: str) -> Callable[[float, int], LoadResult]:
        def run(seconds: float, _slice: int) -> LoadResult:
            return wrk(
                base_url,
                "reads.lua",
                [str(TENANTS), self.gateway_token],
                connections=READ_CONNECTIONS,
                threads=WRK_THREADS,
                seconds=seconds,
            )

        return run

    def ingest_load(self, mode: str, run_id: int) -> Callable[[float, int], LoadResult]:
        def run(seconds: float, slice_no: int) -> LoadResult:
            return wrk(
                self.receiver_url,
                "webhook.lua",
                # A run id of its own per slice: every alert of the bench is distinct.
                [f"{run_id + slice_no:02x}", mode, str(TENANTS), self.webhook_token],
                connections=INGEST_CONNECTIONS,
                threads=WRK_THREADS,
                seconds=seconds,
            )

        return run

    def floor_load(self, script: str) -> Callable[[float, int], LoadResult]:
        binary = pgbench_binary(Path(embedded_pg._bindir()))

        def run(seconds: float, slice_no: int) -> LoadResult:
            return pgbench(
                binary,
                port=self.pg_port,
                db=embedded_pg.DEFAULT_DB,
                script=script,
                clients=INGEST_CONNECTIONS,
                threads=2,
                seconds=seconds,
                workdir=self.workdir / f"slice-{slice_no}",
            )

        return run

    def _slice(
        self, name: str, run: Callable[[float, int], LoadResult], pids: list[int], seconds: float,
        slice_no: int,
    ) -> LoadResult:  # fmt: skip
        with measure_cpu(pids, self.postmaster_pid) as cpu:
            result = run(seconds, slice_no)
        result.cpu = cpu.as_dict()
        say(
            f"  {name}: {result.rate:,.0f}/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, failures {result.failures}, cpu {result.cpu}"
        )
        return result

    def _record(self, name: str, result: LoadResult) -> None:
        self.results.setdefault("runs", {})[name] = result.as_dict()
        if result.cpu.get("other_pct", 0) > OTHER_CPU_WARNING:
            self.results.setdefault("busy_machine", {})[name] = result.cpu["other_pct"]

    def single(
        self, name: str, run: Callable[[float, int], LoadResult], pids: list[int]
    ) -> LoadResult:
        result = self._slice(name, run, pids, SECONDS, 0)
        self._record(name, result)
        return result

    def paired(
        self,
        a: tuple[str, Callable[[float, int], LoadResult], list[int]],
        b: tuple[str, Callable[[float, int], LoadResult], list[int]],
    ) -> None:
        per = max(1.0, round(SECONDS / ROUNDS))
        order = [a, b, b, a, a, b, b, a][: 2 * ROUNDS]
        parts: dict[str, list[LoadResult]] = {a[0]: [], b[0]: []}
        for n, (name, run, pids) in enumerate(order):
            parts[name].append(self._slice(name, run, pids, per, n))
        for name, results in parts.items():
            merged = merge(results)
            self._record(name, merged)
            say(
                f"{name}: {merged.rate:,.0f}/s over {merged.seconds:.0f} s, "
                f"p50 {merged.p50_ms:.2f} ms, p99 {merged.p99_ms:.2f} ms"
            )

    def max_audit_id(self) -> int:
        with self.connect() as conn:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()[0])

    def audit_counts(self, after_id: int) -> dict[str, int]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT action, count(*) FROM audit_log WHERE id > %s GROUP BY action "
                "ORDER BY action",
                (after_id,),
            ).fetchall()
        return {a: int(n) for a, n in rows}

    async def large_deliveries(self) -> dict[str, Any]:
        """POST 1,000 alerts at once, and one isolating delivery of 10,000; the answer
        comes after commit, so its time is the time to commit (parsing, every statement
        and the COMMIT itself)."""
        headers = {
            "Authorization": f"Bearer {self.webhook_token}",
            "Content-Type": "application/json",
        }
        base = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
        out: dict[str, Any] = {}
        async with aiohttp.ClientSession(headers=headers) as http:

            async def post(body: bytes) -> tuple[float, dict[str, Any]]:
                t0 = time.perf_counter()
                async with http.post(f"{self.receiver_url}/v1/alertmanager", data=body) as r:
                    answer = await r.json()
                    elapsed = time.perf_counter() - t0
                    if r.status != 200:
                        raise BenchError(f"large delivery: {r.status} {answer}")
                return elapsed, answer

            def payload(kind: str, rep: int, count: int = LARGE_ALERTS) -> bytes:
                alerts = []
                for n in range(count):
                    if kind == "record":
                        labels = {
                            "alertname": "TenantLatencyHigh",
                            "severity": "warning",
                            "tenant_id": f"tenant-{n}",
                        }
                    else:
                        labels = {
                            "alertname": "TenantErrorRatioHigh",
                            "isolate": "true",
                            "severity": "critical",
                            "tenant_id": f"burst{rep}-{n}",
                        }
                    alerts.append(
                        {
                            "status": "firing",
                            "labels": labels,
                            "annotations": {"summary": "over the threshold for 5m"},
                            "startsAt": (base + timedelta(minutes=rep)).isoformat(),
                            "endsAt": "0001-01-01T00:00:00Z",
                            "generatorURL": "http://prometheus.bench:9090/graph",
                            "fingerprint": f"{0xF0 + rep:02x}{n:014x}",
                        }
                    )
                return json.dumps(
                    {
                        "version": "4",
                        "groupKey": f'{{}}:{{alertname="{labels["alertname"]}"}}',
                        "truncatedAlerts": 0,
                        "status": "firing",
                        "receiver": "blast-radius",
                        "groupLabels": {"alertname": labels["alertname"]},
                        "commonLabels": {"alertname": labels["alertname"]},
                        "commonAnnotations": {},
                        "externalURL": "http://alertmanager.bench:9093",
                        "alerts": alerts,
                    }
                ).encode()

            record_times = []
            for rep in range(LARGE_REPEATS):
                elapsed, answer = await post(payload("record", rep))
                if answer.get("new") != LARGE_ALERTS:
                    raise BenchError(f"large delivery recorded {answer.get('new')} new alerts")
                record_times.append(elapsed)
            out["record_seconds"] = [round(t, 3) for t in record_times]
            first_audit = self.max_audit_id()
            elapsed, answer = await post(payload("isolate", 9))
            out["isolating_seconds"] = round(elapsed, 3)
            out["isolating_transitions"] = answer.get("breaker_transitions")
            out["isolating_audit_rows"] = self.audit_counts(first_audit)
            elapsed, answer = await post(payload("isolate", 10, HUGE_ALERTS))
            out["huge_isolating_seconds"] = round(elapsed, 3)
            out["huge_isolating_transitions"] = answer.get("breaker_transitions")
        return out

    # --- the whole run ---------------------------------------------------------------

    def run(self) -> None:
        assert self.receiver is not None and self.hello is not None
        asyncio.run(self.register_tenants())
        asyncio.run(self.check_same_body())
        with self.connect() as conn:
            conn.execute((BENCH_DIR / "floor_setup.sql").read_text())
        receiver, hello = self.receiver_pids, [self.hello.pid]

        # Reads first, while every tenant is closed: the hello-world server answers what
        # the receiver answers for a closed tenant.
        say(
            f"breaker reads: GET /v1/tenants/{{id}}/breaker, {READ_CONNECTIONS} connections, "
            "receiver and hello-world interleaved"
        )
        for url in (self.hello_url, self.receiver_url):
            self.reads_load(url)(WARMUP_SECONDS, 0)
        self.paired(
            ("reads_hello", self.reads_load(self.hello_url), hello),
            ("reads_receiver", self.reads_load(self.receiver_url), receiver),
        )

        say(
            f"record-only ingest: POST /v1/alertmanager, {INGEST_CONNECTIONS} connections, "
            "and its pgbench floor, interleaved"
        )
        self.ingest_load("record", 0x70)(WARMUP_SECONDS, 0)
        first_audit = self.max_audit_id()
        self.paired(
            ("ingest_record", self.ingest_load("record", 0x10), receiver),
            # The receiver's pids: its background work (sweeper, listener, outbox) while
            # pgbench runs shows as its own, not as "other".
            ("floor_record", self.floor_load("floor_record.sql"), receiver),
        )
        self.results["runs"]["ingest_record"]["audit_rows"] = self.audit_counts(first_audit)

        say(f"large deliveries: {LARGE_ALERTS} alerts in one POST, x{LARGE_REPEATS}")
        self.results["large_delivery"] = asyncio.run(self.large_deliveries())
        say(f"  {self.results['large_delivery']}")

        say(f"isolating ingest: POST /v1/alertmanager, {INGEST_CONNECTIONS} connections")
        first_audit = self.max_audit_id()
        self.single("ingest_isolating", self.ingest_load("isolate", 0x20), receiver)
        self.results["runs"]["ingest_isolating"]["audit_rows"] = self.audit_counts(first_audit)
        say("isolating floor: pgbench, every transaction a trip under the guard lock")
        self.single("floor_isolating", self.floor_load("floor_isolating.sql"), receiver)

        mems = [memory_kib(pid) for pid in self.receiver_pids]
        self.results["receiver_memory_kib"] = {
            k: sum(m[k] for m in mems) for k in ("VmRSS", "VmHWM")
        }
        self.results["hello_memory_kib"] = memory_kib(self.hello.pid)

    def stop(self) -> None:
        for server in [self.hello, *self.receivers]:
            if server is not None:
                server.stop()
        embedded_pg.stop(self.workdir / "pg")


# --- report ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def report(results: dict[str, Any]) -> list[dict[str, Any]]:
    runs = results["runs"]
    rows: list[dict[str, Any]] = []

    def row(figure: str, value: str, target: str = "", ratio: float | None = None,
            ok: bool | None = None) -> None:  # fmt: skip
        rows.append(
            {
                "figure": figure,
                "value": value,
                "target": target,
                "ratio": None if ratio is None else round(ratio, 3),
                "pass": ok,
            }
        )

    def load(r: dict[str, Any], unit: str) -> str:
        lat = r["latency_ms"]
        return f"{r['per_second']:,.0f} {unit}/s, p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms"

    def cpu(r: dict[str, Any], unit: str) -> str:
        """What the server spent: percent of one core, and CPU time per request."""
        pct = r["cpu"]["receiver_pct"]
        each_ms = pct * 10 / r["per_second"] if r["per_second"] else 0.0
        each = f"{each_ms:.2f} ms" if each_ms >= 1 else f"{each_ms * 1000:.0f} us"
        return f"server CPU {pct:.0f}% of a core, {each} per {unit}"

    floor = runs["floor_record"]
    floor_iso = runs["floor_isolating"]
    for name, label in (("ingest_record", "record-only"), ("ingest_isolating", "isolating")):
        r = runs[name]
        failures = r["non2xx"] + sum(r["errors"].get(k, 0) for k in ("connect", "read", "timeout"))
        row(
            f"ingest {label} (32 conn)",
            f"{load(r, 'deliveries')}, {r['requests']:,} sent, {failures} not 2xx; "
            + cpu(r, "delivery"),
            "no non-2xx",
            None,
            failures == 0,
        )
        # Issue 14's targets: record-only 0.5 of the floor, isolating 0.1 of it (and 0.5
        # of the guard-lock floor, below); p99 of record-only under 100 ms.
        wanted = 0.5 if name == "ingest_record" else 0.1
        ratio = r["per_second"] / floor["per_second"]
        row(
            f"  ratio {label} / floor",
            f"{r['per_second']:,.0f} / {floor['per_second']:,.0f}",
            f">= {wanted:.2f}",
            ratio,
            ratio >= wanted,
        )
        if name == "ingest_record":
            p99 = r["latency_ms"]["p99"]
            row("  p99, record-only (32 conn)", f"{p99:.0f} ms", "< 100 ms", None, p99 < 100)
    row("floor: pgbench record-only tx (32 conn)", load(floor, "tx"))
    row("floor: pgbench isolating tx, guard lock (32 conn)", load(floor_iso, "tx"))
    iso_ratio = runs["ingest_isolating"]["per_second"] / floor_iso["per_second"]
    row(
        "  ratio isolating / guard-lock floor",
        f"{runs['ingest_isolating']['per_second']:,.0f} / {floor_iso['per_second']:,.0f}",
        ">= 0.50",
        iso_ratio,
        iso_ratio >= 0.5,
    )

    large = results["large_delivery"]
    worst = max(large["record_seconds"])
    row(
        f"1,000-alert delivery, record-only (worst of {len(large['record_seconds'])})",
        f"{worst * 1000:.0f} ms (each: "
        + ", ".join(f"{t * 1000:.0f}" for t in large["record_seconds"])
        + " ms)",
        "< 1000 ms",
        None,
        worst < 1.0,
    )
    row(
        "1,000-alert delivery, isolating (1,000 trips)",
        f"{large['isolating_seconds'] * 1000:.0f} ms",
        "(information)",
    )
    huge = large["huge_isolating_seconds"]
    row(
        f"{HUGE_ALERTS:,}-alert delivery, isolating "
        f"({large['huge_isolating_transitions']:,} trips)",
        f"{huge * 1000:.0f} ms",
        "< 2000 ms",
        None,
        huge < 2.0,
    )

    hello, mine = runs["reads_hello"], runs["reads_receiver"]
    row(
        f"breaker reads, receiver ({READ_CONNECTIONS} conn)",
        f"{load(mine, 'req')}; {cpu(mine, 'read')}",
    )
    row(
        f"hello-world, same JSON ({READ_CONNECTIONS} conn)",
        f"{load(hello, 'req')}; {cpu(hello, 'read')}",
    )
    ratio = mine["per_second"] / hello["per_second"]
    read_failures = mine["non2xx"] + hello["non2xx"]
    row(
        "  ratio reads / hello-world",
        f"{mine['per_second']:,.0f} / {hello['per_second']:,.0f}"
        + (f", {read_failures} not 2xx" if read_failures else ""),
        ">= 0.90",
        ratio,
        ratio >= 0.9 and read_failures == 0,
    )
    mem = results["receiver_memory_kib"]
    row(
        "receiver resident memory after the runs"
        + (f" ({WORKERS} processes)" if WORKERS > 1 else ""),
        f"{mem['VmRSS'] / 1024:.0f} MiB (peak {mem['VmHWM'] / 1024:.0f} MiB)",
        "< 200 MiB",
        None,
        mem["VmRSS"] / 1024 < 200,
    )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ("figure", "value", "target", "ratio", "pass")
    cells = [
        (
            r["figure"],
            r["value"],
            r["target"],
            "" if r["ratio"] is None else f"{r['ratio']:.2f}",
            "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL"),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print()
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    print()


def main() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    bench = Bench(workdir)
    bench.results["machine"] = machine()
    bench.results["settings"] = {
        "seconds": SECONDS,
        "tenants": TENANTS,
        "ingest_connections": INGEST_CONNECTIONS,
        "read_connections": READ_CONNECTIONS,
        "wrk_threads": WRK_THREADS,
        "max_isolated_percent": MAX_ISOLATED_PERCENT,
        "receiver_processes": WORKERS,
        "uvloop": UVLOOP,
    }
    say(f"machine: {bench.results['machine']}; working in {workdir}")
    try:
        bench.start_postgres()
        bench.start_servers()
        bench.run()
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        if bench.receiver is not None:
            print(f"receiver log:\n{bench.receiver.tail()}", file=sys.stderr)
        return 1
    finally:
        bench.stop()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")

    rows = report(bench.results)
    bench.results["table"] = rows
    bench.results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    bench.results["wall_seconds"] = round(time.monotonic() - started, 1)
    print_table(rows)
    out = BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(bench.results, indent=2, default=str) + "\n")
    say(f"written {out / 'latest.json'} ({bench.results['wall_seconds']} s in all)")
    busy = bench.results.get("busy_machine")
    if busy:
        say(
            "WARNING: other processes used CPU during "
            + ", ".join(f"{k} ({v:.0f}% of a core)" for k, v in busy.items())
            + ": those figures are low; run again on a quiet machine"
        )
    failed = [r["figure"].strip() for r in rows if r["pass"] is False]
    if failed:
        say("targets missed: " + "; ".join(failed) + " (see bench/README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
