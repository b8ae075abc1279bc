"""`python -m receiver serve` and `python -m receiver migrate`."""

from __future__ import annotations

import argparse
import logging
import sys

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
    from receiver.app import create_app

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
    from receiver.logs import JsonAccessLogger

    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log_class=JsonAccessLogger,
        access_log=logging.getLogger("receiver.access"),
        print=None,
    )
    return 0


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
    args = parser.parse_args(argv)
    settings = _settings()
    logs.configure(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    if args.command == "audit":
        return audit_verify(settings, args.anchor)
    return migrate_cmd(settings)


if __name__ == "__main__":
    sys.exit(main())
