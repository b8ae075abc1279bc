"""The Alertmanager API v2 adapter (receiver/peers/alertmanager.py) against local servers
that speak the API, and against the real Alertmanager 0.25 binary.

No database: these tests only need aiohttp (pytest-aiohttp's servers) and, for the last
ones, Debian's `prometheus-alertmanager` (a missing binary FAILS them, as in tests/rules).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from receiver.domain.alerts import AlertInstance, AlertStatus, fingerprint, role_of
from receiver.domain.reconcile import PeerFailed, PeerOk, instance_key, reconcile
from receiver.peers.alertmanager import ALERTS_PATH, fetch_alerts, peer_name, poll_peers

ServerFactory = Callable[..., Awaitable[TestServer]]
REQUESTS = web.AppKey("requests", list)

# One alert as Alertmanager 0.25 answers GET /api/v2/alerts (captured from the real
# binary: startsAt in milliseconds and in the offset it was posted with).
TENANT_A: dict[str, Any] = {
    "annotations": {"summary": "Tenant tenant-a error ratio 90%"},
    "endsAt": "2026-12-01T22:28:15.551Z",
    "fingerprint": fingerprint(
        {"alertname": "TenantErrorRateHigh", "isolate": "true", "tenant_id": "tenant-a"}
    ),
    "receivers": [{"name": "breaker"}],
    "startsAt": "2026-01-02T03:04:05.123+02:00",
    "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
    "updatedAt": "2026-12-01T22:23:15.551Z",
    "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
    "labels": {"alertname": "TenantErrorRateHigh", "isolate": "true", "tenant_id": "tenant-a"},
}
TENANT_B_SILENCED: dict[str, Any] = {
    **TENANT_A,
    "fingerprint": fingerprint(
        {"alertname": "TenantErrorRateHigh", "isolate": "true", "tenant_id": "tenant-b"}
    ),
    "labels": {"alertname": "TenantErrorRateHigh", "isolate": "true", "tenant_id": "tenant-b"},
    "status": {
        "inhibitedBy": [],
        "silencedBy": ["1f5a1e4e-5d0b-4e0c-9a57-0c6a3f1b2d3e"],
        "state": "suppressed",
    },
    # A newer Alertmanager's extra field: ignored.
    "notification_reason": "x",
}


def api_app(
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.Application:
    app = web.Application()
    app.router.add_get(ALERTS_PATH, answer)
    app[REQUESTS] = []
    return app


def json_answer(body: Any, status: int = 200) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        request.app[REQUESTS].append(request.rel_url)
        return web.json_response(body, status=status)

    return handler


def base(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


# --- a local server speaking API v2 ----------------------------------------------------


async def test_parses_every_alert_and_asks_for_all_of_them(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    app = api_app(json_answer([TENANT_A, TENANT_B_SILENCED]))
    server = await aiohttp_server(app)
    answer = await fetch_alerts(session, base(server))
    assert isinstance(answer, PeerOk), answer
    assert answer.peer == base(server)
    (url,) = app[REQUESTS]
    assert dict(url.query) == {
        "active": "true",
        "silenced": "true",
        "inhibited": "true",
        "unprocessed": "true",
    }
    a, b = answer.alerts
    assert a.fingerprint == TENANT_A["fingerprint"]
    assert a.starts_at == datetime(2026, 1, 2, 1, 4, 5, 123000, tzinfo=UTC)
    assert a.starts_at.utcoffset() == timedelta(hours=2)  # as given; compared in UTC
    assert a.ends_at == datetime(2026, 12, 1, 22, 28, 15, 551000, tzinfo=UTC)
    assert a.updated_at == datetime(2026, 12, 1, 22, 23, 15, 551000, tzinfo=UTC)
    assert a.labels["tenant_id"] == "tenant-a"
    assert a.annotations == {"summary": "Tenant tenant-a error ratio 90%"}
    assert (a.state, a.silenced_by, a.inhibited_by) == ("active", (), ())
    assert a.receivers == ("breaker",)
    assert a.generator_url.startswith("http://prometheus:9090/")
    assert (b.state, b.silenced_by) == ("suppressed", ("1f5a1e4e-5d0b-4e0c-9a57-0c6a3f1b2d3e",))


async def test_an_empty_answer_is_a_complete_answer(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = await aiohttp_server(api_app(json_answer([])))
    assert await fetch_alerts(session, base(server) + "/") == PeerOk(base(server) + "/", ())


@pytest.mark.parametrize("status", [500, 503, 404, 401, 302])
async def test_a_non_2xx_answer_is_a_failed_peer(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, status: int
) -> None:
    body: Any = [TENANT_A]  # even with a plausible body
    server = await aiohttp_server(api_app(json_answer(body, status=status)))
    answer = await fetch_alerts(session, base(server))
    assert isinstance(answer, PeerFailed)
    assert f"HTTP {status}" in answer.reason


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"alerts": []}',  # not the API's list
        b"[1, 2]",
        json.dumps([{**TENANT_A, "startsAt": "yesterday"}]).encode(),
        json.dumps([{k: v for k, v in TENANT_A.items() if k != "fingerprint"}]).encode(),
        json.dumps([{**TENANT_A, "labels": {"tenant_id": 7}}]).encode(),
        # One bad alert among good ones fails the whole answer: a partial answer would
        # make the bad one look absent.
        json.dumps([TENANT_A, {**TENANT_B_SILENCED, "status": {}}]).encode(),
    ],
)
async def test_an_invalid_answer_is_a_failed_peer(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, body: bytes
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    server = await aiohttp_server(api_app(handler))
    answer = await fetch_alerts(session, base(server))
    assert isinstance(answer, PeerFailed)
    assert answer.reason.startswith("invalid answer:"), answer.reason


async def test_a_slow_peer_is_a_failed_peer_within_the_timeout(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response([])

    server = await aiohttp_server(api_app(slow))
    started = time.monotonic()
    answer = await fetch_alerts(session, base(server), timeout_seconds=0.3)
    assert time.monotonic() - started < 2
    assert answer == PeerFailed(base(server), "no answer within 0.3s")


async def test_a_body_that_stalls_halfway_is_a_failed_peer(
    aiohttp_raw_server: Callable[..., Awaitable[Any]], session: aiohttp.ClientSession
) -> None:
    async def stalls(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b"[")
        await asyncio.sleep(5)
        return response

    server = await aiohttp_raw_server(stalls)
    answer = await fetch_alerts(session, str(server.make_url("")).rstrip("/"), timeout_seconds=0.3)
    assert isinstance(answer, PeerFailed) and "no answer within" in answer.reason


async def test_an_oversized_answer_is_a_failed_peer(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = await aiohttp_server(api_app(json_answer([TENANT_A] * 50)))
    answer = await fetch_alerts(session, base(server), max_body_bytes=1000)
    assert answer == PeerFailed(base(server), "answer over 1000 bytes")


async def test_a_peer_that_refuses_connections_is_a_failed_peer(
    session: aiohttp.ClientSession,
) -> None:
    port = free_port()
    answer = await fetch_alerts(session, f"http://127.0.0.1:{port}", timeout_seconds=2)
    assert isinstance(answer, PeerFailed)
    assert "ClientConnectorError" in answer.reason


def test_credentials_never_appear_in_the_peer_name() -> None:
    assert peer_name("http://am:secret@am-0:9093") == "http://am-0:9093"
    assert peer_name("http://am-0:9093/") == "http://am-0:9093/"


async def test_two_peers_one_failing_the_poll_changes_nothing(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Both peers polled at once; the failing one makes the poll incomplete, so the
    alert only the healthy peer is missing is not counted as absent."""
    good = await aiohttp_server(api_app(json_answer([TENANT_B_SILENCED])))
    bad = await aiohttp_server(api_app(json_answer({"error": "x"}, status=503)))
    answers = await poll_peers(session, [base(good), base(bad)], timeout_seconds=2)
    assert [type(a) for a in answers] == [PeerOk, PeerFailed]
    tenant_a = stored_instance(TENANT_A["labels"], datetime.fromisoformat(TENANT_A["startsAt"]))
    result = reconcile([tenant_a], answers, frozenset(), tenant_label="tenant_id")
    assert (result.complete, result.changes, result.absent) == (False, (), frozenset())
    # Both answering: tenant-a absent once (kept, not resolved), the silenced tenant-b
    # never delivered: recorded as fired.
    answers = await poll_peers(session, [base(good), base(good)], timeout_seconds=2)
    result = reconcile([tenant_a], answers, frozenset(), tenant_label="tenant_id")
    assert result.complete
    (fired,) = result.changes
    assert fired.instance.tenant_id == "tenant-b" and fired.silenced_by
    assert result.absent == {instance_key(tenant_a.fingerprint, tenant_a.starts_at)}


# --- the real Alertmanager 0.25 --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stored_instance(labels: dict[str, str], starts_at: datetime) -> AlertInstance:
    return AlertInstance(
        fingerprint=fingerprint(labels),
        starts_at=starts_at,
        ends_at=None,
        status=AlertStatus.FIRING,
        labels=labels,
        annotations={},
        generator_url="",
        role=role_of(labels, tenant_label="tenant_id"),
        tenant_id=labels.get("tenant_id"),
    )


AM_CONFIG = """
route:
  receiver: nowhere
  group_wait: 1h
receivers:
  - name: nowhere
inhibit_rules:
  - source_matchers: ['alertname="PlatformErrorRateHigh"']
    target_matchers: ['alertname="TenantErrorRateHigh"', 'tenant_id="tenant-c"']
"""


def _http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


@pytest.fixture
def real_alertmanager(tmp_path: Path) -> Iterator[str]:
    """A private Alertmanager on a free local port, as demo/processes.py starts it
    (no clustering, its own storage)."""
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.fail(
            "prometheus-alertmanager is not on PATH: apt-get install prometheus-alertmanager",
            pytrace=False,
        )
    config = tmp_path / "alertmanager.yml"
    config.write_text(AM_CONFIG)
    url = f"http://127.0.0.1:{free_port()}"
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    output = (tmp_path / "alertmanager.log").read_text()
                    pytest.fail(f"Alertmanager did not start:\n{output}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def test_the_real_alertmanager_silenced_and_inhibited_alerts_are_seen_active(
    real_alertmanager: str, session: aiohttp.ClientSession
) -> None:
    now = datetime.now(UTC)
    # Nanoseconds, as Prometheus posts them: the API answers in milliseconds.
    starts = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
    labels = {
        t: {"alertname": "TenantErrorRateHigh", "tenant_id": t, "isolate": "true"}
        for t in ("tenant-a", "tenant-b", "tenant-c")
    }
    platform = {"alertname": "PlatformErrorRateHigh", "scope": "platform"}
    watchdog = {"alertname": "Watchdog", "severity": "none"}
    _http(
        "POST",
        f"{real_alertmanager}/api/v2/alerts",
        [{"labels": lb, "startsAt": starts} for lb in [*labels.values(), platform, watchdog]],
    )
    silence = _http(
        "POST",
        f"{real_alertmanager}/api/v2/silences",
        {
            "matchers": [{"name": "tenant_id", "value": "tenant-b", "isRegex": False}],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "test",
            "comment": "a silence stops pages, not isolation",
        },
    )
    silence_id = silence["silenceID"]

    # Silences apply at once; the inhibitor sees the platform alert asynchronously.
    deadline = time.monotonic() + 10
    while True:
        answer = await fetch_alerts(session, real_alertmanager)
        assert isinstance(answer, PeerOk), answer
        by_tenant = {a.labels.get("tenant_id", a.alertname): a for a in answer.alerts}
        if by_tenant.get("tenant-c") and by_tenant["tenant-c"].inhibited_by:
            break
        assert time.monotonic() < deadline, by_tenant
        await asyncio.sleep(0.2)

    assert set(by_tenant) == {
        "tenant-a",
        "tenant-b",
        "tenant-c",
        "PlatformErrorRateHigh",
        "Watchdog",
    }
    a, b, c = by_tenant["tenant-a"], by_tenant["tenant-b"], by_tenant["tenant-c"]
    assert (a.state, a.silenced_by, a.inhibited_by) == ("active", (), ())
    assert (b.state, b.silenced_by) == ("suppressed", (silence_id,))
    assert c.state == "suppressed"
    assert c.inhibited_by == (fingerprint(platform),)
    for tenant, alert in (("tenant-a", a), ("tenant-b", b), ("tenant-c", c)):
        assert alert.fingerprint == fingerprint(labels[tenant])  # the same function
        assert alert.starts_at.microsecond == 123000  # milliseconds, truncated

    # tenant-a was delivered (stored with the webhook's precision, microseconds); the
    # silenced, the inhibited and the platform alert never were (a silence stops the
    # webhook). The Watchdog has no role.
    stored_a = stored_instance(labels["tenant-a"], datetime.fromisoformat(starts))
    assert stored_a.starts_at.microsecond == 123456
    result = reconcile([stored_a], [answer], frozenset(), tenant_label="tenant_id")
    assert result.complete and result.absent == frozenset()
    fired = {c.instance.labels.get("tenant_id", c.instance.alertname) for c in result.fired}
    assert fired == {"tenant-b", "tenant-c", "PlatformErrorRateHigh"}
    assert result.resolved == ()
