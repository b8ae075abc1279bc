"""The JSON answer about one breaker, shared by the breaker and tenant handlers.

The gateways read it thousands of times a second, so it can also be had pre-encoded:
`encoded_breaker` keeps the bytes of a closed breaker, and of a tenant without a row (a
constant template around its id), in the view until the tenant's row changes.

Every answer ends with `view_age_ms`, the milliseconds since this replica's view last
heard from the database (BreakerView.age_ms): a gateway can tell a current answer from
one a cut-off replica keeps serving. It is the one field that changes with every read, so
the cached bytes stop before it and each read appends it (one small bytes formatting).
"""

from __future__ import annotations

from datetime import UTC, datetime
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
    """The answer without its closing brace: `encoded_breaker` appends view_age_ms and it."""
    encoded = dumps_bytes(_fields(b, policy))
    assert encoded.endswith(b"}")
    return encoded[:-1]


def _make_unknown_tenant_template(policy: BreakerPolicy) -> tuple[bytes, bytes]:
    """The answer for a tenant without a stored row, split around its JSON-encoded id."""
    placeholder = "\x00"
    marker = dumps_bytes(placeholder)
    before, found, after = _encode(Breaker(tenant_id=placeholder), policy).partition(marker)
    assert found and marker not in after
    return before, after


# The last policy's template, found by identity: hashing the policy (an lru_cache key) on
# every read of an unknown tenant cost more than the formatting. One view, one policy.
_last_template: tuple[BreakerPolicy, bytes, bytes] | None = None


def _unknown_tenant_template(policy: BreakerPolicy) -> tuple[bytes, bytes]:
    global _last_template
    last = _last_template
    if last is None or last[0] is not policy:
        last = _last_template = (policy, *_make_unknown_tenant_template(policy))
    return last[1], last[2]


# Answers kept for tenants without a row, at most this many entries in all: any valid id
# may be asked about, and past this their answers are made per read (a small formatting).
MAX_KEPT_ANSWERS = 20_000


def encoded_breaker(view: BreakerView, tenant_id: str) -> bytes:
    """`breaker_json` of the tenant's breaker as the view has it now, encoded.

    Nearly always a closed breaker or a tenant without a row, whose answer depends on the
    stored row alone (not on the clock): its bytes are kept in `view.encoded` until the row
    changes. Open and half-open ones are built per read: time moves them. (bench/README.md:
    reads per second against a hello-world server.)"""
    head = view.encoded.get(tenant_id)
    if head is None:
        row = view.stored(tenant_id)
        if row is None:
            before, after = _unknown_tenant_template(view.policy)
            head = before + dumps_bytes(tenant_id) + after
            if len(view.encoded) < MAX_KEPT_ANSWERS:
                view.encoded[tenant_id] = head
        elif row.state is BreakerState.CLOSED:
            head = view.encoded[tenant_id] = _encode(row, view.policy)
        else:
            head = _encode(view.get(tenant_id, now=datetime.now(UTC)), view.policy)
    return b'%b,"view_age_ms":%d}' % (head, view.age_ms())
