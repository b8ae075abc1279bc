"""The board's live updates: a server-sent event stream that sends the board's live part
(state counts and tiles, rendered by the same template as the page) whenever this
replica's breaker view changes, which it does on every committed change of any replica
(LISTEN/NOTIFY). A comment every HEARTBEAT keeps proxies from closing an idle stream; a
stream ends after STREAM_SECONDS (the browser reconnects by itself), so that an expired
session is noticed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from receiver import keys
from receiver.domain.tenant import BoardTenant
from receiver.errors import ReceiverError
from receiver.service import console
from receiver.ui import present
from receiver.ui.forms import BoardFilter
from receiver.ui.guard import HEADERS
from receiver.ui.render import fragment

HEARTBEAT = 10.0
STREAM_SECONDS = 300.0
SETTLE = 0.1  # a burst of changes (a sweep, a grouped webhook) is sent once
# Set when the server shuts down: streams end at once instead of holding the shutdown.
STOPPING = web.AppKey("console_streams_stopping", asyncio.Event)


async def stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def event(name: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()


async def stream_board(request: web.Request, f: BoardFilter) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            **HEADERS,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        await response.write(b"retry: 2000\n\n")
        await _follow(request, response, f)
    return response


async def _follow(request: web.Request, response: web.StreamResponse, f: BoardFilter) -> None:
    view = request.app[keys.VIEW]
    loop = asyncio.get_running_loop()
    ends = loop.time() + STREAM_SECONDS
    generation, sent = -1, ""
    tenants: Sequence[BoardTenant] = ()
    stopping = request.app[STOPPING]
    while loop.time() < ends and not stopping.is_set():
        try:
            async with asyncio.timeout(HEARTBEAT):
                await _first(view.wait_changed(generation), stopping.wait())
        except TimeoutError:
            await response.write(b": still here\n\n")
            continue
        if stopping.is_set():
            return
        await asyncio.sleep(SETTLE)
        generation = view.generation
        # The database gives tiers and reasons; when it is away the states still come
        # from the view, with the tenants last read.
        with contextlib.suppress(ReceiverError):
            tenants = await console.board_tenants(sessions=request.app[keys.SESSIONS])
        tiles = present.tiles(view, tenants, now=datetime.now(UTC))
        html = fragment(
            request,
            "_board_live.html",
            tiles=present.matching(tiles, state=f.state, tier=f.tier),
            counts=present.state_counts(tiles),
            total=len(tiles),
            filter=f,
        )
        if html != sent:
            await response.write(event("board", html))
            sent = html
