"""The breaker view's age: the listener's heartbeat is bounded, so a silently dead
connection (no RST, no FIN: packets simply stop) turns the listener (and readyz) red and
is replaced, instead of keeping them green while the view goes stale; and every breaker
answer says how long ago the view last heard from the database (`view_age_ms`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from receiver.cache import listener as listener_module
from receiver.cache.breaker_view import BreakerView
from receiver.cache.listener import BreakerListener
from receiver.domain.breaker import BreakerPolicy
from tests.conftest import API_HEADERS
from tests.integration.helpers import firing, poll, post_webhook


class FreezingProxy:
    """A TCP proxy to PostgreSQL that can stop forwarding on the connections it has (the
    sockets stay open, nothing is closed or reset: a silently dead network path). New
    connections pass."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.frozen: list[asyncio.Event] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FreezingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        for thawed in self.frozen:
            thawed.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        thawed = asyncio.Event()
        thawed.set()
        self.frozen.append(thawed)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(65536):
                    await thawed.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy(clean_db: str) -> AsyncIterator[tuple[FreezingProxy, str]]:
    url = make_url(clean_db)
    p = await FreezingProxy(url.host or "127.0.0.1", url.port or 5432).start()
    yield p, url.set(host="127.0.0.1", port=p.port).render_as_string(False)
    await p.close()


async def test_a_silently_dead_listener_connection_is_noticed_and_replaced(monkeypatch, proxy):
    monkeypatch.setattr(listener_module, "HEARTBEAT_SECONDS", 0.3)
    monkeypatch.setattr(listener_module, "HEARTBEAT_TIMEOUT_SECONDS", 0.5)
    p, url = proxy
    view = BreakerView(BreakerPolicy())
    listener = BreakerListener(url, view)
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.connected.wait(), timeout=10)
        await asyncio.sleep(0.5)
        assert view.age_ms() < 1000  # heartbeats keep it fresh

        p.freeze()
        frozen_at = time.monotonic()
        await poll(
            lambda: asyncio.sleep(0, not listener.connected.is_set()),
            lambda down: down,
            within=5,
            what="the listener to notice its dead connection",
        )
        assert time.monotonic() - frozen_at < 0.3 + 0.5 + 1.0
        assert "heartbeat" in (listener.last_error or "")
        # A new connection goes through the proxy: the listener is back, the view fresh.
        await asyncio.wait_for(listener.connected.wait(), timeout=10)
        assert listener.reloads >= 2
        await asyncio.sleep(0.4)
        assert view.age_ms() < 1000
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_view_age_grows_while_nothing_is_heard():
    view = BreakerView(BreakerPolicy())
    view.heard()
    await asyncio.sleep(0.25)
    assert 200 <= view.age_ms() < 1000
    view.heard()
    assert view.age_ms() < 50


async def breaker_answer(client: Any, tenant: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/tenants/{tenant}/breaker", headers=API_HEADERS)
    assert resp.status == 200
    # The pre-encoded fast path still makes one valid JSON object.
    return json.loads(await resp.read())


async def test_every_breaker_answer_carries_the_view_age(client):
    unknown = await breaker_answer(client, "never-seen")
    await post_webhook(client, firing("tenant-open"))
    await post_webhook(client, firing("tenant-closed", isolate=False))
    opened = await breaker_answer(client, "tenant-open")
    for answer in (unknown, opened, await breaker_answer(client, "never-seen")):
        assert isinstance(answer["view_age_ms"], int)
        assert 0 <= answer["view_age_ms"] < 10_000
    assert opened["state"] == "open"

    listed = await (await client.get("/v1/breakers", headers=API_HEADERS)).json()
    assert isinstance(listed["view_age_ms"], int)
    assert [b["tenant_id"] for b in listed["breakers"]] == ["tenant-open"]
    assert "view_age_ms" in listed["breakers"][0]

    health = await (await client.get("/v1/tenants/tenant-open/health", headers=API_HEADERS)).json()
    assert isinstance(health["breaker"]["view_age_ms"], int)
