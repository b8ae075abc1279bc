"""The seal chain (receiver.domain.seal): any change, removal or out-of-order insertion of
a sealed row is named by its id; an untouched log always verifies."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.seal import (
    AuditRow,
    Candidate,
    Problem,
    Seal,
    canonical_json,
    make_seal,
    settled,
    verify_chain,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def row(i: int, **changes: Any) -> AuditRow:
    base = AuditRow(
        id=i,
        occurred_at=T0 + timedelta(microseconds=i),
        actor="alertmanager",
        action="alert.fired",
        tenant_id=f"tenant-{i % 3}",
        incident_id=None,
        delivery_id=i // 2,
        details={"fingerprint": f"{i:016x}", "n": i, "ratio": Decimal("0.50")},
    )
    return dataclasses.replace(base, **changes)


def seal_all(rows: list[AuditRow], cuts: list[int]) -> list[tuple[Seal, list[AuditRow]]]:
    """Seals ending at each cut (ids), chained, with ids stored like the database would."""
    out: list[tuple[Seal, list[AuditRow]]] = []
    first, previous = 1, None
    for n, last in enumerate(cuts, start=1):
        mine = [r for r in rows if first <= r.id <= last]
        s = dataclasses.replace(
            make_seal(mine, first_id=first, last_id=last, previous_digest=previous), id=n
        )
        out.append((s, mine))
        first, previous = last + 1, s.digest
    return out


def test_canonical_json_is_order_free_and_keeps_number_text() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'
    assert canonical_json({"x": Decimal("1.50")}) != canonical_json({"x": Decimal("1.5")})


def test_an_untouched_log_verifies_and_gaps_are_fine() -> None:
    rows = [row(i) for i in range(1, 21) if i not in (4, 5, 13)]  # rolled-back inserts
    result = verify_chain(seal_all(rows, [6, 13, 20]))
    assert result.finding is None
    assert (result.seals, result.rows, result.last_id) == (3, 17, 20)
    assert result.head is not None and result.head.id == 3
    assert [s.gaps for s, _ in seal_all(rows, [6, 13, 20])] == [(4, 5), (13,), ()]


ROWS = st.lists(st.integers(1, 60), min_size=1, unique=True).map(sorted)


@st.composite
def sealed_log(draw: st.DrawFn) -> tuple[list[AuditRow], list[int]]:
    ids = draw(ROWS)
    rows = [row(i) for i in ids]
    top = ids[-1]
    cuts = sorted(set(draw(st.lists(st.integers(1, top), max_size=5))) | {top})
    return rows, cuts


@given(sealed_log(), st.data())
def test_any_tampering_names_the_first_row(
    log: tuple[list[AuditRow], list[int]], data: Any
) -> None:
    rows, cuts = log
    sealed = seal_all(rows, cuts)
    assert verify_chain(sealed).finding is None
    kind = data.draw(st.sampled_from(["change", "remove", "insert"]))
    existing = [r.id for r in rows]
    if kind == "insert":
        holes = [i for i in range(1, cuts[-1] + 1) if i not in existing]
        if not holes:
            return
        target = data.draw(st.sampled_from(holes))
    else:
        target = data.draw(st.sampled_from(existing))
    field = data.draw(st.sampled_from(["actor", "details", "occurred_at", "tenant_id"]))
    tampered = []
    for s, mine in sealed:
        new = []
        for r in mine:
            if r.id == target and kind == "remove":
                continue
            if r.id == target and kind == "change":
                value = {
                    "actor": "mallory",
                    "details": {**r.details, "n": -1},
                    "occurred_at": r.occurred_at + timedelta(microseconds=1),
                    "tenant_id": "someone-else",
                }[field]
                r = dataclasses.replace(r, **{field: value})
            new.append(r)
        if kind == "insert" and s.first_id <= target <= s.last_id:
            new = sorted([*new, row(target)], key=lambda r: r.id)
        tampered.append((s, new))
    finding = verify_chain(tampered).finding
    assert finding is not None
    assert finding.row_id == target
    expected = {"change": Problem.CHANGED, "remove": Problem.REMOVED, "insert": Problem.INSERTED}
    assert finding.problem is expected[kind]
    assert str(target) in finding.message()


def test_an_altered_or_missing_seal_breaks_the_chain() -> None:
    rows = [row(i) for i in range(1, 11)]
    sealed = seal_all(rows, [3, 6, 10])
    (s1, r1), (s2, r2), (s3, r3) = sealed
    forged = dataclasses.replace(s2, digest="0" * 64)
    finding = verify_chain([(s1, r1), (forged, r2), (s3, r3)]).finding
    assert finding is not None and (finding.problem, finding.seal_id) == (Problem.SEAL, 2)
    finding = verify_chain([(s1, r1), (s3, r3)]).finding  # seal 2 removed
    assert finding is not None and finding.seal_id == 3


def test_anchors_catch_a_consistent_rewrite() -> None:
    rows = [row(i) for i in range(1, 6)]
    honest = seal_all(rows, [5])
    head = honest[-1][0]
    rewritten = seal_all([dataclasses.replace(r, actor="mallory") for r in rows], [5])
    assert verify_chain(rewritten).finding is None  # self-consistent...
    finding = verify_chain(rewritten, anchors={head.id or 0: head.digest}).finding
    assert finding is not None and finding.problem is Problem.SEAL  # ...but not the anchor
    assert verify_chain(honest, anchors={1: head.digest}).finding is None
    assert verify_chain(honest, anchors={7: head.digest}).finding is not None


def test_a_candidate_settles_when_its_transactions_end() -> None:
    candidate = Candidate(last_id=10, running=frozenset({"3/7", "4/9"}))
    assert not settled(candidate, running_now=frozenset({"4/9", "5/1"}))
    assert settled(candidate, running_now=frozenset({"5/1"}))
