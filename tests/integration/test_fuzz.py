"""A property-based fuzz of the webhook and the API against a running receiver (a real
`python -m receiver serve` process): real Alertmanager 0.25 payloads mutated field by
field, huge and odd label sets, broken JSON, odd paths and headers. Whatever comes in:
never a 500, never a 503 (the database is healthy, so a 503 could only be input that can
never succeed, retried by Alertmanager forever), and nothing half-written: every delivery
row has its delivery.accepted audit row and every 200 names a stored delivery.

Bounded: FUZZ_EXAMPLES examples per property (about 20 s in all)."""

from __future__ import annotations

import copy
import http.client
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import embedded_pg
from tests.conftest import API_TOKEN, FIXTURES, WEBHOOK_TOKEN, load_fixture
from tests.integration.helpers import ServerProcess, server_env

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("*.json"))
TIMEOUT = 30


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[str]:
    from tests.conftest import truncate_all

    truncate_all(database_url)
    port = embedded_pg.free_port()
    env = server_env(
        database_url,
        port,
        RECEIVER_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        RECEIVER_API_TOKEN=API_TOKEN,
        RECEIVER_LOG_LEVEL="WARNING",
        RECEIVER_MAX_BODY_BYTES=str(1 << 20),
    )
    log: Path = tmp_path_factory.mktemp("fuzz") / "receiver.log"
    server = ServerProcess(env=env, log_path=log, port=port).start()
    try:
        import asyncio

        import aiohttp

        async def ready() -> None:
            async with aiohttp.ClientSession() as s:
                await server.wait_ready(s)

        asyncio.run(ready())
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
        errors = [line for line in server.log().splitlines() if '"level":"error"' in line]
        assert not errors, "errors in the receiver's log:\n" + "\n".join(errors[:5])


def request(
    host: str, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1", "replace"))
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check(status: int, body: bytes, what: str) -> None:
    assert status != 500, f"{what}: 500 {body[:300]!r}"
    assert status != 503, f"{what}: 503 for input that can never succeed {body[:300]!r}"
    assert status < 500, f"{what}: {status} {body[:300]!r}"


# --- strategies --------------------------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12),
    st.sampled_from(["", " ", "\n", "\x00", "\x7f", "\x85", "\u200b", "%", "/", "../..", "?#&"]),
    st.integers(min_value=1, max_value=4000).map(lambda n: "x" * n),
    st.binary(min_size=1, max_size=1500).map(bytes.hex),
)
# Tenant label values, the hostile ones often: random text too long for an index row (a
# repetitive one would compress below the limit), control characters, odd characters.
tenant_values = st.one_of(
    odd_text,
    st.binary(min_size=1400, max_size=2500).map(bytes.hex),
    st.binary(min_size=1400, max_size=2500).map(bytes.hex),
    st.sampled_from(["Acme Corp", "team/a", "100%", "tab\there", "\x85", "é" * 300]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+14:00",
            "2026-11-22T14:24:16.033Z",
            "not a time",
            "",
        ]
    ),
)
labels = st.dictionaries(odd_text, odd_text, max_size=30)


def _labels_of(alert: dict[str, Any]) -> dict[str, Any]:
    labels = alert.get("labels")
    return dict(labels) if isinstance(labels, dict) else {}


@st.composite
def mutated_payload(draw: st.DrawFn) -> Any:
    body = copy.deepcopy(load_fixture(draw(st.sampled_from(FIXTURE_NAMES))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        alerts = body.get("alerts")
        alert = draw(st.sampled_from(alerts)) if isinstance(alerts, list) and alerts else None
        kind = draw(
            st.sampled_from(
                ["top", "drop-top", "alert", "drop-alert", "labels", "starts", "many"]
                + ["tenant"] * 7
            )
        )
        if kind == "top" and body:
            body[draw(st.sampled_from(sorted(body)))] = draw(json_values)
        elif kind == "drop-top" and body:
            body.pop(draw(st.sampled_from(sorted(body))), None)
        elif kind == "alert" and isinstance(alert, dict) and alert:
            alert[draw(st.sampled_from(sorted(alert)))] = draw(json_values)
        elif kind == "drop-alert" and isinstance(alert, dict) and alert:
            alert.pop(draw(st.sampled_from(sorted(alert))), None)
        elif kind == "labels" and isinstance(alert, dict):
            alert["labels"] = {**_labels_of(alert), **draw(labels)}
            alert.pop("fingerprint", None)
        elif kind == "tenant" and isinstance(alert, dict) and isinstance(alert.get("labels"), dict):
            alert["labels"]["tenant_id"] = draw(tenant_values)
            alert["labels"]["isolate"] = "true"
            alert.pop("fingerprint", None)
        elif kind == "starts" and isinstance(alert, dict):
            alert["startsAt"] = draw(timestamps)
        elif kind == "many" and isinstance(alert, dict):
            n = draw(st.integers(min_value=2, max_value=300))
            body["alerts"] = [
                {**alert, "labels": {**_labels_of(alert), "n": str(i)}, "fingerprint": None}
                for i in range(n)
            ]
    return body


@st.composite
def webhook_body(draw: st.DrawFn) -> bytes:
    payload = draw(mutated_payload())
    raw = json.dumps(payload, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is"] * 6 + ["truncated", "garbage", "empty", "array"]))
    if how == "truncated":
        return raw[: draw(st.integers(min_value=0, max_value=max(0, len(raw) - 1)))]
    if how == "garbage":
        return draw(st.binary(max_size=200))
    if how == "empty":
        return b""
    if how == "array":
        return b"[" + raw + b"]"
    return raw


auth_headers = st.sampled_from(
    [
        f"Bearer {WEBHOOK_TOKEN}",
        f"Bearer {WEBHOOK_TOKEN}",
        f"Bearer {WEBHOOK_TOKEN}",
        f"Bearer {API_TOKEN}",
        "Bearer wrong-token-wrong-token",
        "Bearer \u00ff\u00fe",
        "Basic !!!notbase64",
        "Basic w7/Dvw==",
        "",
    ]
)
api_auth = st.one_of(st.just(f"Bearer {API_TOKEN}"), auth_headers)
content_types = st.sampled_from(
    ["application/json"] * 4 + ["application/json; charset=utf-8", "text/plain", "", "a/b; x"]
)


# --- properties --------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(body=webhook_body(), auth=auth_headers, content_type=content_types)
def test_fuzzed_webhooks_are_never_5xx(receiver, body, auth, content_type):
    headers = {"Authorization": auth} if auth else {}
    if content_type:
        headers["Content-Type"] = content_type
    status, answer = request(receiver, "POST", "/v1/alertmanager", body, headers)
    check(status, answer, "POST /v1/alertmanager")
    if status == 200:
        assert json.loads(answer)["delivery_id"] > 0


segments = st.one_of(
    odd_text.map(lambda t: quote(t, safe="")),
    st.sampled_from(["", "%", "%FF", "%2F", "a%00b", "..", "Acme%20Corp", "x" * 600]),
)
api_calls = st.sampled_from(
    [
        ("GET", "/v1/tenants/{}/breaker"),
        ("POST", "/v1/tenants/{}/breaker"),
        ("POST", "/v1/tenants/{}/outcomes"),
        ("GET", "/v1/tenants/{}"),
        ("PUT", "/v1/tenants/{}"),
        ("GET", "/v1/tenants/{}/health"),
        ("GET", "/v1/breakers"),
        ("GET", "/v1/incidents?tenant={}"),
        ("GET", "/v1/incidents/{}"),
        ("POST", "/v1/incidents/{}/acknowledge"),
        ("PUT", "/v1/incidents/{}/postmortem"),
        ("GET", "/v1/analytics/incidents?since={}"),
        ("DELETE", "/v1/tenants/{}"),
        ("GET", "/{}"),
    ]
)
api_bodies = st.one_of(
    st.none(),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"action": st.sampled_from(["force_open", "release", "x"]), "reason": odd_text}
    ).map(lambda d: json.dumps({**d, "actor": "fuzz"}).encode()),
    st.fixed_dictionaries(
        {
            "tier": st.sampled_from(["gold", "bronze", "tin"]),
            "hourly_cost": st.one_of(st.floats(allow_nan=False), st.integers(), st.just(1e12)),
            "name": odd_text,
        }
    ).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(
        {"success": st.integers(-5, 2_000_000), "failure": st.integers(-5, 2_000_000)}
    ).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=100),
)


@FUZZ
@given(call=api_calls, segment=segments, body=api_bodies, auth=api_auth)
def test_fuzzed_api_calls_are_never_5xx(receiver, call, segment, body, auth):
    method, template = call
    path = template.format(segment)
    headers = {"Authorization": auth} if auth else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    status, answer = request(receiver, method, path, body, headers)
    check(status, answer, f"{method} {path[:100]}")


def test_nothing_was_half_written(receiver, sql_at_run_end: Callable[[str], Any]):
    """Runs after the fuzz (file order): every delivery has its delivery.accepted row."""
    deliveries = sql_at_run_end("SELECT count(*) FROM deliveries")[0][0]
    accepted = sql_at_run_end("SELECT count(*) FROM audit_log WHERE action = 'delivery.accepted'")[
        0
    ][0]
    orphans = sql_at_run_end(
        "SELECT count(*) FROM alerts a WHERE a.delivery_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)"
    )[0][0]
    assert deliveries > 0, "the fuzz stored no delivery at all: the mutations are too harsh"
    assert (deliveries, orphans) == (accepted, 0)


@pytest.fixture
def sql_at_run_end(database_url: str) -> Callable[[str], Any]:
    import psycopg

    from tests.conftest import libpq

    def run(query: str) -> Any:
        with psycopg.connect(libpq(database_url), autocommit=True) as conn:
            return conn.execute(query).fetchall()

    return run
