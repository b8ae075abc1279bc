"""Schema migrations through alembic, from code (the CLI and the tests share this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from receiver.db import roles

# The repository (or the image's /app) holds alembic.ini and migrations/ beside the
# package; an installed package run from elsewhere looks in the working directory.
ROOT = Path(__file__).resolve().parents[2]
if not (ROOT / "alembic.ini").exists():
    ROOT = Path.cwd()


def alembic_config(database_url: str, *, configure_logging: bool = True) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = configure_logging
    return cfg


def upgrade(database_url: str, *, configure_logging: bool = True) -> None:
    command.upgrade(alembic_config(database_url, configure_logging=configure_logging), "head")


def grant_app_role(database_url: str, role: str) -> None:
    """After `upgrade`, as the owner: least privilege for the role `serve` runs as."""
    libpq = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    roles.grant_app_role(libpq, role)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
