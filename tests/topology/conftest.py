"""Servers of a production topology, shared within a module (they take 10-20 s to start):
one etcd and two Patroni-managed PostgreSQL 15 nodes in synchronous mode, the receiver's
database migrated on them, and two `python -m receiver serve` replicas on a libpq
multi-host DATABASE_URL.

Needs Debian's patroni, etcd-server and pgbouncer (scripts/system-deps.sh
--with-topology, which `make test` runs) and root (the servers run as `postgres`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.db import migrate
from tests.integration.helpers import ServerProcess
from tests.topology.servers import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    PatroniCluster,
    start_replicas,
)

HERE = Path(__file__).resolve().parent
MISSING = [b for b in ("patroni", "etcd", "pgbouncer", "setpriv") if shutil.which(b) is None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `make test` installs them; a developer running pytest by hand is told how.
    if not MISSING and os.geteuid() == 0:
        return
    skip = pytest.mark.skip(
        reason=f"topology tests need root and {', '.join(MISSING) or 'nothing else'}: "
        "run scripts/system-deps.sh --with-topology (make test does)"
    )
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


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
