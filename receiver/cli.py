"""`python -m receiver serve`, `migrate`, `audit verify` and `replay`."""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from receiver import logs
from receiver.settings import Settings, SettingsError

log = logging.getLogger("receiver")


def _settings() -> Settings:
    try:
        return Settings()
    except (ValidationError, SettingsError) as exc:
        raise SystemExit(f"receiver: invalid settings: {exc}") from exc


def serve(settings: Settings) -> int:
    try:
        settings.check_startable()
    except SettingsError as exc:
        log.error("refusing to start: %s", exc)
        return 2
    if settings.allow_unauthenticated and (
        settings.webhook_token is None or settings.api_token is None
    ):
        log.warning("RECEIVER_ALLOW_UNAUTHENTICATED=true: endpoints without a token are open")
    log.info(
        "starting",
        extra={
            "host": settings.host,
            "port": settings.port,
            "tenant_label": settings.tenant_label,
            "channels": settings.enabled_channels or "none",
        },
    )
    reuse_port = settings.workers > 1
    # RECEIVER_WORKERS: that many serving processes on one port (SO_REUSEPORT; the kernel
    # spreads connections), forked before any event loop. Each is a replica of its own:
    # its own pool, breaker view kept by NOTIFY, and background loops, which are already
    # safe with several replicas (leases, SKIP LOCKED, try-locks).
    ctx = multiprocessing.get_context("fork")
    children = [
        ctx.Process(target=_run_app, args=(settings, reuse_port), name=f"worker-{i}")
        for i in range(1, settings.workers)
    ]
    for child in children:
        child.start()
    try:
        _run_app(settings, reuse_port)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=15)
    return 0


# The cyclic garbage collector's thresholds while serving. The defaults (700, 10, 10)
# start a collection every 700 container allocations, and a large delivery allocates
# millions (rows, dicts, datetimes): a 10,000-alert delivery spent 0.4 of its 1.3 s of
# CPU walking objects that reference counting frees anyway (bench/README.md). Cycles are
# still collected, a little later.
GC_THRESHOLDS = (50_000, 20, 20)


def _run_app(settings: Settings, reuse_port: bool) -> None:
    from receiver.app import create_app
    from receiver.logs import JsonAccessLogger

    app = create_app(settings)
    # What start-up made (modules, the app) lives as long as the process: no collection
    # needs to walk it again.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        reuse_port=reuse_port or None,
        access_log_class=JsonAccessLogger,
        access_log=logging.getLogger("receiver.access"),
        print=None,
    )


def migrate_cmd(settings: Settings) -> int:
    from receiver.db import migrate

    if not settings.database_url:
        log.error("DATABASE_URL is not set")
        return 2
    # Say which revisions ran (readyz keeps this logger quiet when serving).
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    migrate.upgrade(settings.database_url, configure_logging=False)
    log.info("schema at head", extra={"revision": migrate.head_revision()})
    if settings.db_app_role:
        from receiver.db.roles import RoleError

        try:
            migrate.grant_app_role(settings.database_url, settings.db_app_role)
        except RoleError as exc:
            log.error("%s", exc)
            return 2
        log.info("granted least privilege", extra={"role": settings.db_app_role})
    return 0


def audit_verify(settings: Settings, anchors: list[str]) -> int:
    """Recompute the seal chain: 0 when it holds, 1 naming the first row that does not."""
    import psycopg
    from sqlalchemy.engine import make_url

    from receiver.db import seals
    from receiver.domain.seal import verify_chain

    if not settings.database_url:
        log.error("DATABASE_URL is not set")
        return 2
    wanted: dict[int, str] = {}
    for anchor in anchors:
        seal_id, _, digest = anchor.partition(":")
        if not seal_id.isdigit() or len(digest) != 64:
            log.error("--anchor %s: expected SEAL_ID:HEX_DIGEST (as printed by verify)", anchor)
            return 2
        wanted[int(seal_id)] = digest.lower()
    libpq = make_url(settings.database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        result = verify_chain(seals.seals_with_rows(conn), anchors=wanted)
        unsealed = seals.unsealed_rows(conn, result.last_id) if result.finding is None else 0
    if result.finding is not None:
        print(f"audit verify: FAILED: {result.finding.message()}")
        return 1
    head = result.head
    print(
        f"audit verify: OK: {result.seals} seals hold {result.rows} audit rows "
        f"(ids 1..{result.last_id}); {unsealed} newer rows not sealed yet"
        + (f"; head seal {head.id}:{head.digest}" if head is not None else "")
    )
    return 0


def _iso(value: str | None, flag: str) -> datetime | None:
    """An ISO 8601 time; one without an offset is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ReplayArgumentError(
            f"{flag} {value!r}: not an ISO 8601 time (for example 2026-12-01T08:00:00Z)"
        ) from None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


class ReplayArgumentError(ValueError):
    """A replay argument that can never work: the message says why."""


def _proposed(settings: Settings, pairs: list[str]) -> tuple[Settings, dict[str, tuple[Any, Any]]]:
    """The settings with `--set NAME=VALUE` applied, validated as the service validates
    them at start (the same messages), and what changed."""
    from receiver.service.replay import REPLAYED_SETTINGS

    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().lower().removeprefix("receiver_")
        if not sep or not name:
            raise ReplayArgumentError(f"--set {pair!r}: expected NAME=VALUE")
        if name not in REPLAYED_SETTINGS:
            known = (
                "is not a setting"
                if name not in Settings.model_fields
                else ("decides nothing a replay replays")
            )
            raise ReplayArgumentError(
                f"--set {name}: {known}; a replay can change {', '.join(REPLAYED_SETTINGS)}"
            )
        values[name] = value.strip()
    try:
        proposed = Settings(**values) if values else settings
    except (ValidationError, SettingsError) as exc:
        raise ReplayArgumentError(f"receiver: invalid settings: {exc}") from None
    changes = {n: (getattr(settings, n), getattr(proposed, n)) for n in values}
    return proposed, {n: c for n, c in changes.items() if c[0] != c[1]}


def _progress_bar() -> Any:
    """A progress bar on stderr when it is a terminal and the replay is long."""
    if not sys.stderr.isatty():
        return None
    shown = [-1]

    def show(done: int, total: int) -> None:
        if total < 2000:
            return
        pct = done * 100 // total
        if pct != shown[0]:
            shown[0] = pct
            bar = "#" * (pct * 30 // 100)
            sys.stderr.write(f"\rreplaying [{bar:<30}] {pct:3d}% ({done}/{total} steps)")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return show


def replay_cmd(settings: Settings, args: argparse.Namespace) -> int:
    """What-if replay: exit 0 with the comparison, 2 for bad arguments, 1 when there is
    nothing to replay or the database cannot be read."""
    import asyncio

    from receiver.config import ServiceConfig
    from receiver.errors import InvalidInput, ReceiverError
    from receiver.service.replay import what_if

    try:
        since, until = _iso(args.since, "--since"), _iso(args.until, "--until")
        proposed, changes = _proposed(settings, args.set)
    except ReplayArgumentError as exc:
        print(f"receiver replay: {exc}", file=sys.stderr)
        return 2
    if not settings.database_url:
        print("receiver replay: DATABASE_URL is not set", file=sys.stderr)
        return 2

    async def run() -> Any:
        from receiver.db.engine import create_engine, session_factory

        engine = create_engine(settings)
        try:
            return await what_if(
                sessions=session_factory(engine),
                baseline=ServiceConfig.from_settings(settings),
                proposed=ServiceConfig.from_settings(proposed),
                since=since,
                until=until,
                now=datetime.now(UTC),
                progress=_progress_bar(),
            )
        finally:
            await engine.dispose()

    try:
        result = asyncio.run(run())
    except InvalidInput as exc:
        print(f"receiver replay: {exc.detail}", file=sys.stderr)
        return 2
    except ReceiverError as exc:
        print(f"receiver replay: {exc.detail}", file=sys.stderr)
        return 1
    except Exception as exc:  # the database refused (a role without SELECT, ...)
        print(f"receiver replay: cannot read the record: {exc}", file=sys.stderr)
        return 1
    _print_replay(result, changes, as_json=args.json, html_path=args.html)
    return 0


def _print_replay(result: Any, changes: dict[str, Any], *, as_json: bool, html_path: Any) -> None:
    import json

    from receiver.domain import replay_report as report

    b, p = result.baseline, result.proposed
    if html_path is not None:
        page = report.html_report(b, p, since=result.since, until=result.until, changes=changes)
        html_path.write_text(page, encoding="utf-8")
    if as_json:
        out = {
            "since": result.since.isoformat(),
            "until": result.until.isoformat(),
            "changes": {n: {"from": a, "to": v} for n, (a, v) in changes.items()},
            "baseline": b.as_json(),
            "proposed": p.as_json(),
        }
        print(json.dumps(out, indent=2))
        return
    print(
        f"what-if replay of {result.inputs} recorded inputs, "
        f"{result.since.isoformat(timespec='seconds')} .. "
        f"{result.until.isoformat(timespec='seconds')}\n"
    )
    print(report.text_table(b, p, changes=changes))
    print()
    print(report.text_timeline(b, p, since=result.since, until=result.until))
    if html_path is not None:
        print(f"\nHTML report: {html_path}")


def _add_replay(sub: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help="what-if: replay the recorded history with the settings in force and with --set "
        "changes, and compare (reads only)",
    )
    replay.add_argument("--since", metavar="ISO", help="window start (default: first record)")
    replay.add_argument("--until", metavar="ISO", help="window end (default: now); no offset: UTC")
    replay.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a proposed setting, e.g. max_isolated_percent=10 (repeatable)",
    )
    replay.add_argument("--json", action="store_true", help="print the comparison as JSON")
    replay.add_argument("--html", type=Path, metavar="FILE", help="write an HTML report")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m receiver",
        description="Alertmanager receiver: per-tenant circuit breakers, incidents, audit log.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP server")
    sub.add_parser("migrate", help="upgrade the database schema to head (alembic)")
    audit = sub.add_parser("audit", help="audit log tamper evidence").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify", help="recompute the seal chain: exit 0 when it holds, 1 naming the first bad row"
    )
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEAL_ID:DIGEST",
        help="a head printed by an earlier run (kept outside the database): it must still hold",
    )
    _add_replay(sub)
    args = parser.parse_args(argv)
    settings = _settings()
    logs.configure(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    if args.command == "audit":
        return audit_verify(settings, args.anchor)
    if args.command == "replay":
        return replay_cmd(settings, args)
    return migrate_cmd(settings)


if __name__ == "__main__":
    sys.exit(main())
