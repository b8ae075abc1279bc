"""Group commit (receiver/service/group_commit.py) through real `python -m receiver serve`
processes on one database: batches keep every guarantee of one delivery per transaction.

The servers wait 50 ms to close a batch, so that concurrent requests surely share one;
`deliveries.xmin` (the id of the transaction that wrote each row) shows that they did."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_TOKEN, WEBHOOK_HEADERS, WEBHOOK_TOKEN
from tests.integration.helpers import (
    ServerProcess,
    audit_rows,
    fingerprint,
    firing,
    isolating_alert,
    server_processes,
    webhook_payload,
)

BATCH_ENV = {
    "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "RECEIVER_API_TOKEN": API_TOKEN,
    "RECEIVER_BATCH_WAIT_MS": "50",
    "RECEIVER_BREAKER_OPEN_SECONDS": "3600",
}


@pytest.fixture
def start_server(tmp_path: Path, clean_db: str) -> Iterator[Callable[..., ServerProcess]]:
    with server_processes(tmp_path, clean_db, **BATCH_ENV) as start:
        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


async def pair(start_server: Any, http: aiohttp.ClientSession, **env: str) -> list[ServerProcess]:
    servers = [start_server("replica-a", **env), start_server("replica-b", **env)]
    await asyncio.gather(*(s.wait_ready(http) for s in servers))
    return servers


async def post(
    http: aiohttp.ClientSession, server: ServerProcess, body: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{server.url}/v1/alertmanager", json=body, headers=WEBHOOK_HEADERS) as r:
        return r.status, await r.json()


def batched(sql: Callable[..., list[tuple[Any, ...]]]) -> int:
    """The largest number of deliveries one transaction committed."""
    rows = sql("SELECT count(*) FROM deliveries GROUP BY xmin::text ORDER BY 1 DESC LIMIT 1")
    return int(rows[0][0]) if rows else 0


async def test_64_copies_of_one_alert_across_two_replicas_make_one_trip(start_server, http, sql):
    servers = await pair(start_server, http, RECEIVER_MAX_ISOLATED_PERCENT="100")
    body = firing("tenant-g")
    answers = await asyncio.gather(*(post(http, servers[i % 2], body) for i in range(64)))
    assert [s for s, _ in answers] == [200] * 64, answers
    assert sum(out["new"] for _, out in answers) == 1
    assert sum(out["breaker_transitions"] for _, out in answers) == 1
    assert len(audit_rows(sql, "breaker.transition", "tenant-g")) == 1
    assert len(audit_rows(sql, "incident.opened")) == 1
    assert sql("SELECT count(*) FROM incidents") == [(1,)]
    assert sql("SELECT count(*) FROM alerts") == [(1,)]
    assert sql("SELECT count(*) FROM deliveries") == [(64,)]
    assert batched(sql) > 1  # copies did share transactions


@pytest.mark.parametrize(("percent", "isolated"), [(20, 200), (10, 100)])
async def test_200_tenants_tripping_at_once_respect_the_guard(
    start_server, http, sql, percent, isolated
):
    tenants = [f"t{i:04d}" for i in range(1000)]
    sql("INSERT INTO tenants (tenant_id) SELECT unnest(%s::text[])", tenants)
    servers = await pair(start_server, http, RECEIVER_MAX_ISOLATED_PERCENT=str(percent))

    async def deliver(i: int, tenant: str) -> int:
        # As Alertmanager does: a 503 (on a busy machine 200 trips in a row can outlast the
        # deadline) is retried, and the retry is a duplicate or the trip.
        for _ in range(20):
            status, _ = await post(http, servers[i % 2], firing(tenant))
            if status != 503:
                return status
            await asyncio.sleep(0.5)
        return status

    statuses = await asyncio.gather(*(deliver(i, t) for i, t in enumerate(tenants[:200])))
    assert statuses == [200] * 200
    assert sql("SELECT count(*) FROM breakers WHERE state = 'open'") == [(isolated,)]
    assert len(audit_rows(sql, "breaker.suppressed")) == 200 - isolated
    opened = sql("SELECT count(*) FROM audit_log WHERE action = 'breaker.transition'")
    assert opened == [(isolated,)]
    assert batched(sql) > 1


async def test_sigkill_mid_batch_loses_no_answered_delivery(start_server, http, sql):
    a, b = await pair(start_server, http, RECEIVER_MAX_ISOLATED_PERCENT="100")
    bodies = [webhook_payload(isolating_alert(f"k{i:03d}", isolate=False)) for i in range(300)]
    answered: list[int] = []

    async def send(i: int) -> None:
        try:
            status, _ = await post(http, a, bodies[i])
        except aiohttp.ClientError:
            return
        if status == 200:
            answered.append(i)
            if len(answered) == 40:
                assert a.proc is not None
                os.kill(a.proc.pid, signal.SIGKILL)

    await asyncio.gather(*(send(i) for i in range(len(bodies))))
    assert 40 <= len(answered) < len(bodies)
    # Alertmanager retries what was not answered 2xx, here through the other replica.
    retried = [i for i in range(len(bodies)) if i not in set(answered)]
    answers = await asyncio.gather(*(post(http, b, bodies[i]) for i in retried))
    assert [s for s, _ in answers] == [200] * len(retried)
    fingerprints = {body["alerts"][0]["fingerprint"] for body in bodies}
    stored = sql("SELECT fingerprint, count(*) FROM alerts GROUP BY fingerprint")
    assert {fp for fp, _ in stored} == fingerprints
    assert {n for _, n in stored} == {1}
    fired = sql("SELECT count(*) FROM audit_log WHERE action = 'alert.fired'")
    assert fired == [(len(bodies),)]  # each once, answered before the kill or after


POISON = """
CREATE OR REPLACE FUNCTION group_commit_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.alertname = 'Poison' THEN
        RAISE EXCEPTION 'poisoned alert' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER group_commit_poison BEFORE INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION group_commit_poison();
"""


@pytest.fixture
def poison(sql: Callable[..., list[tuple[Any, ...]]]) -> Iterator[None]:
    """A delivery that can never succeed: the database refuses its alert (SQLSTATE 22)."""
    sql(POISON)
    try:
        yield
    finally:
        sql("DROP TRIGGER group_commit_poison ON alerts; DROP FUNCTION group_commit_poison()")


async def test_a_delivery_that_can_never_succeed_fails_alone(start_server, http, sql, poison):
    server = start_server("replica-a", RECEIVER_MAX_ISOLATED_PERCENT="100")
    await server.wait_ready(http)
    bodies = [firing(f"p{i:02d}") for i in range(16)]
    bad = isolating_alert("p-bad")
    bad["labels"]["alertname"] = "Poison"
    bodies.insert(7, webhook_payload(bad))
    answers = await asyncio.gather(*(post(http, server, body) for body in bodies))
    statuses = [s for s, _ in answers]
    assert statuses[7] == 422, answers[7]
    assert answers[7][1]["error"] == "unprocessable"
    assert statuses[:7] + statuses[8:] == [200] * 16, answers
    assert sql("SELECT count(*) FROM alerts") == [(16,)]
    assert sql("SELECT count(*) FROM breakers WHERE state = 'open'") == [(16,)]
    assert sql("SELECT count(*) FROM deliveries") == [(16,)]
    assert "written one by one" in server.log()  # the batch failed, then its members alone


async def test_a_mixed_batch_gives_each_delivery_its_own_result_and_audit_rows(
    start_server, http, sql
):
    """Deliveries for distinct tenants are recorded with one statement set; copies, a
    second alert of one tenant and a platform alert are written after what they could
    see. Each answer, `deliveries` row and audit row is the delivery's own."""
    server = start_server("replica-a", RECEIVER_MAX_ISOLATED_PERCENT="100")
    await server.wait_ready(http)
    bodies = [
        webhook_payload(isolating_alert(f"m{i:02d}"), isolating_alert(f"m{i:02d}", isolate=False))
        for i in range(20)
    ]
    copy_of = 3
    bodies.append(bodies[copy_of])  # an HA peer's copy: a duplicate
    second = isolating_alert("m05")  # the same tenant, another alert
    second["labels"]["alertname"] = "TenantLatencyHigh"
    second["fingerprint"] = fingerprint(second["labels"])
    bodies.append(webhook_payload(second))
    platform = isolating_alert("none", isolate=False)
    platform["labels"] = {"alertname": "PlatformDown", "scope": "platform"}
    platform["fingerprint"] = fingerprint(platform["labels"])
    bodies.append(webhook_payload(platform))

    answers = await asyncio.gather(*(post(http, server, body) for body in bodies))
    assert [s for s, _ in answers] == [200] * len(bodies), answers
    outs = [out for _, out in answers]
    assert len({out["delivery_id"] for out in outs}) == len(bodies)
    assert batched(sql) > 1  # they did share transactions
    for i, out in enumerate(outs[:20]):
        if i == copy_of and out["new"] == 0:
            continue  # the copy came first: its original is the duplicate
        assert (out["alerts"], out["new"], out["duplicates"]) == (2, 2, 0), (i, out)
    copies = [outs[copy_of], outs[20]]
    assert sorted((o["new"], o["duplicates"]) for o in copies) == [(0, 2), (2, 0)]
    assert sum(o["breaker_transitions"] for o in copies) == 1
    assert (outs[21]["new"], outs[22]["new"]) == (1, 1)

    # The deliveries table's counts are each delivery's.
    stored = dict(sql("SELECT id, new_alerts FROM deliveries"))
    assert stored == {out["delivery_id"]: out["new"] for out in outs}
    # Each alert's rows name the delivery that carried it first; each transition the
    # delivery whose alert tripped it; one delivery.accepted per delivery, with its counts.
    first_carrier = {}
    for body, out in zip(bodies, outs, strict=True):
        for a in body["alerts"]:
            if out["new"]:
                first_carrier.setdefault(a["fingerprint"], out["delivery_id"])
    fired = sql(
        "SELECT details->>'fingerprint', delivery_id FROM audit_log WHERE action = 'alert.fired'"
    )
    assert dict(fired) == first_carrier and len(fired) == len(first_carrier)
    tripped = sql(
        "SELECT tenant_id, delivery_id FROM audit_log WHERE action = 'breaker.transition'"
    )
    by_tenant = {
        body["alerts"][0]["labels"]["tenant_id"]: out["delivery_id"]
        for body, out in zip(bodies[:21], outs[:21], strict=True)
        if out["breaker_transitions"]
    }
    assert dict(tripped) == by_tenant and len(tripped) == 20
    accepted = sql(
        "SELECT delivery_id, (details->>'new')::int FROM audit_log"
        " WHERE action = 'delivery.accepted'"
    )
    assert dict(accepted) == stored and len(accepted) == len(bodies)
    # The log reads one delivery after the other: within each transaction, each
    # delivery's rows are contiguous.
    order = [
        d
        for (d,) in sql(
            "SELECT delivery_id FROM audit_log WHERE delivery_id IS NOT NULL"
            " ORDER BY xmin::text, id"
        )
    ]
    runs = [d for i, d in enumerate(order) if i == 0 or order[i - 1] != d]
    assert len(runs) == len(set(runs)) == len(bodies)
    # Each tenant's record-only alert is linked to the incident its trip opened or joined.
    unlinked = sql(
        "SELECT a.tenant_id FROM alerts a WHERE NOT a.isolating AND a.tenant_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM incident_alerts l WHERE l.fingerprint = a.fingerprint)"
    )
    assert unlinked == []
    # Every tripping delivery names the incident it opened or joined.
    assert all(out["incidents"] for out in outs if out["breaker_transitions"])


# --- RECEIVER_WORKERS ------------------------------------------------------------------------


async def test_two_workers_share_one_port_and_both_see_a_trip(start_server, http, sql):
    server = start_server("workers", RECEIVER_WORKERS="2", RECEIVER_MAX_ISOLATED_PERCENT="100")
    await server.wait_ready(http)
    # Two serving processes, each with its own breaker listener (its pid in the name).
    listeners = await poll_rows(
        sql,
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
        "%pid=%",
        count=2,
    )
    assert len({name for (name,) in listeners}) == 2
    status, out = await post(http, server, firing("tenant-w"))
    assert (status, out["breaker_transitions"]) == (200, 1)
    # Fresh connections: the kernel spreads them over both processes; each must read open
    # (the one that committed at once, the other from NOTIFY).
    states = []
    for _ in range(40):
        async with aiohttp.ClientSession() as fresh:
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with fresh.get(f"{server.url}/v1/tenants/tenant-w/breaker", headers=headers) as r:
                states.append((await r.json())["state"])
        if states[-1] != "open":
            await asyncio.sleep(0.05)
    assert states[-20:] == ["open"] * 20, states


async def poll_rows(
    sql: Callable[..., list[tuple[Any, ...]]], query: str, *params: Any, count: int
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for _ in range(100):
        rows = sql(query, *params)
        if len(rows) >= count:
            break
        await asyncio.sleep(0.1)
    return rows
