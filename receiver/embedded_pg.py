"""A private PostgreSQL cluster for `make run`, the tests, the demo and the benchmarks.

Production points DATABASE_URL at a real server; this exists so that a fresh machine
needs no set-up. It uses the machine's own PostgreSQL binaries (Debian's postgresql
package). PostgreSQL refuses to run as root, so as root the cluster is owned by and run
as the `postgres` system user.

    python -m receiver.embedded_pg start --dir .localpg --port 55432   # prints the URLs
    python -m receiver.embedded_pg stop --dir .localpg

`start` (what `make run` uses) runs the cluster the way production should: passwords
(scram-sha-256) on TCP, peer authentication on its Unix socket (no `trust`), an owner role
that `migrate` runs as and an app role that `serve` runs as (DESIGN.md "Least privilege").
The passwords are in DIR/pgpass (mode 0600, libpq's PGPASSFILE), never in a URL. The
`start()` function without roles (trust, a throw-away directory) is for the test suite,
the demo and the benchmarks.
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
OWNER_ROLE = "receiver_owner"
APP_ROLE = "receiver_app"
SUPERUSER = "postgres"


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


def start(datadir: Path, port: int, db: str = DEFAULT_DB, *, pwfile: Path | None = None) -> str:
    """Initialise (once) and start a cluster in `datadir`; create `db`; return its URL.

    Idempotent: a cluster already running there on that port is reused. Without `pwfile`
    the cluster trusts local connections (a throw-away one for tests); with it, a new
    cluster takes that superuser password over TCP and peer on its socket."""
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
                    *(
                        ["--auth-local=peer", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
                        if pwfile is not None
                        else ["--auth=trust"]
                    ),
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        )
    running = _running_port(pgdata)
    if running is not None and running != port:
        raise EmbeddedPostgresError(
            f"the cluster in {datadir} is already running on port {running}, not {port}: "
            f"use LOCALPG_PORT={running}, or stop it first (make stop-localpg)"
        )
    if running is None:
        if _port_open(port):
            raise EmbeddedPostgresError(port_taken_message(port))
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


def _running_port(pgdata: Path) -> int | None:
    """The port of the cluster running from `pgdata`, or None when it is not running."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return port


def _who_listens(port: int) -> str:
    """What listens on 127.0.0.1:port, as well as the machine lets us see."""
    ss = shutil.which("ss")
    if ss:
        proc = subprocess.run(
            [ss, "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
        )
        users = sorted({part.split('"')[1] for part in proc.stdout.split("((")[1:] if '"' in part})
        if users:
            return "a process named " + ", ".join(users)
    try:
        import psycopg

        psycopg.connect(f"host=127.0.0.1 port={port} dbname=postgres connect_timeout=2").close()
        return "a PostgreSQL server"
    except psycopg.OperationalError as exc:
        if "password" in str(exc) or "authentication" in str(exc) or "role" in str(exc):
            return "a PostgreSQL server"
    return "another program"


def port_taken_message(port: int) -> str:
    return (
        f"port {port} on 127.0.0.1 is taken by {_who_listens(port)}, so the local PostgreSQL "
        f"cannot start there. Pick another port: make run LOCALPG_PORT={free_port()} "
        "(any free port works; this one is free now)"
    )


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


def start_with_roles(datadir: Path, port: int, db: str = DEFAULT_DB) -> tuple[str, str, Path]:
    """`make run`'s cluster: (owner URL, app URL, pgpass path). Passwords on TCP, peer on
    the socket; the owner owns `db`, the app role is a plain LOGIN role (migrate grants it
    what serve needs). Idempotent; a cluster made by `start()` (trust) is converted."""
    old_umask = os.umask(0o077)  # every file made here: 0600, directories 0700
    try:
        datadir = datadir.resolve()
        datadir.mkdir(parents=True, exist_ok=True)
        secrets_file = datadir / "passwords"
        passwords = _passwords(secrets_file)
        pgpass = datadir / "pgpass"
        pgpass.write_text(
            "".join(f"127.0.0.1:{port}:*:{role}:{pw}\n" for role, pw in passwords.items())
        )
        pgpass.chmod(0o600)
        os.environ["PGPASSFILE"] = str(pgpass)  # libpq reads it: no password in any URL
        pwfile = datadir / "superuser_password"
        pwfile.write_text(passwords[SUPERUSER] + "\n")
        if os.geteuid() == 0:  # initdb runs as postgres and must read it
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        try:
            start(datadir, port, db, pwfile=pwfile)
        finally:
            pwfile.unlink(missing_ok=True)
        pgdata = datadir / "data"
        _secure(pgdata, port, passwords, db)
        return (
            f"postgresql+psycopg://{OWNER_ROLE}@127.0.0.1:{port}/{db}",
            f"postgresql+psycopg://{APP_ROLE}@127.0.0.1:{port}/{db}",
            pgpass,
        )
    finally:
        os.umask(old_umask)


def _passwords(path: Path) -> dict[str, str]:
    import secrets

    roles = (SUPERUSER, OWNER_ROLE, APP_ROLE)
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            role, _, pw = line.partition(" ")
            known[role] = pw
    if set(roles) - known.keys():
        known = {r: known.get(r) or secrets.token_urlsafe(24) for r in roles}
        path.write_text("".join(f"{r} {pw}\n" for r, pw in known.items()))
        path.chmod(0o600)
    return {r: known[r] for r in roles}


_HBA = """\
# Written by receiver/embedded_pg.py: no trust. The socket takes the OS user (peer), TCP
# takes passwords (scram-sha-256).
local   all   all                 peer
host    all   all   127.0.0.1/32  scram-sha-256
host    all   all   ::1/128       scram-sha-256
"""


def _secure(pgdata: Path, port: int, passwords: dict[str, str], db: str) -> None:
    import psycopg
    from psycopg import sql

    hba = pgdata / "pg_hba.conf"
    dsn = f"host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Under trust (a fresh or an older cluster) this sets the password that scram
        # checks from now on; later it only re-states it.
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(passwords[SUPERUSER])
            )
        )
        for role in (OWNER_ROLE, APP_ROLE):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(
                    verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
                ).format(sql.Identifier(role), sql.Literal(passwords[role]))
            )
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(db), sql.Identifier(OWNER_ROLE)
            )
        )
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(db), sql.Identifier(APP_ROLE)
            )
        )
        if hba.read_text() != _HBA:
            _write_as_owner(hba, _HBA)
            conn.execute("SELECT pg_reload_conf()")


def _write_as_owner(path: Path, content: str) -> None:
    mode = path.stat().st_mode & 0o777
    uid, gid = path.stat().st_uid, path.stat().st_gid
    path.write_text(content)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    path.chmod(mode)


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
            # Shell assignments for `make run` (eval): no password in them.
            owner, app, pgpass = start_with_roles(args.dir, args.port, args.db)
            print(f"export PGPASSFILE={pgpass}")
            print(f"export LOCALPG_OWNER_URL={owner}")
            print(f"export DATABASE_URL={app}")
            print(f"export RECEIVER_DB_APP_ROLE={APP_ROLE}")
        else:
            stop(args.dir)
    except EmbeddedPostgresError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
