"""Test infrastructure: a real PostgreSQL for the whole run, its own database, migrations
once, and a clean slate before each test that touches the database.

Set TEST_DATABASE_URL to use an existing server (a database is created on it per run);
otherwise a private cluster is started from the machine's PostgreSQL binaries.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from receiver import embedded_pg
from receiver.db import migrate
from receiver.settings import Settings

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "alertmanager-0.25"

WEBHOOK_TOKEN = "test-webhook-token"
API_TOKEN = "test-api-token-0123"
TABLES_IN_DELETE_ORDER = (
    "heartbeat_state",
    "reconcile_absent",
    "reconciler_state",
    "action_items",
    "postmortems",
    "incident_alerts",
    "incident_tenants",
    "incidents",
    "incident_counters",
    "audit_seals",
    "audit_log",
    "notifications",
    "probe_outcomes",
    "alerts",
    "deliveries",
    "breakers",
    "tenants",
)


def load_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """libpq URL of a server to create test databases on (without a database name)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield make_url(external).set(drivername="postgresql").render_as_string(False)
        return
    tmp = Path(tempfile.mkdtemp(prefix="receiver-pg-"))
    port = embedded_pg.free_port()
    embedded_pg.start(tmp, port, "postgres")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        embedded_pg.stop(tmp)


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """SQLAlchemy URL of this run's own database, migrated to head."""
    name = f"receiver_test_{os.getpid()}_{secrets.token_hex(3)}"
    base = make_url(pg_server)
    admin = base.set(database="postgres").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(drivername="postgresql+psycopg", database=name).render_as_string(False)
    migrate.upgrade(url, configure_logging=False)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


def truncate_all(url: str) -> None:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        # Replica mode disables the audit log's append-only trigger for this session only:
        # the deliberate maintenance path, available to superusers.
        conn.execute("SET session_replication_role = replica")
        conn.execute(f"TRUNCATE {', '.join(TABLES_IN_DELETE_ORDER)} RESTART IDENTITY CASCADE")


@pytest.fixture
def clean_db(database_url: str) -> str:
    truncate_all(database_url)
    return database_url


@pytest.fixture
def settings(clean_db: str) -> Settings:
    return make_settings(clean_db)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "webhook_token": WEBHOOK_TOKEN,
        "api_token": API_TOKEN,
        "sweep_interval_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def sql(clean_db: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run a query against the test database and return all rows."""

    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(libpq(clean_db), autocommit=True) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    return run


WEBHOOK_HEADERS = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
API_HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Any]:
    from receiver.app import create_app

    yield await aiohttp_client(create_app(settings))


@pytest.fixture
def app_client(aiohttp_client: Any, clean_db: str) -> Callable[..., Any]:
    """Build a client with setting overrides: `await app_client(breaker_open_seconds=1)`."""
    from receiver.app import create_app

    async def build(**overrides: Any) -> Any:
        return await aiohttp_client(create_app(make_settings(clean_db, **overrides)))

    return build
