"""The breaker board: every known tenant as a tile, live (server-sent events driven by
the replica's breaker view), and the operator's overrides behind a confirmation page."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from receiver import keys
from receiver.domain.breaker import OverrideAction
from receiver.http.parsing import TENANT, tenant_id_from
from receiver.service import breakers as breaker_service
from receiver.service import console
from receiver.ui import present
from receiver.ui.forms import board_filter, override_choice, override_form
from receiver.ui.live import stream_board
from receiver.ui.render import page


async def board(request: web.Request) -> web.Response:
    f = board_filter(request)
    tenants = await console.board_tenants(sessions=request.app[keys.SESSIONS])
    tiles = present.tiles(request.app[keys.VIEW], tenants, now=datetime.now(UTC))
    return page(
        request,
        "board.html",
        filter=f,
        tiles=present.matching(tiles, state=f.state, tier=f.tier),
        counts=present.state_counts(tiles),
        total=len(tiles),
        states=present.STATES,
        tiers=[*present.TIERS, present.UNREGISTERED],
    )


async def board_events(request: web.Request) -> web.StreamResponse:
    """text/event-stream: the board's live part again whenever the view changes."""
    return await stream_board(request, board_filter(request))


async def confirm_override(request: web.Request) -> web.Response:
    tenant_id = tenant_id_from(request)
    action = override_choice(request)
    view = request.app[keys.VIEW]
    breaker = view.get(tenant_id, now=datetime.now(UTC))
    return page(request, "override.html", tenant_id=tenant_id, action=action, breaker=breaker)


async def post_override(request: web.Request) -> web.Response:
    tenant_id = tenant_id_from(request)
    body = await override_form(request)
    app = request.app
    saved = await breaker_service.override_breaker(
        sessions=app[keys.SESSIONS],
        tenant_id=tenant_id,
        action=OverrideAction(body.action),
        reason=body.reason,
        actor=body.actor,
        config=app[keys.CONFIG],
    )
    app[keys.VIEW].apply([saved])
    raise web.HTTPSeeOther("/ui/")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/", board)
    app.router.add_get("/ui/board/events", board_events)
    app.router.add_get(f"/ui/tenants/{TENANT}/override", confirm_override)
    app.router.add_post(f"/ui/tenants/{TENANT}/override", post_override)
