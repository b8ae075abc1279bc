"""The gateways' breaker read skips the middleware chain for a valid token
(http/middlewares.py `hot_read_middleware`). What a client sees must not change: the same
answers for every token that may read, the same JSON errors for a bad tenant id, a missing
or wrong token, and an unexpected failure."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.http.auth import GATEWAY_ROUTES
from tests.conftest import API_HEADERS, WEBHOOK_TOKEN
from tests.integration.helpers import firing, post_webhook

GATEWAY_TOKEN = "test-gateway-token-hot-0123"
GATEWAY = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}


@pytest.fixture
async def client(app_client: Any) -> Any:
    return await app_client(gateway_token=GATEWAY_TOKEN)


async def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) >= {"error", "detail"} and body["detail"]
    return body


def _without_age(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "view_age_ms"}


async def test_every_reading_token_gets_the_same_answer(client: Any) -> None:
    await post_webhook(client, firing("acme"))
    answers = []
    for headers in (GATEWAY, API_HEADERS):
        resp = await client.get("/v1/tenants/acme/breaker", headers=headers)
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        answers.append(_without_age(await resp.json()))
    assert answers[0] == answers[1]
    assert answers[0]["state"] == "open" and answers[0]["allow"] is False


async def test_head_answers_without_a_body(client: Any) -> None:
    resp = await client.head("/v1/tenants/acme/breaker", headers=GATEWAY)
    assert resp.status == 200
    assert await resp.read() == b""


@pytest.mark.parametrize("raw", ["%FF", "bad%01id", "x" * 600])
async def test_a_bad_tenant_id_is_the_same_400_for_every_token(client: Any, raw: str) -> None:
    bodies = []
    for headers in (GATEWAY, API_HEADERS):
        resp = await client.get(f"/v1/tenants/{raw}/breaker", headers=headers)
        bodies.append(await _error(resp, 400))
    assert bodies[0] == bodies[1]
    assert bodies[0]["error"] == "invalid_input"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token-of-this-server"},
        {"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        {"Authorization": "Basic %%%"},
    ],
    ids=["none", "wrong", "webhook-token", "malformed"],
)
async def test_a_read_without_a_reading_token_is_401(client: Any, headers: dict[str, str]) -> None:
    resp = await client.get("/v1/tenants/acme/breaker", headers=headers)
    error = await _error(resp, 401)
    assert error["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_an_unexpected_failure_is_a_json_500(
    client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> bytes:
        raise RuntimeError("view broken")

    monkeypatch.setattr("receiver.http.breakers.encoded_breaker", broken)
    resp = await client.get("/v1/tenants/acme/breaker", headers=GATEWAY)
    error = await _error(resp, 500)
    assert error["error"] == "internal_error"
    assert "view broken" not in await resp.text()
    assert any("view broken" in (r.exc_text or "") for r in caplog.records)


async def test_unauthenticated_mode_reads_through_the_chain(app_client: Any) -> None:
    client = await app_client(webhook_token=None, api_token=None, allow_unauthenticated=True)
    resp = await client.get("/v1/tenants/acme/breaker")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "closed"


async def test_only_gateway_routes_are_hot(client: Any) -> None:
    # A hot handler runs past authorisation's role check: it must be a route that every
    # reading token, the gateway's included, may call.
    hot = [
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if getattr(route.handler, "__receiver_hot_read__", False) and route.resource is not None
    ]
    assert hot, "the breaker read is no longer hot"
    for method, canonical in hot:
        assert ("GET" if method == "HEAD" else method, canonical) in GATEWAY_ROUTES
