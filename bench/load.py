"""Load generators: wrk (HTTP) and pgbench (the database floor), each bounded in time."""

from __future__ import annotations

import glob
import json
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import BenchError

BENCH_DIR = Path(__file__).resolve().parent
# A run that overshoots its duration by this much is killed: every loop is bounded.
_GRACE_SECONDS = 30


@dataclass
class LoadResult:
    """What one load run measured. Latencies in milliseconds."""

    tool: str
    requests: int
    seconds: float
    non2xx: int
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first_error: str = ""
    cpu: dict[str, float] = field(default_factory=dict)
    # Rates of the slices a merged result was made of.
    slices: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> int:
        """Answers that were not 2xx, plus requests that got no answer at all."""
        e = self.errors
        return self.non2xx + e.get("connect", 0) + e.get("read", 0) + e.get("timeout", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "per_second": round(self.rate, 1),
            "non2xx": self.non2xx,
            "errors": self.errors,
            "first_error": self.first_error,
            "latency_ms": {
                "p50": round(self.p50_ms, 2),
                "p90": round(self.p90_ms, 2),
                "p99": round(self.p99_ms, 2),
                "max": round(self.max_ms, 2),
            },
            "cpu": self.cpu,
            "slices_per_second": [round(r, 1) for r in self.slices],
        }


def merge(parts: list[LoadResult]) -> LoadResult:
    """One result from the slices of an interleaved run: counts and CPU added up (CPU
    weighted by time), p50 and p90 the median of the slices', p99 and max the worst."""
    if len(parts) == 1:
        return parts[0]
    seconds = sum(p.seconds for p in parts)
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p.errors.items():
            errors[k] = errors.get(k, 0) + v
    cpu = {
        k: round(sum(p.cpu.get(k, 0) * p.seconds for p in parts) / seconds, 1) for k in parts[0].cpu
    }
    return LoadResult(
        tool=parts[0].tool,
        requests=sum(p.requests for p in parts),
        seconds=seconds,
        non2xx=sum(p.non2xx for p in parts),
        errors=errors,
        p50_ms=statistics.median(p.p50_ms for p in parts),
        p90_ms=statistics.median(p.p90_ms for p in parts),
        p99_ms=max(p.p99_ms for p in parts),
        max_ms=max(p.max_ms for p in parts),
        first_error=next((p.first_error for p in parts if p.first_error), ""),
        cpu=cpu,
        slices=[p.rate for p in parts],
    )


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found: run scripts/system-deps.sh --with-bench")
    return found


def wrk(
    url: str,
    script: str,
    args: list[str],
    *,
    connections: int,
    threads: int,
    seconds: float,
    timeout_s: int = 10,
) -> LoadResult:
    cmd = [
        _tool("wrk"),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(BENCH_DIR / script),
        url,
        "--",
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + _GRACE_SECONDS, check=False
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    lat = data["latency_us"]
    return LoadResult(
        tool="wrk",
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non2xx=data["non2xx"],
        errors=data["errors"],
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        first_error=data.get("first_error", ""),
    )


def pgbench_binary(pg_bindir: Path) -> str:
    """pgbench of the server's own version when it is there (Debian: postgresql-NN)."""
    own = pg_bindir / "pgbench"
    if own.exists():
        return str(own)
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)
    return versioned[0] if versioned else _tool("pgbench")


def pgbench(
    binary: str,
    *,
    port: int,
    db: str,
    script: str,
    clients: int,
    threads: int,
    seconds: float,
    workdir: Path,
) -> LoadResult:
    """Runs `script` from bench/ for `seconds`; per-transaction latencies from its log."""
    logdir = workdir / f"pgbench-{Path(script).stem}"
    logdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        binary,
        "-n",  # no vacuum of pgbench's own tables: there are none
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(threads),
        "-T",
        str(max(1, round(seconds))),
        "-f",
        str(BENCH_DIR / script),
        "-l",
        f"--log-prefix={logdir / 'tx'}",
        db,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + _GRACE_SECONDS, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"pgbench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    latencies_us: list[int] = []
    first = last = None
    for path in logdir.glob("tx*"):
        for ln in path.read_text().splitlines():
            parts = ln.split()
            # client_id transaction_no time script_no time_epoch time_us
            if len(parts) < 6 or not parts[2].isdigit():
                continue  # a failed transaction logs "failed"/"serialization" here
            latencies_us.append(int(parts[2]))
            end = int(parts[4]) + int(parts[5]) / 1e6
            first = end if first is None else min(first, end)
            last = end if last is None else max(last, end)
    failed = 0
    for ln in proc.stdout.splitlines():
        if ln.startswith("number of failed transactions:"):
            failed = int(ln.split(":")[1].split()[0])
    if not latencies_us:
        raise BenchError(f"pgbench logged no transactions:\n{proc.stdout}\n{proc.stderr}")
    latencies_us.sort()
    tps = _value(proc.stdout, "tps = ")
    n = len(latencies_us)
    return LoadResult(
        tool="pgbench",
        requests=n,
        seconds=n / tps if tps else float(seconds),
        non2xx=failed,
        errors={},
        p50_ms=statistics.median(latencies_us) / 1000,
        p90_ms=latencies_us[min(n - 1, int(n * 0.90))] / 1000,
        p99_ms=latencies_us[min(n - 1, int(n * 0.99))] / 1000,
        max_ms=latencies_us[-1] / 1000,
    )


def _value(text: str, prefix: str) -> float:
    for ln in text.splitlines():
        if ln.startswith(prefix):
            return float(ln[len(prefix) :].split()[0])
    raise BenchError(f"no {prefix!r} in pgbench's output:\n{text}")
