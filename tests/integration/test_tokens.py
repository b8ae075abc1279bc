"""Scoped tokens through the HTTP API: the gateway token reads breakers and posts outcomes
and nothing else (403), named operator tokens make their name the audit actor whatever
the body says, tokens that cannot be trusted keep the server from starting, and a
malformed Authorization header is 401, never 500."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from receiver.settings import PLACEHOLDER_TOKENS, Settings, SettingsError
from tests.conftest import API_HEADERS, API_TOKEN, WEBHOOK_TOKEN, make_settings
from tests.integration.helpers import REPO, audit_rows, firing, post_webhook, server_env

GATEWAY_TOKEN = "test-gateway-token-0123"
ALICE_TOKEN = "alice-operator-token-0123"
BOB_TOKEN = "bob-operator-token-456789"
GATEWAY = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
ALICE = {"Authorization": f"Bearer {ALICE_TOKEN}"}


@pytest.fixture
def operators_file(tmp_path: Path) -> Path:
    path = tmp_path / "operators"
    path.write_text(f"# name token\nalice {ALICE_TOKEN}\n\nbob   {BOB_TOKEN}\n")
    return path


@pytest.fixture
async def scoped(app_client: Any, operators_file: Path) -> Any:
    return await app_client(gateway_token=GATEWAY_TOKEN, operator_tokens_file=operators_file)


async def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) >= {"error", "detail"} and body["detail"]
    return body


async def test_gateway_token_reads_breakers_and_posts_outcomes(scoped: Any) -> None:
    resp = await scoped.get("/v1/tenants/acme/breaker", headers=GATEWAY)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "closed"
    resp = await scoped.get("/v1/breakers", headers=GATEWAY)
    assert resp.status == 200
    resp = await scoped.post("/v1/tenants/acme/outcomes", json={"success": 1}, headers=GATEWAY)
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/tenants/acme/breaker", {"action": "force_open", "reason": "r", "actor": "g"}),
        ("put", "/v1/tenants/acme", {"tier": "gold"}),
        ("get", "/v1/tenants/acme", None),
        ("get", "/v1/tenants/acme/health", None),
        ("get", "/v1/incidents", None),
        ("post", "/v1/incidents/INC-20261124-0001/acknowledge", {"actor": "g"}),
        ("get", "/v1/no-such-route", None),
    ],
)
async def test_gateway_token_is_forbidden_elsewhere(
    scoped: Any, sql: Any, method: str, path: str, body: Any
) -> None:
    resp = await getattr(scoped, method)(path, json=body, headers=GATEWAY)
    error = await _error(resp, 403)
    assert error["error"] == "forbidden"
    assert "gateway" in error["detail"]
    assert sql("SELECT count(*) FROM audit_log") == [(0,)]


async def test_gateway_token_is_not_the_webhook_token(scoped: Any) -> None:
    resp = await scoped.post("/v1/alertmanager", json=firing("acme"), headers=GATEWAY)
    await _error(resp, 401)


async def test_api_token_keeps_every_power_and_the_stated_actor(scoped: Any, sql: Any) -> None:
    resp = await scoped.get("/v1/tenants/acme/breaker", headers=API_HEADERS)
    assert resp.status == 200
    resp = await scoped.put(
        "/v1/tenants/acme", json={"tier": "gold", "actor": "carol"}, headers=API_HEADERS
    )
    assert resp.status == 200, await resp.text()
    ((actor, _),) = audit_rows(sql, "tenant.configured", "acme")
    assert actor == "carol"


async def test_operator_name_is_the_actor_whatever_the_body_says(scoped: Any, sql: Any) -> None:
    resp = await scoped.post(
        "/v1/tenants/acme/breaker",
        json={"action": "force_open", "reason": "maintenance", "actor": "mallory"},
        headers=ALICE,
    )
    assert resp.status == 200, await resp.text()
    (actor, _details), *_ = audit_rows(sql, "breaker.override", "acme")
    assert actor == "alice"
    resp = await scoped.put(
        "/v1/tenants/acme", json={"tier": "gold", "actor": "mallory"}, headers=ALICE
    )
    assert resp.status == 200, await resp.text()
    assert [a for a, _ in audit_rows(sql, "tenant.configured", "acme")] == ["alice"]


async def test_operator_name_acknowledges_resolves_and_edits_postmortems(
    scoped: Any, sql: Any
) -> None:
    await post_webhook(scoped, firing("tenant-a"))
    ((incident_id,),) = sql("SELECT id FROM incidents")
    bob = {"Authorization": f"Bearer {BOB_TOKEN}"}
    for step in ("acknowledge", "resolve"):
        resp = await scoped.post(
            f"/v1/incidents/{incident_id}/{step}", json={"actor": "mallory"}, headers=bob
        )
        assert resp.status == 200, await resp.text()
    resp = await scoped.put(
        f"/v1/incidents/{incident_id}/postmortem",
        json={"actor": "mallory", "root_cause": "a bad deploy"},
        headers=ALICE,
    )
    assert resp.status == 200, await resp.text()
    assert sql("SELECT acknowledged_by, resolved_by FROM incidents") == [("bob", "bob")]
    actors = sql(
        "SELECT action, actor FROM audit_log WHERE action IN "
        "('incident.acknowledged', 'incident.resolved') ORDER BY id"
    )
    assert actors == [("incident.acknowledged", "bob"), ("incident.resolved", "bob")]
    assert not sql("SELECT 1 FROM audit_log WHERE actor = 'mallory'")
    assert not sql("SELECT 1 FROM postmortems WHERE updated_by = 'mallory'")


# --- malformed Authorization headers -----------------------------------------------------------


async def _raw_request(client: Any, path: str, authorization: bytes) -> tuple[int, bytes]:
    """A request whose header bytes no HTTP client library would send."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    body = b"{}"
    writer.write(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: " + authorization + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


MALFORMED = [
    b"Basic " + base64.b64encode("user:p\u00e4ss\u00e9".encode()),  # non-ASCII password
    b"Basic " + base64.b64encode(b"user:\xff\xfe"),  # not UTF-8
    b"Basic \xc3\xa4\xc3\xa4\xc3\xa4",  # non-ASCII base64 text
    b"Basic not*base64!",
    b"Basic",
    b"Bearer " + API_TOKEN.encode()[:-1] + b"\x80",
    b"Bearer " + API_TOKEN.encode() + b"\xff",
    b"Bearer \xe2\x82\xac" + WEBHOOK_TOKEN.encode(),
    b"Bearer",
    b"\xff\xfe",
]


@pytest.mark.parametrize("authorization", MALFORMED)
@pytest.mark.parametrize("path", ["/v1/alertmanager", "/v1/tenants/acme/outcomes"])
async def test_malformed_authorization_is_401(scoped: Any, path: str, authorization: bytes) -> None:
    status, answer = await _raw_request(scoped, path, authorization)
    assert status == 401, answer
    assert b"Traceback" not in answer


async def test_basic_auth_with_the_token_as_password_still_works(scoped: Any) -> None:
    basic = base64.b64encode(f"alertmanager:{WEBHOOK_TOKEN}".encode()).decode()
    resp = await scoped.post(
        "/v1/alertmanager", json=firing("acme"), headers={"Authorization": f"Basic {basic}"}
    )
    assert resp.status == 200, await resp.text()


# --- tokens the server refuses to start with ---------------------------------------------------


def _refused(**overrides: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        make_settings("postgresql+psycopg://u@127.0.0.1/db", **overrides).check_startable()
    return str(caught.value)


def test_refuses_tokens_shared_between_roles(operators_file: Path) -> None:
    assert "share a token" in _refused(gateway_token=API_TOKEN)
    assert "share a token" in _refused(gateway_token=WEBHOOK_TOKEN)
    assert "share a token" in _refused(api_token=ALICE_TOKEN, operator_tokens_file=operators_file)


def test_refuses_two_operators_with_one_token(tmp_path: Path) -> None:
    path = tmp_path / "operators"
    path.write_text(f"alice {ALICE_TOKEN}\nbob {ALICE_TOKEN}\n")
    message = _refused(operator_tokens_file=path)
    assert "'alice'" in message and "'bob'" in message and ALICE_TOKEN not in message


def test_refuses_short_tokens(tmp_path: Path) -> None:
    assert "shorter than 16" in _refused(api_token="fifteen-chars-x")
    assert "shorter than 16" in _refused(gateway_token="short")
    path = tmp_path / "operators"
    path.write_text("alice short\n")
    message = _refused(operator_tokens_file=path)
    assert "alice" in message and "shorter than 16" in message and "short\n" not in message


@pytest.mark.parametrize("example", sorted((REPO / "deploy").glob("*_token.example")))
def test_refuses_the_deploy_placeholders(example: Path) -> None:
    placeholder = example.read_text().strip()
    assert placeholder in PLACEHOLDER_TOKENS
    assert "placeholder" in _refused(api_token=placeholder)
    assert "placeholder" in _refused(webhook_token=placeholder)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("alice\n", "expected `name token`"),
        ("alice a b\n", "expected `name token`"),
        ("-x 0123456789abcdefgh\n", "operator name"),
        (f"alice {ALICE_TOKEN}\nalice {BOB_TOKEN}\n", "listed twice"),
        ("# nobody\n", "names no operator"),
    ],
)
def test_refuses_malformed_operator_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "operators"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        Settings(operator_tokens_file=path)


def test_operator_tokens_stand_in_for_the_api_token(operators_file: Path) -> None:
    make_settings(
        "postgresql+psycopg://u@127.0.0.1/db", api_token=None, operator_tokens_file=operators_file
    ).check_startable()


def test_serve_exits_non_zero_on_a_shared_token(clean_db: str, tmp_path: Path) -> None:
    env = server_env(clean_db, 0)
    env.update(
        {
            "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "RECEIVER_API_TOKEN": API_TOKEN,
            "RECEIVER_GATEWAY_TOKEN": API_TOKEN,
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "receiver", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "refusing to start" in out and "share a token" in out, out
    assert API_TOKEN not in out and "Traceback" not in out
