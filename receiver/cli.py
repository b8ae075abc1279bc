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
    from receiver import migrate

    if not settings.database_url:
        log.error("DATABASE_URL is not set")
        return 2
    # Say which revisions ran (readyz keeps this logger quiet when serving).
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    migrate.upgrade(settings.database_url, configure_logging=False)
    log.info("schema at head", extra={"revision": migrate.head_revision()})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m receiver",
        description="Alertmanager receiver: per-tenant circuit breakers, incidents, audit log.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP server")
    sub.add_parser("migrate", help="upgrade the database schema to head (alembic)")
    args = parser.parse_args(argv)
    settings = _settings()
    logs.configure(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    return migrate_cmd(settings)


if __name__ == "__main__":
    sys.exit(main())
