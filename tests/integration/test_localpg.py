"""`make run`'s PostgreSQL (receiver.embedded_pg start): no trust, passwords in 0600 files,
an owner and an app role; a taken port is explained, not a bare pg_ctl failure."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from receiver import embedded_pg


@pytest.fixture
def localpg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, int]]:
    monkeypatch.delenv("PGPASSFILE", raising=False)
    datadir, port = tmp_path / "localpg", embedded_pg.free_port()
    # An older cluster made with trust is converted.
    embedded_pg.start(datadir, port)
    try:
        yield datadir, port
    finally:
        embedded_pg.stop(datadir)


def test_passwords_not_trust_and_two_roles(localpg: tuple[Path, int]) -> None:
    datadir, port = localpg
    owner, app, pgpass = embedded_pg.start_with_roles(datadir, port)
    assert (make_url(owner).username, make_url(owner).password) == ("receiver_owner", None)
    assert (make_url(app).username, make_url(app).password) == ("receiver_app", None)
    for name in ("pgpass", "passwords"):
        assert stat.S_IMODE((datadir / name).stat().st_mode) == 0o600
    assert not (datadir / "superuser_password").exists()
    hba = [ln for ln in (datadir / "data/pg_hba.conf").read_text().splitlines() if ln[:1] != "#"]
    assert not any("trust" in ln for ln in hba)
    del os.environ["PGPASSFILE"]  # set by start_with_roles for its own connections
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres")
    for role in ("postgres", "receiver_owner", "receiver_app"):
        conn = psycopg.connect(
            f"host=127.0.0.1 port={port} user={role} dbname=receiver passfile={pgpass}"
        )
        conn.close()
    # Idempotent: a second start reuses the roles and passwords.
    assert embedded_pg.start_with_roles(datadir, port) == (owner, app, pgpass)


def test_a_taken_port_is_explained(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(embedded_pg.EmbeddedPostgresError) as caught:
            embedded_pg.start(tmp_path / "pg", port)
    message = str(caught.value)
    assert f"port {port}" in message and "LOCALPG_PORT=" in message
