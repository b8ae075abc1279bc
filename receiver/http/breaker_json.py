"""The JSON answer about one breaker, shared by the breaker and tenant handlers.

The gateways read it thousands of times a second, so it can also be had pre-encoded:
`encoded_breaker` keeps a closed breaker's bytes beside the row they were made from, and
answers a tenant without a row from a constant template around its id.

Every answer ends with `view_age_ms`, the milliseconds since this replica's view last
heard from the database (BreakerView.age_ms): a gateway can tell a current answer from
one a cut-off replica keeps serving. It is the one field that changes with every read, so
the cached bytes stop before it and each read appends it (one small bytes formatting).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from receiver.cache.breaker_view import BreakerView
from receiver.db.json import dumps_bytes
from receiver.domain import breaker as domain
from receiver.domain.breaker import Breaker, BreakerPolicy, BreakerState


def breaker_json(b: Breaker, policy: BreakerPolicy, *, view_age_ms: int) -> dict[str, Any]:
    return {
        **_fields(b, policy),
        "view_age_ms": view_age_ms,
    }


def _fields(b: Breaker, policy: BreakerPolicy) -> dict[str, Any]:
    return {
        "tenant_id": b.tenant_id,
        "state": b.state.value,
        "allow": domain.allows(b.state),
        "admit_ratio": domain.admit_ratio(b.state, policy),
        "opened_at": b.opened_at,
        "half_open_at": b.half_open_at,
        "next_change_at": domain.next_change_at(b, policy=policy),
        "trips": b.trips,
        "streak": b.streak,
        "probe_successes": b.probe_successes,
        "probe_failures": b.probe_failures,
        "alert_firing": b.alert_firing,
        "changed_at": b.changed_at,
    }


def _encode(b: Breaker, policy: BreakerPolicy) -> bytes:
    """The answer without its closing brace: `_finish` appends view_age_ms and the brace."""
    encoded = dumps_bytes(_fields(b, policy))
    assert encoded.endswith(b"}")
    return encoded[:-1]


def _finish(head: bytes, view: BreakerView) -> bytes:
    return b'%b,"view_age_ms":%d}' % (head, view.age_ms())


@lru_cache(maxsize=8)
def _unknown_tenant_template(policy: BreakerPolicy) -> tuple[bytes, bytes]:
    """The answer for a tenant without a stored row, split around its JSON-encoded id."""
    placeholder = "\x00"
    marker = dumps_bytes(placeholder)
    before, found, after = _encode(Breaker(tenant_id=placeholder), policy).partition(marker)
    assert found and marker not in after
    return before, after


def encoded_breaker(view: BreakerView, tenant_id: str) -> bytes:
    """`breaker_json` of the tenant's breaker as the view has it now, encoded.

    Nearly always a closed breaker, whose answer depends on its stored row alone (not on
    the clock): its bytes are made again only when the row changes. Open and half-open
    ones are built per read: time moves them. (bench/README.md: reads per second against
    a hello-world server.)"""
    row = view.stored(tenant_id)
    if row is None:
        before, after = _unknown_tenant_template(view.policy)
        return b'%b%b%b,"view_age_ms":%d}' % (before, dumps_bytes(tenant_id), after, view.age_ms())
    if row.state is BreakerState.CLOSED:
        hit = view.encoded.get(tenant_id)
        if hit is None or hit[0] is not row:
            hit = view.encoded[tenant_id] = (row, _encode(row, view.policy))
        return _finish(hit[1], view)
    return _finish(_encode(view.get(tenant_id, now=datetime.now(UTC)), view.policy), view)
