"""The database goes away while the receiver runs: a private PostgreSQL cluster that the
test stops and starts itself. Alertmanager must get 503 + Retry-After (it retries only
5xx), nothing may be half-written, and the same webhook must succeed once PostgreSQL is
back, without restarting the receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from receiver import embedded_pg
from receiver.app import create_app
from receiver.db import migrate
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS, libpq, load_fixture, make_settings
from tests.integration.helpers import firing, get_breaker, poll, post_webhook

COUNTED = ("alerts", "deliveries", "audit_log", "breakers", "tenants")


@dataclass
class PrivateCluster:
    datadir: Path
    port: int
    url: str

    def start(self) -> None:
        embedded_pg.start(self.datadir, self.port)

    def stop(self) -> None:
        embedded_pg.stop(self.datadir)

    def counts(self) -> dict[str, int]:
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}

    def query(self, q: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            cur = conn.execute(q, params or None)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[PrivateCluster]:
    datadir = tmp_path / "pg"
    port = embedded_pg.free_port()
    url = embedded_pg.start(datadir, port)
    migrate.upgrade(url, configure_logging=False)
    c = PrivateCluster(datadir, port, url)
    try:
        yield c
    finally:
        c.stop()


async def receiver_on(aiohttp_client: Any, cluster: PrivateCluster, **overrides: Any) -> Any:
    return await aiohttp_client(create_app(make_settings(cluster.url, **overrides)))


async def readyz(client: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/readyz")
    return resp.status, await resp.json()


async def assert_503(resp: Any) -> dict[str, Any]:
    assert resp.status == 503, await resp.text()
    assert resp.headers["Retry-After"].isdigit()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"] == "database_unavailable"
    assert "database unavailable" in body["detail"]
    assert "Traceback" not in body["detail"]
    return body


async def test_database_down_between_requests(aiohttp_client, cluster):
    client = await receiver_on(aiohttp_client, cluster, max_isolated_percent=100)
    assert (await readyz(client))[0] == 200
    await post_webhook(client, firing("tenant-a"))
    before = cluster.counts()

    await asyncio.to_thread(cluster.stop)

    started = time.monotonic()
    resp = await client.post("/v1/alertmanager", json=firing("tenant-b"), headers=WEBHOOK_HEADERS)
    await assert_503(resp)
    # Generous: the point is "answers promptly instead of hanging", not a benchmark.
    assert time.monotonic() - started < 10

    # Readiness asks the database at most once a second: it turns within that.
    status, body = await poll(
        lambda: readyz(client),
        lambda r: r[1]["checks"]["database"] != "ok",
        within=3,
        what="database check failing",
    )
    assert status == 503
    assert body["status"] == "not ready"
    assert body["checks"]["database"].startswith("unreachable")
    assert "127.0.0.1" not in body["checks"]["database"]  # the class only, no host or user

    # Writes from the API are refused the same way; reads are served from memory.
    resp = await client.put("/v1/tenants/tenant-a", json={"tier": "gold"}, headers=API_HEADERS)
    await assert_503(resp)
    resp = await client.post(
        "/v1/tenants/tenant-a/outcomes", json={"success": 1, "failure": 0}, headers=API_HEADERS
    )
    await assert_503(resp)
    assert (await get_breaker(client, "tenant-a"))["state"] == "open"
    assert (await client.get("/healthz")).status == 200

    await asyncio.to_thread(cluster.start)
    assert cluster.counts() == before  # nothing half-written

    # The same webhook (Alertmanager's retry) now succeeds: no receiver restart.
    out = await post_webhook(client, firing("tenant-b"))
    assert out["new"] == 1
    assert out["breaker_transitions"] == 1
    assert (await get_breaker(client, "tenant-b"))["state"] == "open"
    assert cluster.query("SELECT count(*) FROM alerts WHERE tenant_id = 'tenant-b'") == [(1,)]
    # The listener reconnects by itself too.
    await poll(lambda: readyz(client), lambda r: r[0] == 200, within=30, what="readyz 200")


async def test_database_dies_in_the_middle_of_a_delivery(aiohttp_client, cluster):
    client = await receiver_on(aiohttp_client, cluster)
    # Ten known tenants, so the guard lets tenant-b trip.
    for i in range(10):
        resp = await client.put(
            f"/v1/tenants/tenant-{i}", json={"tier": "silver"}, headers=API_HEADERS
        )
        assert resp.status == 200
    cluster.query("INSERT INTO breakers (tenant_id) VALUES ('tenant-b')")
    before = cluster.counts()

    # Hold tenant-b's breaker row: the delivery writes its delivery, alert and tenant
    # rows, then waits for the lock, and PostgreSQL is stopped under it.
    holder = psycopg.connect(libpq(cluster.url))
    try:
        holder.execute("SELECT * FROM breakers WHERE tenant_id = 'tenant-b' FOR UPDATE")
        posting = asyncio.create_task(
            client.post("/v1/alertmanager", json=firing("tenant-b"), headers=WEBHOOK_HEADERS)
        )

        async def waiting() -> int:
            rows = await asyncio.to_thread(
                cluster.query,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query ILIKE '%breakers%'",
            )
            return rows[0][0]

        await poll(waiting, lambda n: n == 1, what="the delivery to wait on the breaker lock")
        await asyncio.to_thread(cluster.stop)
        await assert_503(await posting)
    finally:
        holder.close()

    await asyncio.to_thread(cluster.start)
    assert cluster.counts() == before  # the delivery's earlier writes were rolled back
    out = await post_webhook(client, firing("tenant-b"))
    assert (out["new"], out["breaker_transitions"]) == (1, 1)
    assert (await get_breaker(client, "tenant-b"))["state"] == "open"
    assert cluster.query("SELECT count(*) FROM deliveries") == [(1,)]


async def test_receiver_starts_while_the_database_is_down_and_recovers(aiohttp_client, cluster):
    await asyncio.to_thread(cluster.stop)
    # The app starts anyway (readyz says why it is not ready) rather than crash-looping.
    client = await receiver_on(aiohttp_client, cluster)
    status, body = await readyz(client)
    assert status == 503
    assert body["checks"]["breaker_listener"].startswith("reconnecting")
    resp = await client.post(
        "/v1/alertmanager",
        json=load_fixture("single-tenant-firing.json"),
        headers=WEBHOOK_HEADERS,
    )
    await assert_503(resp)

    await asyncio.to_thread(cluster.start)
    await poll(lambda: readyz(client), lambda r: r[0] == 200, within=30, what="readyz 200")
    out = await post_webhook(client, load_fixture("single-tenant-firing.json"))
    assert out["new"] == 1
