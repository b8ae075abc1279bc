"""Breaker reads (the gateways' hot path, from memory) and writes (outcomes, overrides)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from receiver import keys
from receiver.domain import breaker as domain
from receiver.domain.breaker import Breaker, BreakerPolicy, BreakerState, OverrideAction
from receiver.errors import InvalidInput
from receiver.http.auth import actor
from receiver.http.parsing import TENANT, dumps, json_response, read_model, tenant_id_from
from receiver.http.schemas import OutcomesIn, OverrideIn
from receiver.service import breakers as breaker_service


def breaker_json(b: Breaker, policy: BreakerPolicy) -> dict[str, Any]:
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
    return dumps(breaker_json(b, policy)).encode()


@lru_cache(maxsize=8)
def _unknown_tenant_template(policy: BreakerPolicy) -> tuple[bytes, bytes]:
    """The answer for a tenant without a stored row, split around its JSON-encoded id."""
    placeholder = "\x00"
    marker = orjson.dumps(placeholder)
    before, found, after = _encode(Breaker(tenant_id=placeholder), policy).partition(marker)
    assert found and marker not in after
    return before, after


async def get_breaker(request: web.Request) -> web.Response:
    """The gateways' hot path, nearly always a closed breaker. A closed breaker's answer
    depends on its stored row alone (not on the clock), so its bytes are kept beside the
    row they were made from and made again only when the row changes; a tenant without a
    row gets a constant answer around its id. Open and half-open ones are built per read:
    time moves them. (bench/README.md: reads per second against a hello-world server.)"""
    view = request.app[keys.VIEW]
    tenant_id = tenant_id_from(request)
    row = view.stored(tenant_id)
    if row is None:
        before, after = _unknown_tenant_template(view.policy)
        body = before + orjson.dumps(tenant_id) + after
    elif row.state is BreakerState.CLOSED:
        hit = view.encoded.get(tenant_id)
        if hit is None or hit[0] is not row:
            hit = view.encoded[tenant_id] = (row, _encode(row, view.policy))
        body = hit[1]
    else:
        body = _encode(view.get(tenant_id, now=datetime.now(UTC)), view.policy)
    return web.Response(body=body, content_type="application/json")


async def list_breakers(request: web.Request) -> web.Response:
    view = request.app[keys.VIEW]
    rows = view.not_closed(now=datetime.now(UTC))
    return json_response({"breakers": [breaker_json(b, view.policy) for b in rows]})


async def post_override(request: web.Request) -> web.Response:
    tenant_id = tenant_id_from(request)
    body = await read_model(request, OverrideIn)
    app = request.app
    saved = await breaker_service.override_breaker(
        sessions=app[keys.SESSIONS],
        tenant_id=tenant_id,
        action=OverrideAction(body.action),
        reason=body.reason,
        actor=actor(request, body.actor),
        config=app[keys.CONFIG],
        now=datetime.now(UTC),
    )
    app[keys.VIEW].apply([saved])
    return await get_breaker(request)


async def post_outcomes(request: web.Request) -> web.Response:
    tenant_id = tenant_id_from(request)
    body = await read_model(request, OutcomesIn)
    if body.success + body.failure == 0:
        raise InvalidInput("report at least one outcome: success + failure must be > 0")
    app = request.app
    saved = await breaker_service.record_outcomes(
        sessions=app[keys.SESSIONS],
        tenant_id=tenant_id,
        success=body.success,
        failure=body.failure,
        config=app[keys.CONFIG],
        now=datetime.now(UTC),
    )
    if saved is not None:
        app[keys.VIEW].apply([saved])
    return await get_breaker(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"/v1/tenants/{TENANT}/breaker", get_breaker)
    app.router.add_post(f"/v1/tenants/{TENANT}/breaker", post_override)
    app.router.add_post(f"/v1/tenants/{TENANT}/outcomes", post_outcomes)
    app.router.add_get("/v1/breakers", list_breakers)
