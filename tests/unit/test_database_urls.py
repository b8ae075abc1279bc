"""The database URLs the settings accept reach libpq as the operator wrote them: the
breaker listener connects where the pool does (multi-host lists included), to
RECEIVER_LISTEN_DATABASE_URL when set."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from receiver.cache.listener import libpq_conninfo
from receiver.settings import Settings

MULTI_HOST = (
    "postgresql+psycopg://user:p%40ss@/db?host=10.0.0.1,10.0.0.2&port=5432,5433"
    "&target_session_attrs=read-write"
)


@pytest.mark.parametrize(
    "url",
    [
        MULTI_HOST,
        # SQLAlchemy's own multi-host spelling: one host=h:p per server.
        "postgresql+psycopg://user:p%40ss@/db?host=10.0.0.1:5432&host=10.0.0.2:5433"
        "&target_session_attrs=read-write",
    ],
)
def test_the_listener_gets_every_host_of_a_multi_host_url(url: str) -> None:
    assert conninfo_to_dict(libpq_conninfo(url)) == {
        "dbname": "db",
        "user": "user",
        "password": "p@ss",
        "host": "10.0.0.1,10.0.0.2",
        "port": "5432,5433",
        "target_session_attrs": "read-write",
    }


def test_listen_url_defaults_to_database_url() -> None:
    s = Settings(database_url="postgres://u@pgbouncer:6432/db")
    assert s.listen_url == "postgresql+psycopg://u@pgbouncer:6432/db"
    s = Settings(
        database_url="postgresql://u@pgbouncer:6432/db",
        listen_database_url="postgresql://u@postgres:5432/db",
    )
    assert s.listen_url == "postgresql+psycopg://u@postgres:5432/db"


def test_listen_database_url_is_read_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@pgbouncer:6432/db")
    monkeypatch.setenv("RECEIVER_LISTEN_DATABASE_URL", "postgresql://u@postgres:5432/db")
    monkeypatch.setenv("RECEIVER_DB_PREPARED_STATEMENTS", "false")
    s = Settings()
    assert s.listen_url == "postgresql+psycopg://u@postgres:5432/db"
    assert s.db_prepared_statements is False
