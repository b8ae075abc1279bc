"""Pinned (issue 11): a request's transaction is retried in place when PostgreSQL reports a
serialization failure or a deadlock, and once the retries are used up the answer is a 503
with Retry-After, never a 500.

The first test provokes a real deadlock between a webhook delivery and a second
connection. The others make AsyncSession.execute raise what SQLAlchemy raises for a real
psycopg SerializationFailure / DeadlockDetected, for a number of calls, inside HTTP
requests only (background loops of the app are left alone), and count the attempts
against receiver.db.transaction.ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors
import pytest
from aiohttp import web
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.app import create_app
from receiver.db import transaction
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS, libpq, make_settings
from tests.integration.helpers import audit_rows, firing, get_breaker, poll, table_counts

Rows = Callable[..., list[tuple[Any, ...]]]


# --- a real deadlock -----------------------------------------------------------------------


def waiting_backends(sql: Rows, mine: int, wait_event: str) -> list[int]:
    return [
        pid
        for (pid,) in sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = %s AND pid <> %s",
            wait_event,
            mine,
        )
    ]


async def wait_for_backends(sql: Rows, mine: int, wait_event: str) -> list[int]:
    async def probe() -> list[int]:
        return waiting_backends(sql, mine, wait_event)

    return await poll(probe, bool, within=20, what=f"a backend waiting on {wait_event}")


def advisory_keys(sql: Rows, pid: int) -> list[int]:
    """The advisory locks `pid` holds, as the bigint keys pg_advisory_xact_lock takes."""
    keys = []
    for classid, objid, objsubid in sql(
        "SELECT classid::bigint, objid::bigint, objsubid FROM pg_locks "
        "WHERE pid = %s AND locktype = 'advisory' AND granted",
        pid,
    ):
        assert objsubid == 1, "a one-bigint advisory key"
        key = (classid << 32) | objid
        keys.append(key - (1 << 64) if key >= 1 << 63 else key)
    return keys


async def test_a_real_deadlock_is_retried_and_the_delivery_succeeds(client, sql, clean_db, caplog):
    caplog.set_level(logging.INFO, logger=transaction.__name__)
    other = await psycopg.AsyncConnection.connect(libpq(clean_db))
    try:
        try:
            # Our side never runs the deadlock check first: the webhook's backend does
            # (after the server's deadlock_timeout) and is the one aborted.
            await other.execute("SET deadlock_timeout = '60s'")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("needs a superuser to set deadlock_timeout")
        mine = other.info.backend_pid
        # An uncommitted row the delivery must wait for: it records every tenant it sees.
        await other.execute("INSERT INTO tenants (tenant_id) VALUES ('tenant-a')")

        delivery = asyncio.create_task(
            client.post("/v1/alertmanager", json=firing("tenant-a"), headers=WEBHOOK_HEADERS)
        )
        (webhook_pid,) = await wait_for_backends(sql, mine, "transactionid")
        # A trip is decided under an advisory lock taken before the writes.
        held = advisory_keys(sql, webhook_pid)
        assert held, "the delivery holds the trip lock while it writes"
        guard = held[0]
        assert not delivery.done()

        # Close the circle: we wait for the delivery's lock while it waits for our row.
        # PostgreSQL aborts the delivery's transaction (40P01), which releases the lock.
        await asyncio.wait_for(other.execute("SELECT pg_advisory_xact_lock(%s)", (guard,)), 30)
        assert not delivery.done()  # not answered: retried in place...
        # ...and the retry queues behind the lock we now hold.
        await wait_for_backends(sql, mine, "advisory")
        assert not delivery.done()
        await other.rollback()

        resp = await asyncio.wait_for(delivery, 30)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    finally:
        await other.close()

    assert (body["new"], body["breaker_transitions"], len(body["incidents"])) == (1, 1, 1)
    # It was PostgreSQL's deadlock (40P01) that was retried, once.
    retried = [r for r in caplog.records if hasattr(r, "sqlstate")]
    assert [(r.sqlstate, r.attempt) for r in retried] == [("40P01", 1)]
    # The aborted attempt left nothing behind: one of everything.
    counts = table_counts(sql)
    assert (counts["alerts"], counts["deliveries"], counts["breakers"], counts["tenants"]) == (
        1,
        1,
        1,
        1,
    )
    assert len(audit_rows(sql, "breaker.transition", "tenant-a")) == 1
    assert len(audit_rows(sql, "delivery.accepted")) == 1
    assert sql("SELECT count(*) FROM incidents") == [(1,)]
    assert (await get_breaker(client, "tenant-a"))["state"] == "open"


# --- conflicts injected at the session ---------------------------------------------------------

IN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("in_request", default=False)


@web.middleware
async def mark_request(request: web.Request, handler: Any) -> web.StreamResponse:
    token = IN_REQUEST.set(True)
    try:
        return await handler(request)
    finally:
        IN_REQUEST.reset(token)


def conflict(kind: type[psycopg.Error]) -> sa_exc.DBAPIError:
    """What SQLAlchemy raises when psycopg reports `kind` for a statement."""
    orig = kind(f"{kind.__name__}: injected by the test")
    return sa_exc.OperationalError("SELECT 1", None, orig)


@dataclass
class Injector:
    kind: type[psycopg.Error] = psycopg.errors.SerializationFailure
    failures_left: int = 0
    raised: int = 0


@pytest.fixture
def injector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Injector]:
    inj = Injector()
    real = AsyncSession.execute

    async def execute(self: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        if IN_REQUEST.get() and inj.failures_left > 0:
            inj.failures_left -= 1
            inj.raised += 1
            raise conflict(inj.kind)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(AsyncSession, "execute", execute)
    yield inj


@pytest.fixture
async def marked_client(aiohttp_client: Any, clean_db: str) -> Any:
    app = create_app(make_settings(clean_db))
    app.middlewares.append(mark_request)
    return await aiohttp_client(app)


KINDS = [psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
async def test_conflicts_short_of_the_limit_are_retried_to_success(
    marked_client, injector, sql, kind
):
    assert transaction.ATTEMPTS > 1
    injector.kind, injector.failures_left = kind, transaction.ATTEMPTS - 1
    resp = await marked_client.post(
        "/v1/alertmanager", json=firing("tenant-a"), headers=WEBHOOK_HEADERS
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert injector.raised == transaction.ATTEMPTS - 1  # every attempt but the last failed
    assert (body["new"], body["breaker_transitions"]) == (1, 1)
    assert sql("SELECT count(*) FROM deliveries") == [(1,)]
    assert len(audit_rows(sql, "breaker.transition", "tenant-a")) == 1


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
async def test_a_webhook_out_of_retries_is_a_503_with_retry_after(
    marked_client, injector, sql, kind
):
    injector.kind, injector.failures_left = kind, 100
    resp = await marked_client.post(
        "/v1/alertmanager", json=firing("tenant-a"), headers=WEBHOOK_HEADERS
    )
    assert resp.status == 503, await resp.text()
    assert int(resp.headers["Retry-After"]) > 0
    body = await resp.json()
    assert set(body) >= {"error", "detail"} and "Traceback" not in body["detail"]
    assert injector.raised == transaction.ATTEMPTS  # the work ran ATTEMPTS times, no more
    assert table_counts(sql) == dict.fromkeys(table_counts(sql), 0)  # nothing was written

    # Alertmanager's retry, once the conflicts are over, goes through.
    injector.failures_left = 0
    resp = await marked_client.post(
        "/v1/alertmanager", json=firing("tenant-a"), headers=WEBHOOK_HEADERS
    )
    assert resp.status == 200, await resp.text()
    assert (await get_breaker(marked_client, "tenant-a"))["state"] == "open"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/tenants/acme", {"tier": "gold"}),
        ("POST", "/v1/tenants/acme/breaker", {"action": "force_open", "reason": "r", "actor": "a"}),
        ("POST", "/v1/tenants/acme/outcomes", {"success": 1, "failure": 0}),
    ],
)
async def test_an_api_write_out_of_retries_is_a_503_with_retry_after(
    marked_client, injector, sql, method, path, body
):
    injector.failures_left = 100
    resp = await marked_client.request(method, path, json=body, headers=API_HEADERS)
    assert resp.status == 503, await resp.text()
    assert int(resp.headers["Retry-After"]) > 0
    assert injector.raised == transaction.ATTEMPTS
    assert sql("SELECT count(*) FROM audit_log") == [(0,)]
