"""A private PostgreSQL cluster for `make run`, the tests, the demo and the benchmarks.

Production points DATABASE_URL at a real server; this exists so that a fresh machine
needs no set-up. It uses the machine's own PostgreSQL binaries (Debian's postgresql
package). PostgreSQL refuses to run as root, so as root the cluster is owned by and run
as the `postgres` system user.

    python -m receiver.embedded_pg start --dir .localpg --port 55432   # prints the URL
    python -m receiver.embedded_pg stop --dir .localpg
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DB = "receiver"


class EmbeddedPostgresError(RuntimeError):
    pass


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if not candidates:
        raise EmbeddedPostgresError(
            "PostgreSQL server binaries not found: apt-get install postgresql"
        )
    return Path(candidates[0]).parent


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def url(port: int, db: str = DEFAULT_DB) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{db}"


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EmbeddedPostgresError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(datadir: Path, port: int, db: str = DEFAULT_DB) -> str:
    """Initialise (once) and start a cluster in `datadir`; create `db`; return its URL.

    Idempotent: a cluster already running there on that port is reused."""
    datadir = datadir.resolve()
    bindir = _bindir()
    pgdata = datadir / "data"
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        datadir.mkdir(parents=True, exist_ok=True)
        os.chown(datadir, pw.pw_uid, pw.pw_gid)
        # runuser needs to reach the directory through its parents.
        for parent in datadir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    else:
        datadir.mkdir(parents=True, exist_ok=True)
    if not (pgdata / "PG_VERSION").exists():
        _run(
            _as_owner(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        )
    running = (pgdata / "postmaster.pid").exists() and _port_open(port)
    if not running:
        opts = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {datadir} "
            "-c max_connections=200 -c shared_buffers=128MB -c fsync=on"
        )
        _run(
            _as_owner(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-o",
                    opts,
                    "-l",
                    str(datadir / "postgres.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
        )
    create_database(port, db)
    return url(port, db)


def create_database(port: int, db: str) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg.connect(
                f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True
            )
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{db}"')


def stop(datadir: Path) -> None:
    pgdata = datadir.resolve() / "data"
    if not (pgdata / "postmaster.pid").exists():
        return
    _run(_as_owner([str(_bindir() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m receiver.embedded_pg")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=Path(".localpg"))
    parser.add_argument("--port", type=int, default=55432)
    parser.add_argument("--db", default=DEFAULT_DB)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start(args.dir, args.port, args.db))
        else:
            stop(args.dir)
    except EmbeddedPostgresError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
