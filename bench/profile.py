"""Profile the receiver under one of the bench's loads with py-spy (not part of make bench).

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile record     # or: isolate, reads, large
    -> bench/results/profile-<load>.txt         the hottest frames, own and total samples
       bench/results/profile-<load>.collapsed   folded stacks (flame graph input)

Starts the same private PostgreSQL and receiver as make bench, registers the tenants,
warms up, then samples the receiver for BENCH_SECONDS while wrk drives it (`large`:
while it takes make bench's large deliveries, the 10,000-trip one last). SQLAlchemy's
async layer runs statements in greenlets, which py-spy shows as stacks of their own: read
the own-time list, not only the tree.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import __main__ as bench_main
from bench.load import BENCH_DIR, wrk


def summarise(collapsed: Path, top: int = 40) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"{samples} samples", "", "own time:"]
    out += [f"{n / samples:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["", "total time (frame on the stack):"]
    out += [f"{n / samples:6.1%}  {f}" for f, n in total.most_common(top * 2)]
    return "\n".join(out)


def main() -> int:
    load = sys.argv[1] if len(sys.argv) > 1 else "record"
    if load not in ("record", "isolate", "reads", "large"):
        print("usage: python -m bench.profile [record|isolate|reads|large]", file=sys.stderr)
        return 2
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="receiver-profile-"))
    b = bench_main.Bench(workdir)
    out = BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    collapsed = out / f"profile-{load}.collapsed"
    seconds = bench_main.SECONDS
    tenants = str(bench_main.TENANTS)
    try:
        b.start_postgres()
        b.start_servers()
        assert b.receiver is not None
        asyncio.run(b.register_tenants())

        def drive(run_id: str, duration: float) -> object:
            if load == "reads":
                script, args = "reads.lua", [tenants, b.gateway_token]
                conns = bench_main.READ_CONNECTIONS
            else:
                script, args = "webhook.lua", [run_id, load, tenants, b.webhook_token]
                conns = bench_main.INGEST_CONNECTIONS
            return wrk(
                b.receiver_url,
                script,
                args,
                connections=conns,
                threads=bench_main.WRK_THREADS,
                seconds=duration,
            )

        cmd = [spy, "record", "--pid", str(b.receiver.pid), "--rate", "200"]
        cmd += ["--format", "raw", "--output", str(collapsed)]
        if load == "large":
            spy_proc = subprocess.Popen(cmd)
            time.sleep(1)  # py-spy attached
            print(asyncio.run(b.large_deliveries()))
            spy_proc.send_signal(signal.SIGINT)
            spy_proc.wait(timeout=30)
        else:
            drive("7f", 3)  # warm-up
            spy_proc = subprocess.Popen([*cmd, "--duration", str(int(seconds))])
            print(drive("7e", seconds))
            spy_proc.wait(timeout=seconds + 30)
        report = summarise(collapsed)
        (out / f"profile-{load}.txt").write_text(report + "\n")
        print(report)
    finally:
        b.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
