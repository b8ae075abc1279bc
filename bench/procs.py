"""Processes of a benchmark run and the CPU and memory they use, read from /proc."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) of a process; with `children`, of its reaped children too."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / _TICK


def postgres_cpu(postmaster_pid: int) -> float:
    """CPU seconds of a PostgreSQL cluster: the postmaster, the backends it has reaped
    (counted in its children's time) and the ones alive now."""
    total = process_cpu(postmaster_pid, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            f = _stat_fields(int(entry.name))
        except (OSError, IndexError):
            continue
        if int(f[1]) == postmaster_pid:
            total += (int(f[11]) + int(f[12])) / _TICK
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return total - idle, total


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


@dataclass
class CpuUse:
    """CPU used during a measured phase, as percent of one core (the machine has
    `cores` of them, so the machine's ceiling is cores * 100)."""

    seconds: float = 0.0
    receiver: float = 0.0
    postgres: float = 0.0
    load_generator: float = 0.0
    machine: float = 0.0
    # Everything else on the machine: other people's work skews a run; the report says so.
    other: float = 0.0
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    def as_dict(self) -> dict[str, float]:
        return {
            "receiver_pct": round(self.receiver, 1),
            "postgres_pct": round(self.postgres, 1),
            "load_generator_pct": round(self.load_generator, 1),
            "other_pct": round(self.other, 1),
            "machine_pct": round(self.machine, 1),
            "machine_max_pct": self.cores * 100,
        }


@contextmanager
def measure_cpu(server_pids: list[int], postmaster_pid: int) -> Iterator[CpuUse]:
    """CPU of the measured server processes (`server_pids`), PostgreSQL, the load generator
    and the rest of the machine while the block runs."""
    use = CpuUse()
    t0 = time.monotonic()
    s0 = sum(process_cpu(pid) for pid in server_pids)
    p0 = postgres_cpu(postmaster_pid)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, m0 = machine_busy()
    yield use
    b1, m1 = machine_busy()
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p1 = postgres_cpu(postmaster_pid)
    s1 = sum(process_cpu(pid) for pid in server_pids)
    elapsed = time.monotonic() - t0
    use.seconds = elapsed
    pct = 100.0 / elapsed if elapsed > 0 else 0.0
    use.receiver = (s1 - s0) * pct
    use.postgres = (p1 - p0) * pct
    # Load generators (wrk, pgbench) are children this process waits for: their time
    # lands in RUSAGE_CHILDREN when they are reaped, before this block ends.
    use.load_generator = ((c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)) * pct
    use.machine = (b1 - b0) / (m1 - m0) * use.cores * 100 if m1 > m0 else 0.0
    use.other = max(0.0, use.machine - use.receiver - use.postgres - use.load_generator)


class Server:
    """A long-running child process (the receiver, the hello-world server)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._logf = log.open("wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer {url} in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._logf.flush()
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._logf.close()
