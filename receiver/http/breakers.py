"""Breaker reads (the gateways' hot path, from memory) and writes (outcomes, overrides)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from receiver import keys
from receiver.cache.breaker_view import BreakerView
from receiver.domain.breaker import OverrideAction
from receiver.errors import InvalidInput, ReceiverError
from receiver.http.auth import actor
from receiver.http.breaker_json import breaker_json, encoded_breaker
from receiver.http.middlewares import (
    hot_read,
    receiver_error_response,
    unexpected_error_response,
)
from receiver.http.parsing import TENANT, json_response, read_model, tenant_id_from
from receiver.http.schemas import OutcomesIn, OverrideIn
from receiver.service import breakers as breaker_service

# The tenant id of each breaker path already read, by raw path (all tenant_id_from looks
# at): gateways read the same tenants over and over, and validating an id per read (pydantic,
# the control-character scan) was a sizeable share of a read. Bounded: junk paths or more
# tenants than this only cost the validation again, as before.
_TENANT_OF_PATH: dict[str, str] = {}
_TENANT_OF_PATH_MAX = 16_384
_TENANT_OF_PATH_MAX_CHARS = 256


def _tenant_id(request: web.Request) -> str:
    raw = request.raw_path
    tenant_id = tenant_id_from(request)  # an invalid id raises: it is never kept
    if len(raw) <= _TENANT_OF_PATH_MAX_CHARS:
        if len(_TENANT_OF_PATH) >= _TENANT_OF_PATH_MAX:
            _TENANT_OF_PATH.clear()
        _TENANT_OF_PATH[raw] = tenant_id
    return tenant_id


def _answer(view: BreakerView, request: web.Request) -> web.Response:
    """The breaker as this replica's view has it (http/breaker_json.py keeps it
    pre-encoded); `read_breaker` in add_routes is the same, for the gateways' reads."""
    tenant_id = _TENANT_OF_PATH.get(request.raw_path) or _tenant_id(request)
    body = encoded_breaker(view, tenant_id)
    return web.Response(body=body, content_type="application/json")


async def get_breaker(request: web.Request) -> web.Response:
    return _answer(request.app[keys.VIEW], request)


async def list_breakers(request: web.Request) -> web.Response:
    view = request.app[keys.VIEW]
    rows, age = view.not_closed(now=datetime.now(UTC)), view.age_ms()
    return json_response(
        {
            "breakers": [breaker_json(b, view.policy, view_age_ms=age) for b in rows],
            "view_age_ms": age,
        }
    )


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
    )
    if saved is not None:
        app[keys.VIEW].apply([saved])
    return await get_breaker(request)


def add_routes(app: web.Application) -> None:
    view = app[keys.VIEW]

    # The gateways' hot path: called past the middlewares for a valid token (hot_read), so
    # it answers its own errors; _answer inline, and the view (the app's for its whole
    # life) found once here, not on every read.
    @hot_read
    async def read_breaker(request: web.Request) -> web.Response:
        try:
            tenant_id = _TENANT_OF_PATH.get(request.raw_path) or _tenant_id(request)
            body = encoded_breaker(view, tenant_id)
        except ReceiverError as exc:
            return receiver_error_response(request, exc)
        except Exception:
            return unexpected_error_response(request)
        return web.Response(body=body, content_type="application/json")

    app.router.add_get(f"/v1/tenants/{TENANT}/breaker", read_breaker)
    app.router.add_post(f"/v1/tenants/{TENANT}/breaker", post_override)
    app.router.add_post(f"/v1/tenants/{TENANT}/outcomes", post_outcomes)
    app.router.add_get("/v1/breakers", list_breakers)
