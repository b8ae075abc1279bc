"""The receiver behind a real PgBouncer 1.18 in transaction mode (Debian's pgbouncer).

Two replicas reach the suite's PostgreSQL through PgBouncer with few server connections,
so the transactions of different clients take turns on the same server connections;
their LISTEN sessions go straight to PostgreSQL (RECEIVER_LISTEN_DATABASE_URL), as a
transaction pooler cannot keep one. Webhook, API, sweeper and outbox all work there with
RECEIVER_DB_PREPARED_STATEMENTS=false. What makes that setting necessary is measured here
too: psycopg's default (prepare after 5 uses of a statement on a connection) fails within
a few transactions behind PgBouncer < 1.21.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from receiver.db import migrate
from receiver.db.engine import create_engine
from receiver.domain.alerts import fingerprint
from receiver.settings import Settings
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS
from tests.integration.helpers import ServerProcess, firing, isolating_alert, poll, webhook_payload
from tests.topology.servers import PgBouncer, postgres_owned_dir, start_replicas

POOL_SIZE = 3  # server connections per database/user pair
TRIPPED = [f"pgb-{i}" for i in range(6)]


class FakeSlack(ThreadingHTTPServer):
    """An incoming-webhook endpoint on 127.0.0.1 that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.messages.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/slack/hook"


@pytest.fixture(scope="module")
def direct_url(pg_server: str) -> Iterator[str]:
    """A database of this module's own on the suite's PostgreSQL, migrated (straight)."""
    name = f"receiver_pgbouncer_{os.getpid()}_{secrets.token_hex(3)}"
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


@pytest.fixture(scope="module")
def bouncer(direct_url: str) -> Iterator[PgBouncer]:
    port = make_url(direct_url).port
    assert port is not None
    b = PgBouncer(postgres_owned_dir("receiver-pgbouncer-"), port, pool_size=POOL_SIZE).start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(b.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def pooled_url(direct_url: str, bouncer: PgBouncer) -> str:
    return make_url(direct_url).set(port=bouncer.port).render_as_string(False)


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, direct_url: str, pooled_url: str, slack: FakeSlack
) -> Iterator[list[ServerProcess]]:
    workdir: Path = tmp_path_factory.mktemp("pgbouncer-replicas")
    servers = start_replicas(
        workdir,
        [pooled_url, pooled_url],
        RECEIVER_LISTEN_DATABASE_URL=direct_url,
        RECEIVER_DB_PREPARED_STATEMENTS="false",
        RECEIVER_DB_STARTUP_OPTIONS="false",
        RECEIVER_DB_POOL_SIZE="6",
        RECEIVER_SLACK_WEBHOOK_URL=slack.url,
        RECEIVER_OUTBOX_POLL_SECONDS="0.1",
        RECEIVER_BREAKER_OPEN_SECONDS="1",
        RECEIVER_SWEEP_INTERVAL_SECONDS="0.2",
        RECEIVER_HALF_OPEN_PROBES="4",
        RECEIVER_SLA_CHECK_INTERVAL_SECONDS="0.5",
    )
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    server: ServerProcess,
    method: str,
    path: str,
    body: Any = None,
    *,
    expect: int = 200,
) -> Any:
    headers = WEBHOOK_HEADERS if path == "/v1/alertmanager" else API_HEADERS
    async with http.request(method, f"{server.url}{path}", json=body, headers=headers) as resp:
        assert resp.status == expect, f"{method} {path}: {resp.status} {await resp.text()}"
        return await resp.json()


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


async def test_webhook_api_sweeper_and_outbox_through_pgbouncer(
    replicas, http, bouncer, direct_url, slack
):
    a, b = replicas
    both = (a, b)
    gate = asyncio.Semaphore(8)

    async def at(i: int, method: str, path: str, body: Any = None) -> Any:
        async with gate:
            return await call(http, both[i % 2], method, path, body)

    # Tiers, trips, unrelated alerts and gateway outcomes, all at once on both replicas.
    noise = []
    for n in range(120):
        alert = isolating_alert(f"pgb-noise-{n % 5}", isolate=False)
        alert["labels"]["seq"] = str(n)
        alert["fingerprint"] = fingerprint(alert["labels"])
        noise.append(webhook_payload(alert))
    await asyncio.gather(
        *(at(i, "PUT", f"/v1/tenants/{t}", {"tier": "gold"}) for i, t in enumerate(TRIPPED))
    )
    answers = await asyncio.gather(
        *(at(i, "POST", "/v1/alertmanager", firing(t)) for i, t in enumerate(TRIPPED)),
        *(at(i, "POST", "/v1/alertmanager", body) for i, body in enumerate(noise)),
        *(
            at(i, "POST", f"/v1/tenants/pgb-noise-{i % 5}/outcomes", {"success": 3, "failure": 0})
            for i in range(40)
        ),
    )
    assert sum(out.get("breaker_transitions", 0) for out in answers) == len(TRIPPED)
    assert query(direct_url, "SELECT count(*) FROM alerts WHERE labels ? 'seq'") == [(120,)]

    # PgBouncer ran all of that on at most POOL_SIZE server connections: the transactions
    # of different clients took turns on the same server connections.
    database = make_url(direct_url).database
    servers = [s for s in bouncer.show("SERVERS") if s["database"] == database]
    assert 0 < len(servers) <= POOL_SIZE, servers
    clients = [c for c in bouncer.show("CLIENTS") if c["database"] == database]
    assert len(clients) > 2 * len(servers), clients
    (stats,) = [s for s in bouncer.show("STATS") if s["database"] == database]
    assert stats["total_xact_count"] > 10 * len(servers), stats

    # The LISTEN views (straight to PostgreSQL) know every trip, on both replicas (open,
    # or half-open already: the open period is 1 s).
    for server in both:
        for tenant in TRIPPED:
            state = await call(http, server, "GET", f"/v1/tenants/{tenant}/breaker")
            assert (state["state"], state["trips"]) in (("open", 1), ("half_open", 1)), state
    listeners = query(
        direct_url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'receiver-listener%%'",
    )
    assert listeners == [(2,)]

    # The sweeper moves them to half-open after the 1 s open period ...
    await poll(
        lambda: asyncio.to_thread(
            query, direct_url, "SELECT count(*) FROM breakers WHERE state = 'half_open'"
        ),
        lambda rows: rows == [(len(TRIPPED),)],
        within=20,
        what="the sweeper to half-open every tripped breaker",
    )
    # ... healthy probes close them, an override forces one open and is released.
    for i, tenant in enumerate(TRIPPED[1:]):
        out = await at(i, "POST", f"/v1/tenants/{tenant}/outcomes", {"success": 4, "failure": 0})
        assert out["state"] == "closed", out
    forced = TRIPPED[0]
    override = {"action": "force_open", "reason": "pgbouncer test", "actor": "carol"}
    await call(http, b, "POST", f"/v1/tenants/{forced}/breaker", override)
    await poll(
        lambda: call(http, a, "GET", f"/v1/tenants/{forced}/breaker"),
        lambda br: br["state"] == "forced_open",
        within=5,
        interval=0.02,
        what="replica A to see the override",
    )
    release = {"action": "release", "reason": "done", "actor": "carol"}
    await call(http, a, "POST", f"/v1/tenants/{forced}/breaker", release)

    # The incident of the trips: acknowledged through one replica, read through the other.
    listed = (await call(http, a, "GET", "/v1/incidents?status=open"))["incidents"]
    assert len(listed) == 1, listed
    incident = listed[0]["id"]
    await call(http, b, "POST", f"/v1/incidents/{incident}/acknowledge", {"actor": "carol"})
    assert (await call(http, a, "GET", f"/v1/incidents/{incident}"))["status"] == "acknowledged"
    await call(http, a, "GET", "/v1/analytics/incidents")

    # The outbox worker delivered its notifications (opened, acknowledged) to Slack.
    await poll(
        lambda: asyncio.to_thread(
            query,
            direct_url,
            "SELECT event, status FROM notifications WHERE incident_id = %s ORDER BY id",
            incident,
        ),
        lambda rows: len(rows) >= 2 and all(s == "sent" for _, s in rows),
        within=20,
        what="the incident's notifications to be sent",
    )
    assert len(slack.messages) >= 2

    for server in both:
        assert "unhandled error" not in server.log(), server.log()[-3000:]
        assert "Traceback" not in server.log()


async def run_transactions(url: str, *, prepared: bool, clients: int = 4, each: int = 25) -> int:
    """Short transactions of the receiver's engine through PgBouncer: how many failed."""
    engine = create_engine(
        Settings(database_url=url, db_prepared_statements=prepared, db_startup_options=False)
    )
    failed = 0

    async def client(c: int) -> None:
        nonlocal failed
        for n in range(each):
            try:
                async with engine.begin() as conn:
                    await conn.execute(text("SELECT CAST(:n AS int) + 1"), {"n": n})
            except DBAPIError:
                failed += 1

    try:
        await asyncio.gather(*(client(c) for c in range(clients)))
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            threshold = raw.driver_connection.prepare_threshold  # type: ignore[union-attr]
            assert threshold == (5 if prepared else None)
    finally:
        await engine.dispose()
    return failed


async def test_prepared_statements_must_be_off_behind_pgbouncer_1_18(pooled_url):
    """The measurement behind RECEIVER_DB_PREPARED_STATEMENTS: psycopg's default prepares
    a statement after 5 uses on a connection, and PgBouncer 1.18 in transaction mode
    hands the next transaction another server connection, where the prepared statement
    is missing ("_pg3_0 does not exist") or another one of that name is ("already
    exists"). Off, the same load runs clean."""
    started = time.monotonic()
    failed = await run_transactions(pooled_url, prepared=True)
    print(f"\nprepared statements on behind pgbouncer 1.18: {failed} of 100 transactions failed")
    assert failed > 0
    assert await run_transactions(pooled_url, prepared=False) == 0
    assert time.monotonic() - started < 60
