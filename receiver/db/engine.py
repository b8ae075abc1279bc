"""Engine and session factory. One AsyncSession per task; never shared.

Every connection is bounded in time (DESIGN.md "Least privilege and bounded time"):

- `statement_timeout`: no statement runs longer, whoever waits for it (or nobody does);
- `lock_timeout`: no row or advisory lock is waited for longer; a lock held by a stuck
  peer becomes a clean error (SQLSTATE 55P03) and a 503, long before the deadline;
- `idle_in_transaction_session_timeout`: a client that stops inside its transaction (a
  replica stopped by SIGSTOP, paused by its VM, stuck in a GC) has its session ended by
  the server, which releases everything it holds (the guard's advisory lock first);
- TCP keepalives on both ends (libpq's `keepalives*` for the client's socket, the
  `tcp_keepalives_*` settings for the server's) and `tcp_user_timeout`: a peer that
  vanished (host down, cable cut, no RST) is noticed in about
  KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT seconds instead of hours.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.array import ListBinaryDumper
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from receiver.db import json
from receiver.settings import Settings

# A dead peer is noticed after about 5 + 2 * 3 = 11 seconds of silence.
KEEPALIVE_IDLE_SECONDS = 5
KEEPALIVE_INTERVAL_SECONDS = 2
KEEPALIVE_COUNT = 3
# Data sent and not acknowledged for this long: the connection is dead.
TCP_USER_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_SECONDS = 3


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def keepalive_args() -> dict[str, Any]:
    """libpq's client-side keepalives (psycopg connect keywords)."""
    return {
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
        "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    }


def server_options(database_url: str, **gucs: int) -> str:
    """libpq `options` setting `gucs` (and the server side's keepalives) for the session,
    after any `options` the URL already carries (ours win: they come last)."""
    values = {
        "tcp_keepalives_idle": KEEPALIVE_IDLE_SECONDS,
        "tcp_keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "tcp_keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        **gucs,
    }
    existing = make_url(database_url).query.get("options") if database_url else None
    if isinstance(existing, tuple):
        existing = " ".join(existing)
    ours = " ".join(f"-c {name}={value}" for name, value in values.items())
    return f"{existing} {ours}" if existing else ours


def connect_args(settings: Settings) -> dict[str, Any]:
    """The psycopg connect keywords of the pool's connections."""
    args: dict[str, Any] = {}
    if not settings.db_prepared_statements:
        # No server-side prepared statements: each statement is parsed where it runs,
        # whichever server connection a transaction pooler gives the transaction.
        args["prepare_threshold"] = None
    if settings.db_startup_options:
        args["options"] = server_options(settings.database_url, **_timeouts(settings))
    return {**args, **keepalive_args()}


def _timeouts(settings: Settings) -> dict[str, int]:
    return {
        "statement_timeout": _ms(settings.db_statement_timeout_seconds),
        "lock_timeout": _ms(settings.db_lock_timeout_seconds),
        "idle_in_transaction_session_timeout": _ms(settings.db_idle_in_transaction_timeout_seconds),
    }


def _set_local(settings: Settings) -> str:
    """The timeouts for one transaction, for a pooler that refuses `options` (values are
    integers from the settings, so the text is constant)."""
    # One statement (set_config(..., true) is SET LOCAL): it can be prepared like any other.
    return "SELECT " + ", ".join(
        f"set_config('{name}', '{ms}', true)" for name, ms in _timeouts(settings).items()
    )


def create_engine(settings: Settings) -> AsyncEngine:
    engine = _create_engine(settings)

    @event.listens_for(engine.sync_engine, "connect")
    def _fast_arrays(dbapi_connection: Any, _record: Any) -> None:
        # Lists go as binary arrays: each element is sent with its length, nothing is
        # quoted or escaped. psycopg's default text arrays escape every quote of every
        # JSON document (a 10,000-alert delivery's rows, audit entries and NOTIFY payloads
        # hold about a million) with a regex and a Python call each: about a fifth of that
        # delivery's CPU with the guard lock held; binary dumps the same lists 2-3x faster.
        dbapi_connection.driver_connection.adapters.register_dumper(list, ListBinaryDumper)

    if not settings.db_startup_options:
        statement = _set_local(settings)

        @event.listens_for(engine.sync_engine, "begin")
        def _bounded(connection: Any) -> None:
            connection.exec_driver_sql(statement)

    return engine


def _create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        # A connection killed by a database restart is found and replaced on checkout,
        # so the service recovers by itself when PostgreSQL comes back.
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args=connect_args(settings),
        # orjson writes datetimes as RFC 3339 strings, which audit details carry.
        json_serializer=json.dumps,
        json_deserializer=json.loads,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)
