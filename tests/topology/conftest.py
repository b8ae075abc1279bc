"""Servers of a production topology, shared within a module (they take 10-20 s to start):
one etcd and two Patroni-managed PostgreSQL 15 nodes in synchronous mode, the receiver's
database migrated on them, and two `python -m receiver serve` replicas on a libpq
multi-host DATABASE_URL.

Needs Debian's patroni, etcd-server and pgbouncer (scripts/system-deps.sh
--with-topology, which `make test` runs) and root (the servers run as `postgres`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from receiver import embedded_pg, migrate
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN
from tests.integration.helpers import ServerProcess, server_env
from tests.topology.servers import APP_DB, APP_PASSWORD, APP_USER, PatroniCluster

MISSING = [b for b in ("patroni", "etcd", "pgbouncer", "setpriv") if shutil.which(b) is None]
if MISSING or os.geteuid() != 0:
    # `make test` installs them; a developer running pytest by hand is told how.
    pytest.skip(
        f"topology tests need root and {', '.join(MISSING) or 'nothing else'}: "
        "run scripts/system-deps.sh --with-topology (make test does)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="receiver-topology-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def patroni(workdir: Path) -> Iterator[PatroniCluster]:
    cluster = PatroniCluster.create(workdir)
    try:
        cluster.bootstrap()
        cluster.create_app_database()
        leader = cluster.leader()
        assert leader is not None
        migrate.upgrade(
            f"postgresql+psycopg://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{leader.pg_port}/{APP_DB}",
            configure_logging=False,
        )
        yield cluster
    finally:
        cluster.stop()


REPLICA_ENV = {
    "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "RECEIVER_API_TOKEN": API_TOKEN,
    # Many tenants trip in these tests: keep the mass-isolation guard out of the way.
    "RECEIVER_MAX_ISOLATED_PERCENT": "100",
}


def start_replicas(workdir: Path, urls: list[str], **extra: str) -> list[ServerProcess]:
    servers = []
    for i, url in enumerate(urls):
        port = embedded_pg.free_port()
        env = server_env(url, port, **REPLICA_ENV, **extra)
        name = "ab"[i]
        servers.append(
            ServerProcess(env=env, log_path=workdir / f"replica-{name}.log", port=port).start()
        )

    async def ready() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await asyncio.gather(*(s.wait_ready(http) for s in servers))

    try:
        asyncio.run(ready())
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


@pytest.fixture(scope="module")
def replicas(workdir: Path, patroni: PatroniCluster) -> Iterator[list[ServerProcess]]:
    """Replica A lists the nodes in one order, replica B in the other: libpq finds the
    read-write one either way."""
    p1, p2 = patroni.ports
    servers = start_replicas(
        workdir, [patroni.multi_host_url([p1, p2]), patroni.multi_host_url([p2, p1])]
    )
    yield servers
    for s in servers:
        s.stop()
