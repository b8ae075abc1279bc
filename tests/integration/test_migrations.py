"""The migrations build exactly the schema tables.py describes, and undo cleanly."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from receiver.db import migrate


@pytest.fixture
def scratch_url(pg_server: str) -> Iterator[str]:
    """A database of its own: downgrading the run's shared one would break other tests."""
    name = f"receiver_migrations_{os.getpid()}_{secrets.token_hex(3)}"
    base = make_url(pg_server)
    admin = base.set(database="postgres").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(drivername="postgresql+psycopg", database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _relations(url: str) -> set[tuple[str, str]]:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq) as conn:
        rows = conn.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
        ).fetchall()
    return {(name, kind) for name, kind in rows}


def test_upgrade_matches_tables_then_down_and_up_again(scratch_url: str) -> None:
    cfg = migrate.alembic_config(scratch_url, configure_logging=False)
    command.upgrade(cfg, "head")
    # alembic check: autogenerate finds nothing to do, so tables.py and the hand-written
    # migrations describe the same schema.
    command.check(cfg)
    relations = _relations(scratch_url)
    assert ("incident_summary", "VIEW") in relations
    assert ("tenant_history", "VIEW") in relations
    assert ("incidents", "BASE TABLE") in relations

    command.downgrade(cfg, "base")
    assert _relations(scratch_url) == set()

    command.upgrade(cfg, "head")
    command.check(cfg)
    assert _relations(scratch_url) == relations
