"""Bounded time (DESIGN.md "Least privilege and bounded time"): every connection carries
statement, lock and idle-in-transaction timeouts and TCP keepalives; a webhook is committed
or answered 503 with Retry-After within RECEIVER_REQUEST_DEADLINE_SECONDS, also when a row
or lock it needs is held by a stuck peer; the deadline never turns an uncommitted delivery
into a 200."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from receiver.db import transaction
from receiver.db.breakers import GUARD_LOCK
from receiver.db.engine import (
    KEEPALIVE_IDLE_SECONDS,
    connect_args,
    create_engine,
    session_factory,
)
from receiver.errors import DatabaseUnavailable
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS, libpq, make_settings
from tests.integration.helpers import firing, table_counts

SLACK = 0.6  # scheduling and HTTP round trips on a busy test machine


@pytest.fixture
def holder(clean_db: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """A second connection that takes locks and keeps them until the test releases them."""
    opened: list[psycopg.Connection] = []

    def open_holder() -> psycopg.Connection:
        conn = psycopg.connect(libpq(clean_db))
        opened.append(conn)
        return conn

    yield open_holder
    for conn in opened:
        conn.close()


def hold_breaker_row(conn: psycopg.Connection, tenant: str) -> None:
    conn.execute("INSERT INTO breakers (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
    conn.commit()
    conn.execute("SELECT 1 FROM breakers WHERE tenant_id = %s FOR UPDATE", (tenant,))


async def timed_post(client: Any, body: Any) -> tuple[int, dict[str, Any], dict[str, str], float]:
    t0 = time.monotonic()
    resp = await client.post("/v1/alertmanager", json=body, headers=WEBHOOK_HEADERS)
    data = await resp.json()
    return resp.status, data, dict(resp.headers), time.monotonic() - t0


def waiting_backends(sql: Callable[..., list[tuple[Any, ...]]]) -> int:
    return sql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )[0][0]


# --- connection settings ---------------------------------------------------------------------


async def test_pool_connections_carry_timeouts_and_keepalives(clean_db):
    settings = make_settings(
        clean_db,
        db_statement_timeout_seconds=4.5,
        db_lock_timeout_seconds=1.5,
        db_idle_in_transaction_timeout_seconds=7,
    )
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            shown = {
                name: (await conn.execute(text(f"SHOW {name}"))).scalar()
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                    "tcp_keepalives_idle",
                )
            }
            raw = await conn.get_raw_connection()
            fileno = raw.driver_connection.fileno()  # type: ignore[union-attr]
            sock = socket.socket(fileno=socket.dup(fileno))
            try:
                keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
                idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            finally:
                sock.close()
    finally:
        await engine.dispose()
    assert shown == {
        "statement_timeout": "4500ms",
        "lock_timeout": "1500ms",
        "idle_in_transaction_session_timeout": "7s",
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE_SECONDS),
    }
    assert keepalive == 1 and idle == KEEPALIVE_IDLE_SECONDS


async def test_options_in_the_url_are_kept(clean_db):
    settings = make_settings(clean_db + "?options=-c%20application_name%3Dfrom-the-url")
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            name = (await conn.execute(text("SHOW application_name"))).scalar()
            timeout = (await conn.execute(text("SHOW lock_timeout"))).scalar()
    finally:
        await engine.dispose()
    assert (name, timeout) == ("from-the-url", "2s")


# --- a row or lock held by a stuck peer ---------------------------------------------------------


async def test_a_held_breaker_row_is_503_within_the_lock_timeout(app_client, holder, sql):
    client = await app_client(request_deadline_seconds=3, db_lock_timeout_seconds=1)
    conn = holder()
    hold_breaker_row(conn, "tenant-held")
    before = table_counts(sql)

    status, body, headers, elapsed = await timed_post(client, firing("tenant-held"))

    assert status == 503, body
    assert body["error"] == "database_unavailable"
    assert "Retry-After" in headers
    assert elapsed < 1 + SLACK + 0.5, f"answered after {elapsed:.2f}s"
    assert table_counts(sql) == before  # nothing half-written

    conn.rollback()  # the peer lets go: the very same delivery now goes through
    status, body, _, _ = await timed_post(client, firing("tenant-held"))
    assert status == 200, body
    assert (body["new"], body["breaker_transitions"]) == (1, 1)


async def test_the_deadline_answers_503_when_the_lock_wait_is_longer(app_client, holder, sql):
    client = await app_client(request_deadline_seconds=1, db_lock_timeout_seconds=30)
    conn = holder()
    hold_breaker_row(conn, "tenant-held")
    before = table_counts(sql)

    status, body, headers, elapsed = await timed_post(client, firing("tenant-held"))

    assert status == 503, body
    assert "Retry-After" in headers
    assert "deadline" in body["detail"]
    assert elapsed < 1 + SLACK, f"answered after {elapsed:.2f}s"
    # The abandoned statement is cancelled in the server, not left waiting for the lock.
    for _ in range(50):
        if waiting_backends(sql) == 0:
            break
        await asyncio.sleep(0.1)
    assert waiting_backends(sql) == 0
    assert table_counts(sql) == before

    conn.rollback()
    status, body, _, _ = await timed_post(client, firing("tenant-held"))
    assert status == 200, body
    assert body["new"] == 1  # the first copy was never committed


async def test_the_guard_lock_held_elsewhere_blocks_only_isolating_deliveries(
    app_client, holder, sql
):
    client = await app_client(request_deadline_seconds=3, db_lock_timeout_seconds=1)
    conn = holder()
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (GUARD_LOCK,))

    status, body, headers, elapsed = await timed_post(client, firing("tenant-iso"))
    assert (status, "Retry-After" in headers) == (503, True), body
    assert elapsed < 3 + SLACK

    # A record-only delivery does not need the guard.
    status, body, _, elapsed = await timed_post(client, firing("tenant-rec", isolate=False))
    assert status == 200, body
    assert elapsed < 1

    conn.rollback()
    status, body, _, _ = await timed_post(client, firing("tenant-iso"))
    assert status == 200, body


# --- in_transaction and its deadline ------------------------------------------------------------


@pytest.fixture
async def probe_table(clean_db: str) -> Any:
    """A scratch table whose COMMIT takes `commit_seconds` (a deferred constraint trigger
    sleeps at commit time), to put the deadline inside the commit."""
    with psycopg.connect(libpq(clean_db), autocommit=True) as conn:
        conn.execute(
            """
            DROP TABLE IF EXISTS bounded_time_probe;
            CREATE TABLE bounded_time_probe (id int PRIMARY KEY, commit_seconds float);
            CREATE OR REPLACE FUNCTION bounded_time_slow_commit() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(NEW.commit_seconds); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON bounded_time_probe
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bounded_time_slow_commit();
            """
        )
    engine = create_engine(make_settings(clean_db))
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
        with psycopg.connect(libpq(clean_db), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bounded_time_probe")
            conn.execute("DROP FUNCTION IF EXISTS bounded_time_slow_commit()")


def probe_rows(sql: Callable[..., list[tuple[Any, ...]]]) -> list[int]:
    return [r[0] for r in sql("SELECT id FROM bounded_time_probe ORDER BY id")]


async def test_work_past_the_deadline_is_rolled_back_and_answered_unavailable(probe_table, sql):
    async def slow_work(session: Any) -> str:
        await session.execute(text("INSERT INTO bounded_time_probe VALUES (1, 0)"))
        await session.execute(text("SELECT pg_sleep(3)"))
        return "done"

    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="deadline"), transaction.deadline(0.5):
        await transaction.in_transaction(probe_table, slow_work, what="probe")
    assert time.monotonic() - t0 < 0.5 + SLACK
    await asyncio.sleep(1)
    assert probe_rows(sql) == []


async def test_a_commit_in_flight_at_the_deadline_is_never_cancelled(probe_table, sql):
    async def work(session: Any) -> str:
        await session.execute(text("INSERT INTO bounded_time_probe VALUES (2, 1.5)"))
        return "done"

    t0 = time.monotonic()
    with (
        pytest.raises(DatabaseUnavailable, match="outcome is not known"),
        transaction.deadline(0.5),
    ):
        await transaction.in_transaction(probe_table, work, what="probe")
    assert time.monotonic() - t0 < 0.5 + SLACK
    # The commit went on in the background and landed: the 503 only costs a duplicate.
    for _ in range(40):
        if probe_rows(sql):
            break
        await asyncio.sleep(0.1)
    assert probe_rows(sql) == [2]


async def test_a_commit_within_the_deadline_returns_its_result(probe_table, sql):
    async def work(session: Any) -> str:
        await session.execute(text("INSERT INTO bounded_time_probe VALUES (3, 0.2)"))
        return "done"

    with transaction.deadline(2):
        assert await transaction.in_transaction(probe_table, work, what="probe") == "done"
    assert probe_rows(sql) == [3]


# --- the database's clock ------------------------------------------------------------------------


class _SkewedDatetime(datetime):
    """A replica whose clock runs a day ahead."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) + timedelta(days=1)


async def test_decisions_take_the_database_clock_not_the_replicas(client, sql, monkeypatch):
    from receiver.http import breakers as breaker_handlers
    from receiver.http import webhook as webhook_handler

    monkeypatch.setattr(webhook_handler, "datetime", _SkewedDatetime, raising=False)
    monkeypatch.setattr(breaker_handlers, "datetime", _SkewedDatetime, raising=False)
    resp = await client.post(
        "/v1/alertmanager", json=firing("tenant-clock"), headers=WEBHOOK_HEADERS
    )
    assert resp.status == 200, await resp.text()
    ((skew,),) = sql(
        "SELECT abs(extract(epoch FROM opened_at - now())) FROM breakers WHERE tenant_id = %s",
        "tenant-clock",
    )
    assert skew < 60, f"opened_at is {skew:.0f}s off the database clock"

    resp = await client.post(
        "/v1/tenants/tenant-clock/breaker",
        json={"action": "force_close", "reason": "checked", "actor": "ops"},
        headers=API_HEADERS,
    )
    assert resp.status == 200, await resp.text()
    ((skew,),) = sql(
        "SELECT abs(extract(epoch FROM changed_at - now())) FROM breakers WHERE tenant_id = %s",
        "tenant-clock",
    )
    assert skew < 60, f"changed_at is {skew:.0f}s off the database clock"


async def test_behind_a_pooler_the_timeouts_are_set_per_transaction(clean_db):
    # PgBouncer refuses the `options` startup parameter: RECEIVER_DB_STARTUP_OPTIONS=false.
    settings = make_settings(
        clean_db,
        db_startup_options=False,
        db_prepared_statements=False,
        db_lock_timeout_seconds=1.5,
        db_statement_timeout_seconds=4.5,
    )
    assert "options" not in connect_args(settings)
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            for _ in range(3):
                async with conn.begin():
                    shown = [
                        (await conn.execute(text(f"SHOW {name}"))).scalar()
                        for name in ("lock_timeout", "statement_timeout")
                    ]
                    assert shown == ["1500ms", "4500ms"]
    finally:
        await engine.dispose()
