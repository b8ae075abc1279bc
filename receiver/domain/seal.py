"""Tamper evidence for the audit log: seals and their chain (pure: no I/O).

A seal covers the audit ids `first_id..last_id` (the first seal starts at id 1, each next
one right after the previous one's `last_id`). Ids that no committed row holds in that
range are `gaps` (sequences are not transactional: a rolled-back insert leaves one). For
each row present, in id order, the seal keeps a 16-byte row hash (the first half of the
SHA-256 of the row's canonical bytes), and its digest is

    SHA-256( "receiver-audit-seal-v1" NUL previous_digest NUL first_id NUL last_id NUL
             row_hash_1 row_hash_2 ... )

with previous_digest the previous seal's hex digest ("" for the first seal). The digest
chains every seal to all before it; the row hashes let `audit verify` name the first row
that was changed, removed or inserted out of order instead of only saying that a seal
does not match.

A row's canonical bytes are the UTF-8 of a JSON object with sorted keys and no spaces:
id, occurred_at (ISO 8601 in UTC, microseconds), actor, action, tenant_id, incident_id,
delivery_id and details (canonical JSON as well; numbers keep the text PostgreSQL stores,
as Decimal, so that no float rounding can hide a change).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

ROW_HASH_BYTES = 16
_DOMAIN = b"receiver-audit-seal-v1"


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    occurred_at: datetime
    actor: str
    action: str
    tenant_id: str | None
    incident_id: str | None
    delivery_id: int | None
    details: Any


@dataclass(frozen=True, slots=True)
class Seal:
    first_id: int
    last_id: int
    gaps: tuple[int, ...]
    row_hashes: bytes
    digest: str
    previous_digest: str | None
    # Set once stored (audit_seals.id, sealed_at).
    id: int | None = None
    sealed_at: datetime | None = None

    @property
    def row_count(self) -> int:
        return len(self.row_hashes) // ROW_HASH_BYTES

    def sealed_ids(self) -> list[int]:
        gaps = set(self.gaps)
        return [i for i in range(self.first_id, self.last_id + 1) if i not in gaps]

    def hashes(self) -> list[bytes]:
        h = self.row_hashes
        return [h[i : i + ROW_HASH_BYTES] for i in range(0, len(h), ROW_HASH_BYTES)]


def _canonical(value: Any) -> str:
    if value is None or isinstance(value, bool | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{_canonical(str(k))}:{_canonical(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    raise TypeError(f"not JSON: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """One text per JSON value: sorted keys, no spaces, numbers as given."""
    return _canonical(value)


def canonical_row(row: AuditRow) -> bytes:
    occurred = row.occurred_at.astimezone(UTC).isoformat(timespec="microseconds")
    return canonical_json(
        {
            "id": row.id,
            "occurred_at": occurred,
            "actor": row.actor,
            "action": row.action,
            "tenant_id": row.tenant_id,
            "incident_id": row.incident_id,
            "delivery_id": row.delivery_id,
            "details": row.details,
        }
    ).encode()


def row_hash(row: AuditRow) -> bytes:
    return hashlib.sha256(canonical_row(row)).digest()[:ROW_HASH_BYTES]


def chain_digest(
    previous_digest: str | None, first_id: int, last_id: int, row_hashes: bytes
) -> str:
    h = hashlib.sha256()
    for part in (_DOMAIN, (previous_digest or "").encode(), str(first_id).encode()):
        h.update(part + b"\0")
    h.update(str(last_id).encode() + b"\0")
    h.update(row_hashes)
    return h.hexdigest()


def make_seal(
    rows: Sequence[AuditRow], *, first_id: int, last_id: int, previous_digest: str | None
) -> Seal:
    """Seal `rows` (the committed rows with first_id <= id <= last_id, in id order)."""
    if first_id > last_id:
        raise ValueError(f"empty range {first_id}..{last_id}")
    ids = [r.id for r in rows]
    if ids != sorted(set(ids)) or (ids and (ids[0] < first_id or ids[-1] > last_id)):
        raise ValueError("rows must be in id order, unique, inside the range")
    present = set(ids)
    gaps = tuple(i for i in range(first_id, last_id + 1) if i not in present)
    hashes = b"".join(row_hash(r) for r in rows)
    return Seal(
        first_id=first_id,
        last_id=last_id,
        gaps=gaps,
        row_hashes=hashes,
        digest=chain_digest(previous_digest, first_id, last_id, hashes),
        previous_digest=previous_digest,
    )


class Problem(StrEnum):
    CHANGED = "changed"
    REMOVED = "removed"
    INSERTED = "inserted out of order"
    SEAL = "seal altered or removed"


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    seal_id: int | None
    # The first audit row id concerned (for a broken seal: the first id it covers).
    row_id: int

    def message(self) -> str:
        if self.problem is Problem.SEAL:
            return (
                f"audit seal {self.seal_id} (from audit row {self.row_id}) was altered or a "
                "seal before it removed: the chain does not hold"
            )
        return f"audit row {self.row_id} was {self.problem.value} (sealed by seal {self.seal_id})"


@dataclass
class Verified:
    seals: int = 0
    rows: int = 0
    last_id: int = 0
    head: Seal | None = None
    finding: Finding | None = None


def check_seal(seal: Seal, rows: Sequence[AuditRow], *, previous: Seal | None) -> Finding | None:
    """The first problem of one seal against the rows now in its range, or None."""
    expected_first = previous.last_id + 1 if previous is not None else 1
    expected_prev = previous.digest if previous is not None else None
    sealed_ids = seal.sealed_ids()
    stored = seal.hashes()
    if (
        seal.first_id != expected_first
        or seal.previous_digest != expected_prev
        or len(sealed_ids) != len(stored)
        or len(seal.row_hashes) % ROW_HASH_BYTES
        or chain_digest(seal.previous_digest, seal.first_id, seal.last_id, seal.row_hashes)
        != seal.digest
    ):
        return Finding(Problem.SEAL, seal.id, seal.first_id)
    want = dict(zip(sealed_ids, stored, strict=True))
    have = {r.id: r for r in rows}
    for row_id in sorted(want.keys() | have.keys()):
        if row_id not in have:
            return Finding(Problem.REMOVED, seal.id, row_id)
        if row_id not in want:
            return Finding(Problem.INSERTED, seal.id, row_id)
        if row_hash(have[row_id]) != want[row_id]:
            return Finding(Problem.CHANGED, seal.id, row_id)
    return None


def verify_chain(
    sealed: Iterable[tuple[Seal, Sequence[AuditRow]]], *, anchors: Mapping[int, str] | None = None
) -> Verified:
    """Walk the seals in order with the rows now in each one's range; stop at the first
    problem. `anchors` (seal id -> digest, recorded outside the database by an earlier
    run) must all be met: a superuser who rewrote rows and every later seal consistently
    is caught by an anchor alone."""
    result = Verified()
    previous: Seal | None = None
    pending = dict(anchors or {})
    for seal, rows in sealed:
        finding = check_seal(seal, rows, previous=previous)
        if finding is None and seal.id in pending and pending.pop(seal.id) != seal.digest:
            finding = Finding(Problem.SEAL, seal.id, seal.first_id)
        if finding is not None:
            result.finding = finding
            return result
        result.seals += 1
        result.rows += seal.row_count
        result.last_id = seal.last_id
        result.head = seal
        previous = seal
    if pending:
        seal_id = min(pending)
        result.finding = Finding(Problem.SEAL, seal_id, result.last_id + 1)
    return result


@dataclass(frozen=True, slots=True)
class Candidate:
    """A bound to seal up to, taken in one round and sealed in a later one.

    The rule. Audit ids come from a sequence, concurrent transactions commit out of id
    order, and a rolled-back insert leaves a gap for ever. The sealer reads the largest
    committed audit id, `last_id`, and then the transactions in progress (`running`, their
    virtual transaction ids, from pg_locks). A row with a smaller id got it before the row
    holding `last_id` committed, so its transaction was running then or is over. Once
    every one of `running` has ended, each id up to `last_id` is committed (and visible)
    or a gap that can never fill: the range is sealed exactly, with no guess about how
    long a transaction may take nor about how old a gap must be. A transaction stuck for
    ever only delays sealing (idle_in_transaction_session_timeout bounds it).
    """

    last_id: int
    running: frozenset[str]


def settled(candidate: Candidate, *, running_now: frozenset[str]) -> bool:
    """Every transaction that was in progress when `candidate` was taken has ended."""
    return candidate.running.isdisjoint(running_now)
