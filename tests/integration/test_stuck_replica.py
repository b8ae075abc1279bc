"""A replica stopped (SIGSTOP) inside its transaction while it holds the mass-isolation
guard's advisory lock: the other replicas answer isolating webhooks 503 + Retry-After
within the deadline instead of waiting with no answer, and recover as soon as the stuck
replica's session is ended by idle_in_transaction_session_timeout, or the stuck replica is
killed. The stuck replica itself never answers 200 for the delivery it was stopped in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import aiohttp
import psycopg

from receiver.db.breakers import GUARD_LOCK
from tests.conftest import libpq
from tests.integration.helpers import ServerProcess, firing, poll
from tests.integration.test_replicas import http, start_pair, start_server, webhook_to

__all__ = ["http", "start_server"]  # fixtures used by the tests below

DEADLINE = 3.0
LOCK_TIMEOUT = 2.0
IDLE_IN_TRANSACTION = 3.0
ENV = {
    "RECEIVER_REQUEST_DEADLINE_SECONDS": str(DEADLINE),
    "RECEIVER_DB_LOCK_TIMEOUT_SECONDS": str(LOCK_TIMEOUT),
    "RECEIVER_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": str(IDLE_IN_TRANSACTION),
}


def guard_holder(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
        (GUARD_LOCK,),
    ).fetchone()
    return row[0] if row else None


async def stop_inside_the_transaction(
    http: aiohttp.ClientSession, replica: ServerProcess, url: str
) -> tuple[asyncio.Task[Any], int]:
    """Send `replica` an isolating delivery and SIGSTOP it while its transaction holds the
    guard lock: a second connection holds the tenant's breaker row, so the transaction
    waits there (guard taken) until the replica is stopped; then the row is let go and the
    replica's session sits idle in its transaction, holding the guard. Returns the pending
    request and the stuck backend's pid."""
    holder = psycopg.connect(libpq(url))
    holder.execute(
        "INSERT INTO breakers (tenant_id) VALUES ('tenant-stuck') ON CONFLICT DO NOTHING"
    )
    holder.commit()
    holder.execute("SELECT 1 FROM breakers WHERE tenant_id = 'tenant-stuck' FOR UPDATE")
    pending = asyncio.create_task(webhook_to(http, replica, firing("tenant-stuck")))
    with psycopg.connect(libpq(url), autocommit=True) as watch:
        deadline = time.monotonic() + LOCK_TIMEOUT
        pid = None
        while pid is None and time.monotonic() < deadline:
            pid = guard_holder(watch)
            await asyncio.sleep(0.01)
        assert pid is not None, "the replica never took the guard lock"
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)
        holder.rollback()
        holder.close()
        await asyncio.sleep(0.2)
        state = watch.execute(
            "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        assert state is not None and state[0] == "idle in transaction", state
        assert guard_holder(watch) == pid
    return pending, pid


async def isolating_to(http: aiohttp.ClientSession, replica: ServerProcess, tenant: str) -> Any:
    t0 = time.monotonic()
    async with http.post(
        f"{replica.url}/v1/alertmanager",
        json=firing(tenant),
        headers={"Authorization": f"Bearer {replica.env['RECEIVER_WEBHOOK_TOKEN']}"},
    ) as resp:
        return resp.status, resp.headers.get("Retry-After"), time.monotonic() - t0


async def test_a_stopped_replica_holding_the_guard_costs_others_a_503_not_a_hang(
    start_server, http, clean_db, sql
):
    a, b = await start_pair(start_server, http, **ENV)
    pending, stuck_pid = await stop_inside_the_transaction(http, a, clean_db)
    stopped_at = time.monotonic()
    try:
        status, retry_after, elapsed = await isolating_to(http, b, "tenant-b1")
        assert (status, retry_after is not None) == (503, True)
        assert elapsed < DEADLINE + 0.5, f"answered after {elapsed:.2f}s"
        # A record-only delivery does not wait for the guard at all.
        status, body = await webhook_to(http, b, firing("tenant-b2", isolate=False))
        assert status == 200, body

        # The server ends the stuck session after IDLE_IN_TRANSACTION; B recovers alone.
        await poll(
            lambda: isolating_to(http, b, "tenant-b1"),
            lambda r: r[0] == 200,
            within=IDLE_IN_TRANSACTION + 2 * DEADLINE + 2,
            interval=0.2,
            what="replica B to take the guard again",
        )
        assert time.monotonic() - stopped_at < IDLE_IN_TRANSACTION + 2 * DEADLINE + 2
        gone = sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", stuck_pid)[0][0]
        assert gone == 0
    finally:
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGCONT)

    # Woken up, A finds its session gone: 503 for the delivery it was stopped in, never 200.
    status, body = await asyncio.wait_for(pending, timeout=DEADLINE + 10)
    assert status == 503, body
    assert sql("SELECT count(*) FROM alerts WHERE tenant_id = 'tenant-stuck'")[0][0] == 0
    # And it serves again; Alertmanager's retry of that delivery goes through.
    status, body = await webhook_to(http, a, firing("tenant-stuck"))
    assert status == 200, body
    assert body["new"] == 1


async def test_a_stopped_replica_that_is_killed_releases_the_guard_at_once(
    start_server, http, clean_db, sql
):
    # Idle-in-transaction far away: only the kill can free the guard here.
    env = {**ENV, "RECEIVER_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "600"}
    a, b = await start_pair(start_server, http, **env)
    pending, _ = await stop_inside_the_transaction(http, a, clean_db)
    status, _, elapsed = await isolating_to(http, b, "tenant-b1")
    assert status == 503 and elapsed < DEADLINE + 0.5

    assert a.proc is not None
    a.proc.kill()  # the kernel closes its sockets: the server ends the session at once
    a.proc.wait(timeout=10)
    killed = time.monotonic()
    await poll(
        lambda: isolating_to(http, b, "tenant-b1"),
        lambda r: r[0] == 200,
        within=DEADLINE + 3,
        interval=0.1,
        what="replica B to take the guard again",
    )
    assert time.monotonic() - killed < DEADLINE + 3
    with contextlib.suppress(aiohttp.ClientError):
        await pending  # the connection to the killed replica is gone
    assert sql("SELECT count(*) FROM alerts WHERE tenant_id = 'tenant-stuck'")[0][0] == 0
