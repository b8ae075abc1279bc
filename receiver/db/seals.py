"""The queries of audit sealing (the background loop) and of `audit verify`.

The hot path pays nothing: audit rows are written as before; one replica at a time (a
transaction-level advisory lock, tried without waiting) seals what settled since the last
seal. The rule of what may be sealed is domain.seal.Candidate's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.domain.seal import AuditRow, Candidate, Seal, make_seal, settled

SEAL_LOCK = 7262031
# At most this many rows per seal: a large backlog (the first seal of an old log) is
# sealed over several rounds.
MAX_ROWS_PER_SEAL = 20_000
_COLUMNS = "id, occurred_at, actor, action, tenant_id, incident_id, delivery_id, details::text"

_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")
_MAX_ID = text("SELECT max(id) FROM audit_log")
# Every transaction holds its own virtual transaction id lock while it runs. Read after
# _MAX_ID, in a statement of its own (so with a later snapshot): any transaction that took
# an audit id below max(id) and has not ended is listed (this database's only).
_RUNNING = text(
    "SELECT coalesce(array_agg(virtualxid), '{}') FROM pg_locks"
    " WHERE locktype = 'virtualxid' AND granted AND pid <> pg_backend_pid()"
    " AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
)
_LAST_SEAL = text(
    "SELECT id, sealed_at, first_id, last_id, gaps, row_hashes, digest, previous_digest"
    " FROM audit_seals ORDER BY last_id DESC LIMIT 1"
)
_ROWS = text(
    f"SELECT {_COLUMNS} FROM audit_log WHERE id BETWEEN :first AND :last ORDER BY id LIMIT :n"
)
_INSERT = text(
    "INSERT INTO audit_seals (first_id, last_id, row_count, digest, previous_digest, gaps,"
    " row_hashes) VALUES (:first_id, :last_id, :row_count, :digest, :previous_digest,"
    " :gaps, :row_hashes) RETURNING id"
)


def _details(raw: str) -> Any:
    # Numbers as PostgreSQL stores them (Decimal), so no float rounding can hide a change.
    return json.loads(raw, parse_float=Decimal)


def _row(values: Any) -> AuditRow:
    id_, occurred_at, actor, action, tenant_id, incident_id, delivery_id, details = values
    return AuditRow(
        id=id_,
        occurred_at=occurred_at,
        actor=actor,
        action=action,
        tenant_id=tenant_id,
        incident_id=incident_id,
        delivery_id=delivery_id,
        details=_details(details),
    )


def _seal(values: Any) -> Seal:
    id_, sealed_at, first_id, last_id, gaps, row_hashes, digest, previous = values
    return Seal(
        id=id_,
        sealed_at=sealed_at,
        first_id=first_id,
        last_id=last_id,
        gaps=tuple(gaps or ()),
        row_hashes=bytes(row_hashes),
        digest=digest,
        previous_digest=previous,
    )


async def seal_round(
    session: AsyncSession, candidate: Candidate | None
) -> tuple[Seal | None, Candidate | None]:
    """One round in one transaction: seal up to `candidate` when it has settled, and take
    the next candidate. Returns (the new seal or None, the candidate to keep). While another
    replica seals, nothing happens and the candidate is kept."""
    if not (await session.execute(_TRY_LOCK, {"key": SEAL_LOCK})).scalar_one():
        return None, candidate
    last_id = await session.scalar(_MAX_ID)
    running = frozenset(await session.scalar(_RUNNING) or ())
    new_seal: Seal | None = None
    if candidate is not None and settled(candidate, running_now=running):
        new_seal = await _seal_up_to(session, candidate.last_id)
        if new_seal is not None and new_seal.last_id < candidate.last_id:
            return new_seal, candidate  # capped at MAX_ROWS_PER_SEAL: the rest next round
    elif candidate is not None:
        return None, candidate  # not settled yet: keep waiting for it
    if last_id is None:
        return new_seal, None
    return new_seal, Candidate(last_id=int(last_id), running=running)


async def _seal_up_to(session: AsyncSession, last_id: int) -> Seal | None:
    previous_row = (await session.execute(_LAST_SEAL)).one_or_none()
    previous = _seal(previous_row) if previous_row is not None else None
    first_id = previous.last_id + 1 if previous is not None else 1
    if first_id > last_id:
        return None
    result = await session.execute(
        _ROWS, {"first": first_id, "last": last_id, "n": MAX_ROWS_PER_SEAL}
    )
    rows = [_row(r) for r in result.tuples()]
    if not rows:
        return None  # only gaps so far: the next seal covers them
    if len(rows) == MAX_ROWS_PER_SEAL:
        last_id = rows[-1].id
    seal = make_seal(
        rows,
        first_id=first_id,
        last_id=last_id,
        previous_digest=previous.digest if previous is not None else None,
    )
    seal_id = await session.scalar(
        _INSERT,
        {
            "first_id": seal.first_id,
            "last_id": seal.last_id,
            "row_count": seal.row_count,
            "digest": seal.digest,
            "previous_digest": seal.previous_digest,
            "gaps": list(seal.gaps),
            "row_hashes": seal.row_hashes,
        },
    )
    return dataclasses.replace(seal, id=seal_id)


# --- audit verify (synchronous: a command-line tool) -----------------------------------------


def seals_with_rows(conn: psycopg.Connection[Any]) -> Iterator[tuple[Seal, list[AuditRow]]]:
    """Every seal in chain order with the audit rows now in its range, one seal at a time
    (memory stays bounded by MAX_ROWS_PER_SEAL, however long the log)."""
    seals = conn.cursor(name="audit_seals")  # server-side: fetched in batches
    seals.itersize = 100
    seals.execute(
        "SELECT id, sealed_at, first_id, last_id, gaps, row_hashes, digest, previous_digest"
        " FROM audit_seals ORDER BY first_id"
    )
    for values in seals:
        seal = _seal(values)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM audit_log WHERE id BETWEEN %s AND %s ORDER BY id",
            (seal.first_id, seal.last_id),
        ).fetchall()
        yield seal, [_row(r) for r in rows]


def unsealed_rows(conn: psycopg.Connection[Any], after_id: int) -> int:
    row = conn.execute("SELECT count(*) FROM audit_log WHERE id > %s", (after_id,)).fetchone()
    return int(row[0]) if row else 0
