"""Real `python -m receiver serve` processes: two replicas on one database agree on
breakers within a second, make one transition from copies sent to both, and a replica
whose LISTEN connection is killed says so in /readyz, reconnects and catches up. Also:
the server refuses to start without tokens unless told to run unauthenticated."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from receiver import embedded_pg
from receiver.cache.listener import APPLICATION_NAME
from tests.conftest import API_HEADERS, API_TOKEN, WEBHOOK_HEADERS, WEBHOOK_TOKEN
from tests.integration.helpers import (
    REPO,
    ServerProcess,
    audit_rows,
    firing,
    poll,
    server_env,
    server_processes,
)

AGREEMENT_SECONDS = 1.0


@pytest.fixture
def start_server(tmp_path: Path, clean_db: str) -> Iterator[Callable[..., ServerProcess]]:
    with server_processes(tmp_path, clean_db) as start:
        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def start_pair(start_server, http, **extra: str) -> tuple[ServerProcess, ServerProcess]:
    env = {
        "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "RECEIVER_API_TOKEN": API_TOKEN,
        # A handful of tenants in these tests: keep the mass-isolation guard out of the way.
        "RECEIVER_MAX_ISOLATED_PERCENT": "100",
        **extra,
    }
    a = start_server("replica-a", **env)
    b = start_server("replica-b", **env)
    await asyncio.gather(a.wait_ready(http), b.wait_ready(http))
    return a, b


@pytest.fixture
async def replicas(start_server, http) -> tuple[ServerProcess, ServerProcess]:
    return await start_pair(start_server, http)


async def breaker_on(http: aiohttp.ClientSession, server: ServerProcess, tenant: str) -> dict:
    async with http.get(f"{server.url}/v1/tenants/{tenant}/breaker", headers=API_HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def webhook_to(
    http: aiohttp.ClientSession, server: ServerProcess, body: Any, headers: Any = WEBHOOK_HEADERS
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{server.url}/v1/alertmanager", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def readyz(http: aiohttp.ClientSession, server: ServerProcess) -> tuple[int, dict]:
    async with http.get(f"{server.url}/readyz") as resp:
        return resp.status, await resp.json()


# --- two replicas ----------------------------------------------------------------------------


async def test_the_other_replica_agrees_within_a_second(replicas, http, sql):
    a, b = replicas
    assert (await breaker_on(http, b, "tenant-r"))["state"] == "closed"

    status, body = await webhook_to(http, a, firing("tenant-r"))
    assert status == 200, body
    committed = time.monotonic()
    # The replica that committed answers with the new state at once.
    assert (await breaker_on(http, a, "tenant-r"))["state"] == "open"

    seen = await poll(
        lambda: breaker_on(http, b, "tenant-r"),
        lambda br: br["state"] == "open",
        within=10,
        interval=0.01,
        what="replica B to read open",
    )
    elapsed = time.monotonic() - committed
    assert elapsed < AGREEMENT_SECONDS, f"replica B agreed after {elapsed:.3f}s"
    assert (seen["allow"], seen["admit_ratio"], seen["trips"]) == (False, 0.0, 1)

    # An override on B is seen by A as quickly.
    async with http.post(
        f"{b.url}/v1/tenants/tenant-r/breaker",
        json={"action": "force_close", "reason": "verified healthy", "actor": "carol"},
        headers=API_HEADERS,
    ) as resp:
        assert resp.status == 200, await resp.text()
    changed = time.monotonic()
    await poll(
        lambda: breaker_on(http, a, "tenant-r"),
        lambda br: br["state"] == "forced_closed",
        within=10,
        interval=0.01,
        what="replica A to read forced_closed",
    )
    elapsed = time.monotonic() - changed
    assert elapsed < AGREEMENT_SECONDS, f"replica A agreed after {elapsed:.3f}s"


async def test_copies_sent_to_both_replicas_make_one_transition(replicas, http, sql):
    a, b = replicas
    tenants = [f"tenant-c{i}" for i in range(5)]
    for tenant in tenants:
        body = firing(tenant)
        # Both Alertmanager peers deliver to both replicas, at the same moment.
        answers = await asyncio.gather(*(webhook_to(http, s, body) for s in (a, b, a, b)))
        assert [s for s, _ in answers] == [200] * 4, answers
        assert sum(out["new"] for _, out in answers) == 1
        assert sum(out["breaker_transitions"] for _, out in answers) == 1
    for tenant in tenants:
        assert len(audit_rows(sql, "breaker.transition", tenant)) == 1
        assert sql("SELECT count(*) FROM alerts WHERE tenant_id = %s", tenant) == [(1,)]
        for server in (a, b):
            assert (await breaker_on(http, server, tenant))["state"] == "open"
    assert sql("SELECT count(*) FROM deliveries") == [(4 * len(tenants),)]


async def test_replica_with_a_killed_listener_reconnects_and_catches_up(replicas, http, sql):
    a, b = replicas
    assert b.proc is not None
    b_listener = f"{APPLICATION_NAME} pid={b.proc.pid}"
    assert sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", b_listener) == [
        (1,)
    ]
    a_listener = f"{APPLICATION_NAME} pid={a.proc.pid}" if a.proc else ""
    killed = 0
    stop = asyncio.Event()

    async def keep_killing() -> None:
        # Each kill is what the brief's one-off pg_terminate_backend does; repeating it
        # keeps B's listener down (it reconnects within a fraction of a second) while the
        # test looks at readyz and changes a breaker through A.
        nonlocal killed
        while not stop.is_set():
            rows = await asyncio.to_thread(
                sql,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                b_listener,
            )
            killed += sum(1 for (ok,) in rows if ok)
            await asyncio.sleep(0.02)

    killer = asyncio.create_task(keep_killing())
    try:
        status, body = await poll(
            lambda: readyz(http, b),
            lambda r: r[0] == 503,
            within=15,
            interval=0.01,
            what="replica B's readyz to fail",
        )
        assert body["status"] == "not ready"
        assert body["checks"]["breaker_listener"].startswith("reconnecting"), body
        assert body["checks"]["database"] == "ok"  # only the listener is down
        # Meanwhile a change is made through A ...
        status, out = await webhook_to(http, a, firing("tenant-k"))
        assert status == 200, out
        assert out["breaker_transitions"] == 1
        # ... and A, whose listener is untouched, stays ready.
        assert (await readyz(http, a))[0] == 200
    finally:
        stop.set()
        await killer
    assert killed >= 1
    assert sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", a_listener) == [
        (1,)
    ]

    await poll(
        lambda: readyz(http, b),
        lambda r: r[0] == 200,
        within=30,
        interval=0.05,
        what="replica B's readyz to recover",
    )
    # B reloaded on reconnect: it knows what A changed while it was not listening.
    assert (await breaker_on(http, b, "tenant-k"))["state"] == "open"
    # ... and follows new changes again at once.
    status, _ = await webhook_to(http, a, firing("tenant-k2"))
    assert status == 200
    changed = time.monotonic()
    await poll(
        lambda: breaker_on(http, b, "tenant-k2"),
        lambda br: br["state"] == "open",
        within=10,
        interval=0.01,
        what="replica B to follow again",
    )
    assert time.monotonic() - changed < AGREEMENT_SECONDS
    assert "breaker listener lost its connection" in b.log()


async def test_two_sweepers_persist_a_time_driven_change_once(start_server, http, sql):
    a, b = await start_pair(
        start_server,
        http,
        RECEIVER_BREAKER_OPEN_SECONDS="0.5",
        RECEIVER_SWEEP_INTERVAL_SECONDS="0.05",
    )
    tenants = [f"tenant-s{i}" for i in range(8)]
    for i, tenant in enumerate(tenants):
        status, _ = await webhook_to(http, (a, b)[i % 2], firing(tenant))
        assert status == 200

    async def stored() -> list[tuple[str]]:
        return await asyncio.to_thread(
            sql, "SELECT state FROM breakers WHERE tenant_id LIKE 'tenant-s%'"
        )

    await poll(
        stored,
        lambda rows: len(rows) == len(tenants) and {r[0] for r in rows} == {"half_open"},
        within=20,
        what="every breaker stored half-open",
    )
    for tenant in tenants:
        moves = [
            (actor, d["from"], d["to"])
            for actor, d in audit_rows(sql, "breaker.transition", tenant)
        ]
        assert moves == [("alertmanager", "closed", "open"), ("system", "open", "half_open")]
        for server in (a, b):
            assert (await breaker_on(http, server, tenant))["state"] == "half_open"


# --- starting the server ---------------------------------------------------------------------


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("tokens", "missing"),
    [
        ({}, "RECEIVER_WEBHOOK_TOKEN, RECEIVER_API_TOKEN"),
        ({"RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN}, "RECEIVER_API_TOKEN"),
        ({"RECEIVER_API_TOKEN": API_TOKEN}, "RECEIVER_WEBHOOK_TOKEN"),
        ({"RECEIVER_ALLOW_UNAUTHENTICATED": "false"}, "RECEIVER_WEBHOOK_TOKEN"),
        # An empty variable (an unset one in a compose file) is no token, not the token "".
        ({"RECEIVER_WEBHOOK_TOKEN": "", "RECEIVER_API_TOKEN": API_TOKEN}, "RECEIVER_WEBHOOK_TOKEN"),
        (
            {"RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN, "RECEIVER_API_TOKEN": " "},
            "RECEIVER_API_TOKEN",
        ),
    ],
)
def test_serve_refuses_to_start_without_tokens(clean_db, tokens, missing):
    proc = run_serve(server_env(clean_db, embedded_pg.free_port(), **tokens))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "refusing to start" in out, out
    assert missing in out
    assert "RECEIVER_ALLOW_UNAUTHENTICATED=true" in out
    assert "Traceback" not in out


def test_serve_refuses_unusable_settings(clean_db, tmp_path):
    empty = tmp_path / "empty_token"
    empty.write_text("\n")
    cases = [
        ({"RECEIVER_WEBHOOK_TOKEN_FILE": str(empty), "RECEIVER_API_TOKEN": "x"}, "is empty"),
        ({"RECEIVER_WEBHOOK_TOKEN": "x", "RECEIVER_API_TOKEN_FILE": "/nonexistent"}, "nonexistent"),
        (
            {"RECEIVER_WEBHOOK_TOKEN": "x", "RECEIVER_API_TOKEN": "y", "RECEIVER_PORT": "http"},
            "port",
        ),
    ]
    for extra, message in cases:
        env = server_env(clean_db, embedded_pg.free_port())
        env.update(extra)
        proc = run_serve(env)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert message in out, out
        assert "Traceback" not in out, out
    env = server_env(clean_db, 0, RECEIVER_ALLOW_UNAUTHENTICATED="true")
    del env["DATABASE_URL"]
    proc = run_serve(env)
    assert proc.returncode != 0
    assert "DATABASE_URL" in proc.stdout + proc.stderr


async def test_serve_unauthenticated_when_allowed(start_server, http, sql):
    server = start_server("open", RECEIVER_ALLOW_UNAUTHENTICATED="true")
    await server.wait_ready(http)
    status, out = await webhook_to(http, server, firing("tenant-u"), headers={})
    assert status == 200, out
    async with http.get(f"{server.url}/v1/tenants/tenant-u/breaker") as resp:
        assert resp.status == 200
        assert (await resp.json())["state"] == "open"
    async with http.put(f"{server.url}/v1/tenants/tenant-u", json={"tier": "gold"}) as resp:
        assert resp.status == 200, await resp.text()
    assert "endpoints without a token are open" in server.log()
