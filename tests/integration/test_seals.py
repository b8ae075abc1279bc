"""Audit seals on a real PostgreSQL: the sealer seals exactly the settled rows (never past
a transaction still in progress), and `python -m receiver audit verify` names the first row
that a superuser changed, removed or inserted with the append-only trigger switched off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.cli import main as cli_main
from receiver.db.engine import create_engine, session_factory
from receiver.service.seals import AuditSealer
from tests.conftest import libpq, make_settings
from tests.integration.helpers import firing, poll, post_webhook, resolved


@pytest.fixture
async def sessions(clean_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(make_settings(clean_db))
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def verify(
    clean_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setenv("DATABASE_URL", clean_db)
        code = cli_main(["audit", "verify", *args])
        return code, capsys.readouterr().out

    return run


def superuser(clean_db: str, *statements: str) -> None:
    """As the superuser with the append-only trigger off, the way an attacker would."""
    with psycopg.connect(libpq(clean_db), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement)


async def seal_everything(sessions: async_sessionmaker[AsyncSession]) -> AuditSealer:
    sealer = AuditSealer(sessions)
    await sealer.run_once()  # the candidate
    assert await sealer.run_once() is not None
    return sealer


async def _sealed_log(client: Any, sessions: Any, sql: Any) -> int:
    for tenant in ("tenant-a", "tenant-b"):
        await post_webhook(client, firing(tenant))
    await post_webhook(client, resolved("tenant-a"))
    await seal_everything(sessions)
    ((count, last),) = sql("SELECT count(*), max(id) FROM audit_log")
    assert sql("SELECT first_id, last_id, row_count FROM audit_seals") == [(1, last, count)]
    return int(last)


async def test_an_untouched_log_verifies(client: Any, sessions: Any, sql: Any, verify: Any) -> None:
    last = await _sealed_log(client, sessions, sql)
    await post_webhook(client, firing("tenant-c"))  # newer, not sealed yet
    code, out = verify()
    assert code == 0, out
    assert f"ids 1..{last}" in out and "newer rows not sealed yet" in out
    head = out.rsplit("head seal ", 1)[1].strip()
    code, out = verify("--anchor", head)
    assert code == 0, out


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("UPDATE audit_log SET actor = 'mallory' WHERE id = {id}", "changed"),
        ("UPDATE audit_log SET details = details || '{{\"x\": 1}}' WHERE id = {id}", "changed"),
        (
            "UPDATE audit_log SET occurred_at = occurred_at + interval '1 microsecond' "
            "WHERE id = {id}",
            "changed",
        ),
        ("DELETE FROM audit_log WHERE id >= {id}", "removed"),
    ],
)
async def test_a_superuser_change_is_named(
    client: Any, sessions: Any, sql: Any, verify: Any, clean_db: str, statement: str, problem: str
) -> None:
    last = await _sealed_log(client, sessions, sql)
    target = last // 2 + 1
    superuser(clean_db, statement.format(id=target))
    code, out = verify()
    assert code == 1, out
    assert f"audit row {target} was {problem}" in out


async def test_a_row_inserted_out_of_order_is_named(
    client: Any, sessions: Any, sql: Any, verify: Any, clean_db: str
) -> None:
    await post_webhook(client, firing("tenant-a"))
    with psycopg.connect(libpq(clean_db)) as conn:  # a rolled-back insert leaves a gap
        ((gap,),) = conn.execute(
            "INSERT INTO audit_log (actor, action) VALUES ('x', 'x') RETURNING id"
        ).fetchall()
        conn.rollback()
    await post_webhook(client, firing("tenant-b"))
    await seal_everything(sessions)
    assert sql("SELECT gaps FROM audit_seals") == [([gap],)]
    assert verify()[0] == 0
    superuser(
        clean_db,
        f"INSERT INTO audit_log (id, actor, action) VALUES ({gap}, 'mallory', 'alert.fired')",
    )
    code, out = verify()
    assert code == 1, out
    assert f"audit row {gap} was inserted out of order" in out


async def test_a_forged_seal_breaks_the_chain(
    client: Any, sessions: Any, sql: Any, verify: Any, clean_db: str
) -> None:
    await _sealed_log(client, sessions, sql)
    superuser(clean_db, "UPDATE audit_seals SET digest = repeat('0', 64)")
    code, out = verify()
    assert code == 1 and "seal 1" in out, out


async def test_sealing_waits_for_transactions_in_progress(
    sessions: Any, sql: Any, clean_db: str, verify: Any
) -> None:
    with psycopg.connect(libpq(clean_db)) as slow:
        ((held,),) = slow.execute(
            "INSERT INTO audit_log (actor, action) VALUES ('slow', 'x') RETURNING id"
        ).fetchall()
        sql("INSERT INTO audit_log (actor, action) VALUES ('fast', 'y')")  # committed, id+1
        sealer = AuditSealer(sessions)
        assert await sealer.run_once() is None
        assert await sealer.run_once() is None  # `slow` may still commit id `held`
        assert await sealer.run_once() is None
        slow.commit()
    seal = await sealer.run_once()
    assert seal is not None and (seal.first_id, seal.last_id, seal.row_count) == (1, held + 1, 2)
    assert verify()[0] == 0


async def test_an_empty_log_verifies(sessions: Any, verify: Any) -> None:
    sealer = AuditSealer(sessions)
    assert await sealer.run_once() is None
    code, out = verify()
    assert code == 0 and "0 seals" in out, out


async def test_the_app_seals_by_itself(app_client: Any, sql: Any, verify: Any) -> None:
    client = await app_client(audit_seal_seconds=0.1)
    await post_webhook(client, firing("tenant-a"))
    ((last,),) = sql("SELECT max(id) FROM audit_log")
    await poll(
        lambda: asyncio.to_thread(sql, "SELECT max(last_id) FROM audit_seals"),
        lambda rows: rows[0][0] is not None and rows[0][0] >= last,
        what="a seal over the webhook's audit rows",
    )
    assert verify()[0] == 0
