"""Least privilege on a real PostgreSQL: `migrate` as the owner with RECEIVER_DB_APP_ROLE
grants the app role what `serve` needs and no more. As the app role, the audit log cannot
be rewritten, truncated or unprotected, and the service works."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from receiver.cli import main as cli_main
from receiver.db import migrate
from receiver.db.roles import APP_TABLE_PRIVILEGES, RoleError, tables_without_grants
from tests.conftest import API_HEADERS, libpq, make_settings
from tests.integration.helpers import firing, post_webhook


class Cluster:
    def __init__(self, pg_server: str) -> None:
        self.base = make_url(pg_server)
        suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.db = f"receiver_priv_{suffix}"
        self.owner = f"receiver_owner_{suffix}"
        self.app = f"receiver_app_{suffix}"
        self.password = secrets.token_urlsafe(18)

    def url(self, user: str | None = None, *, driver: str = "postgresql+psycopg") -> str:
        url = self.base.set(drivername=driver, database=self.db)
        if user is not None:
            url = url.set(username=user, password=self.password)
        return url.render_as_string(False)

    def admin(self) -> str:
        return self.base.set(database="postgres").render_as_string(False)


@pytest.fixture
def cluster(pg_server: str) -> Iterator[Cluster]:
    c = Cluster(pg_server)
    with psycopg.connect(c.admin(), autocommit=True) as conn:
        for role in (c.owner, c.app):
            conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER PASSWORD '{c.password}'")
        conn.execute(f'CREATE DATABASE "{c.db}" OWNER {c.owner}')
    try:
        yield c
    finally:
        with psycopg.connect(c.admin(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{c.db}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {c.app}")
            conn.execute(f"DROP ROLE IF EXISTS {c.owner}")


@pytest.fixture
def migrated(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """`python -m receiver migrate` as the owner, with the app role setting; twice, since
    it must be idempotent."""
    monkeypatch.setenv("DATABASE_URL", cluster.url(cluster.owner))
    monkeypatch.setenv("RECEIVER_DB_APP_ROLE", cluster.app)
    assert cli_main(["migrate"]) == 0
    assert cli_main(["migrate"]) == 0
    return cluster


def _as_app(c: Cluster) -> psycopg.Connection[Any]:
    return psycopg.connect(c.url(c.app, driver="postgresql"), autocommit=True)


def test_every_table_and_view_has_its_grants(migrated: Cluster) -> None:
    assert tables_without_grants(migrated.url(migrated.owner, driver="postgresql")) == []


REFUSED = [
    "UPDATE audit_log SET actor = 'mallory'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
    "ALTER TABLE audit_log DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_log_no_update_delete ON audit_log",
    "DROP TABLE audit_log",
    "ALTER TABLE audit_log OWNER TO CURRENT_USER",
    "CREATE TRIGGER t BEFORE INSERT ON audit_log FOR EACH ROW "
    "EXECUTE FUNCTION audit_log_append_only()",
    "SET session_replication_role = replica",
    "UPDATE audit_seals SET digest = ''",
    "DELETE FROM audit_seals",
    "TRUNCATE audit_seals",
    "ALTER TABLE audit_seals DISABLE TRIGGER ALL",
    "TRUNCATE breakers",
    "DELETE FROM incidents",
    "SELECT setval('audit_log_id_seq', 1)",
    "CREATE TABLE mine (x int)",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_the_app_role_cannot_rewrite_history(migrated: Cluster, statement: str) -> None:
    with _as_app(migrated) as conn:
        conn.execute(
            "INSERT INTO audit_log (actor, action, details) VALUES ('test', 'test.row', '{}')"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        assert conn.execute("SELECT actor FROM audit_log").fetchall() == [("test",)]


def test_the_app_role_owns_nothing(migrated: Cluster) -> None:
    with _as_app(migrated) as conn:
        owned = conn.execute(
            "SELECT relname FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles "
            "WHERE rolname = current_user)"
        ).fetchall()
        flags = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert owned == []
    assert flags == (False, False, False)


def test_migrate_refuses_an_unusable_app_role(cluster: Cluster) -> None:
    owner = cluster.url(cluster.owner)
    migrate.upgrade(owner, configure_logging=False)
    with pytest.raises(RoleError, match="no such role"):
        migrate.grant_app_role(owner, "receiver_nobody_here")
    with pytest.raises(RoleError, match="schema owner"):
        migrate.grant_app_role(owner, cluster.owner)
    with pytest.raises(RoleError, match="superuser"):
        migrate.grant_app_role(owner, "postgres")


async def test_the_service_works_as_the_app_role(migrated: Cluster, aiohttp_client: Any) -> None:
    from receiver.app import create_app

    settings = make_settings(migrated.url(migrated.app), breaker_open_seconds=0.5)
    client = await aiohttp_client(create_app(settings))
    headers = API_HEADERS
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    resp = await client.put("/v1/tenants/tenant-a", json={"tier": "gold"}, headers=headers)
    assert resp.status == 200, await resp.text()
    await post_webhook(client, firing("tenant-a"))
    resp = await client.get("/v1/tenants/tenant-a/breaker", headers=headers)
    assert (await resp.json())["state"] == "open"
    resp = await client.get("/v1/incidents", headers=headers)
    assert resp.status == 200
    (incident,) = (await resp.json())["incidents"]
    for step in ("acknowledge", "resolve"):
        resp = await client.post(
            f"/v1/incidents/{incident['id']}/{step}", json={"actor": "alice"}, headers=headers
        )
        assert resp.status == 200, await resp.text()
    postmortem = {
        "actor": "alice",
        "root_cause": "a bad deploy",
        "action_items": [{"description": "canary", "owner_team": "platform", "due": "2027-01-31"}],
    }
    for _ in range(2):  # the second replaces the action items (DELETE then INSERT)
        resp = await client.put(
            f"/v1/incidents/{incident['id']}/postmortem", json=postmortem, headers=headers
        )
        assert resp.status == 200, await resp.text()
    resp = await client.get(f"/v1/incidents/{incident['id']}/postmortem", headers=headers)
    assert resp.status == 200
    resp = await client.post(
        "/v1/tenants/tenant-b/breaker",
        json={"action": "force_open", "reason": "test", "actor": "alice"},
        headers=headers,
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post("/v1/tenants/tenant-a/outcomes", json={"success": 3}, headers=headers)
    assert resp.status == 200, await resp.text()
    for path in ("/v1/tenants/tenant-a/health", "/v1/analytics/incidents", "/metrics"):
        resp = await client.get(path, headers=headers)
        assert resp.status == 200, (path, await resp.text())
    with psycopg.connect(libpq(migrated.url(migrated.owner))) as conn:
        actions = {a for (a,) in conn.execute("SELECT DISTINCT action FROM audit_log")}
    assert {"delivery.accepted", "incident.resolved", "breaker.override"} <= actions
    assert set(APP_TABLE_PRIVILEGES) >= {"audit_log", "audit_seals"}


async def test_sealing_and_verify_work_as_the_app_role(
    migrated: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from receiver.db.engine import create_engine, session_factory
    from receiver.service.seals import AuditSealer

    with _as_app(migrated) as conn:
        conn.execute("INSERT INTO audit_log (actor, action) VALUES ('a', 'x'), ('b', 'y')")
    engine = create_engine(make_settings(migrated.url(migrated.app)))
    try:
        sealer = AuditSealer(session_factory(engine))
        assert await sealer.run_once() is None  # takes the candidate
        seal = await sealer.run_once()
    finally:
        await engine.dispose()
    assert seal is not None and (seal.first_id, seal.last_id, seal.row_count) == (1, 2, 2)
    monkeypatch.setenv("DATABASE_URL", migrated.url(migrated.app))
    assert cli_main(["audit", "verify"]) == 0
    assert "audit verify: OK: 1 seals hold 2 audit rows" in capsys.readouterr().out
