"""POST /v1/alertmanager through HTTP against a real PostgreSQL: what is refused (and
changes nothing), what is accepted, at-least-once delivery, the audit log's append-only
guarantee, and the operational endpoints."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from receiver.domain.alerts import fingerprint
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS, WEBHOOK_TOKEN, libpq, load_fixture
from tests.integration.helpers import (
    FIXTURE_FINGERPRINT,
    FIXTURE_STARTS_AT,
    audit_rows,
    firing,
    get_breaker,
    isolating_alert,
    post_webhook,
    resolved,
    table_counts,
    webhook_payload,
)

FIXTURES = [
    "single-tenant-firing.json",
    "single-tenant-resolved.json",
    "grouped-truncated-firing.json",
    "grouped-truncated-resolved.json",
]
NOTHING = {"alerts": 0, "deliveries": 0, "audit_log": 0, "breakers": 0, "tenants": 0}


def assert_error(body: dict[str, Any], error: str | None = None) -> None:
    assert set(body) >= {"error", "detail"}, body
    assert isinstance(body["detail"], str) and body["detail"], body
    if error is not None:
        assert body["error"] == error, body


async def metric_value(client: Any, line_start: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- refused input: JSON error, nothing changed ----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail_part"),
    [
        ({}, "missing"),
        ({"Authorization": "Bearer not-the-token"}, "invalid token"),
        ({"Authorization": "Bearer "}, "invalid"),
        (API_HEADERS, "webhook token"),  # the API token is not the webhook token
        ({"Authorization": "Basic " + base64.b64encode(b"am:wrong").decode()}, "invalid"),
        ({"Authorization": "Basic !!!notbase64"}, "missing"),
        ({"Authorization": f"Token {WEBHOOK_TOKEN}"}, "missing"),
    ],
)
async def test_webhook_without_a_valid_token_is_401_and_changes_nothing(
    client, sql, headers, detail_part
):
    resp = await client.post(
        "/v1/alertmanager", json=load_fixture("single-tenant-firing.json"), headers=headers
    )
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert_error(body, "unauthorized")
    assert detail_part in body["detail"]
    assert table_counts(sql) == NOTHING
    assert (
        await metric_value(client, 'receiver_webhook_rejections_total{reason="unauthorized"}')
        == 1.0
    )


async def test_basic_auth_with_the_token_as_password_is_accepted(client, sql):
    creds = base64.b64encode(f"alertmanager:{WEBHOOK_TOKEN}".encode()).decode()
    resp = await client.post(
        "/v1/alertmanager",
        json=load_fixture("single-tenant-firing.json"),
        headers={"Authorization": f"Basic {creds}"},
    )
    assert resp.status == 200, await resp.text()
    assert sql("SELECT count(*) FROM alerts") == [(1,)]


def _mutate(path: list[Any], value: Any) -> dict[str, Any]:
    body = load_fixture("single-tenant-firing.json")
    target: Any = body
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"", "application/json"),
        (b"   \n", "application/json"),
        (b"{not json", "application/json"),
        (b'{"version": "4",', "application/json"),
        (b"\xff\xfe garbage", "application/json"),
    ],
    ids=["empty", "blank", "not-json", "truncated-json", "not-utf8"],
)
async def test_body_that_is_not_json_is_400(client, sql, raw, content_type):
    resp = await client.post(
        "/v1/alertmanager",
        data=raw,
        headers={**WEBHOOK_HEADERS, "Content-Type": content_type},
    )
    assert resp.status == 400, await resp.text()
    assert_error(await resp.json(), "invalid_input")
    assert table_counts(sql) == NOTHING


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        (["version"], "5", ["version"]),
        (["version"], 4, ["version"]),
        (["version"], _DELETE, ["version"]),
        (["alerts"], {"not": "a list"}, ["alerts"]),
        (["alerts"], _DELETE, ["alerts"]),
        (["status"], "pending", ["status"]),
        (["alerts", 0, "status"], "unknown", ["alerts", 0, "status"]),
        (["alerts", 0, "status"], "suppressed", ["alerts", 0, "status"]),
        (["alerts", 0, "labels"], ["tenant_id", "tenant-a"], ["alerts", 0, "labels"]),
        (["alerts", 0, "labels", "tenant_id"], 7, ["alerts", 0, "labels", "tenant_id"]),
        (["alerts", 0, "annotations"], "text", ["alerts", 0, "annotations"]),
        (["alerts", 0, "fingerprint"], "not-hex!", ["alerts", 0, "fingerprint"]),
        (["truncatedAlerts"], -1, ["truncatedAlerts"]),
        (["truncatedAlerts"], "one", ["truncatedAlerts"]),
        (["alerts", 0, "startsAt"], "yesterday", ["alerts", 0, "startsAt"]),
        (["alerts", 0, "startsAt"], "2026-13-45T25:61:00Z", ["alerts", 0, "startsAt"]),
        (["alerts", 0, "startsAt"], "2026-11-22T14:24:16.033", ["alerts", 0, "startsAt"]),
        (["alerts", 0, "startsAt"], _DELETE, ["alerts", 0, "startsAt"]),
        (["alerts", 0, "endsAt"], "2026-11-22 14:24:16", ["alerts", 0, "endsAt"]),
        # Parse, but fall outside what can be stored once in UTC: refused, never a 500.
        (["alerts", 0, "startsAt"], "0001-01-01T00:00:00+14:00", ["alerts", 0, "startsAt"]),
        (["alerts", 0, "startsAt"], "9999-12-31T23:59:59-10:00", ["alerts", 0, "startsAt"]),
        (["truncatedAlerts"], 3_000_000_000, ["truncatedAlerts"]),
    ],
    ids=[
        "version-5",
        "version-int",
        "version-missing",
        "alerts-object",
        "alerts-missing",
        "status-unknown",
        "alert-status-unknown",
        "alert-status-suppressed",
        "labels-list",
        "label-value-int",
        "annotations-string",
        "fingerprint-not-hex",
        "truncated-negative",
        "truncated-string",
        "startsAt-unparseable",
        "startsAt-impossible",
        "startsAt-naive",
        "startsAt-missing",
        "endsAt-naive",
        "startsAt-before-year-1-in-utc",
        "startsAt-after-year-9999-in-utc",
        "truncated-over-int4",
    ],
)
async def test_payload_that_can_never_succeed_is_422_with_locations(client, sql, path, value, loc):
    resp = await client.post("/v1/alertmanager", json=_mutate(path, value), headers=WEBHOOK_HEADERS)
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert_error(body, "invalid_payload")
    assert loc in [p["loc"][: len(loc)] for p in body["problems"]], body["problems"]
    assert all(set(p) == {"loc", "msg"} for p in body["problems"])
    assert table_counts(sql) == NOTHING


async def test_payload_that_is_json_but_not_an_object_is_refused(client, sql):
    for raw in (b"[]", b"null", b"42", b'"text"'):
        resp = await client.post(
            "/v1/alertmanager",
            data=raw,
            headers={**WEBHOOK_HEADERS, "Content-Type": "application/json"},
        )
        assert resp.status in (400, 422), (raw, await resp.text())
        assert_error(await resp.json())
    assert table_counts(sql) == NOTHING


async def test_body_over_the_limit_is_413(app_client, sql):
    client = await app_client(max_body_bytes=2048)
    body = webhook_payload(*[isolating_alert(f"tenant-{i}") for i in range(10)])
    raw = json.dumps(body).encode()
    assert len(raw) > 2048
    resp = await client.post(
        "/v1/alertmanager",
        data=raw,
        headers={**WEBHOOK_HEADERS, "Content-Type": "application/json"},
    )
    assert resp.status == 413, await resp.text()
    detail = (await resp.json())["detail"]
    assert "2048" in detail
    assert table_counts(sql) == NOTHING

    # Without a Content-Length (chunked), the limit is found while reading.
    async def chunks():
        for start in range(0, len(raw), 512):
            yield raw[start : start + 512]

    resp = await client.post(
        "/v1/alertmanager",
        data=chunks(),
        headers={**WEBHOOK_HEADERS, "Content-Type": "application/json"},
    )
    assert resp.status == 413, await resp.text()
    assert_error(await resp.json(), "payload_too_large")
    assert table_counts(sql) == NOTHING

    # Just under the limit is fine.
    small = json.dumps(load_fixture("single-tenant-firing.json")).encode()
    assert len(small) < 2048
    resp = await client.post(
        "/v1/alertmanager",
        data=small,
        headers={**WEBHOOK_HEADERS, "Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(client, sql, content_type):
    headers = dict(WEBHOOK_HEADERS)
    if content_type:
        headers["Content-Type"] = content_type
    resp = await client.post(
        "/v1/alertmanager",
        data=json.dumps(load_fixture("single-tenant-firing.json")).encode(),
        headers=headers,
    )
    if content_type is None:
        # aiohttp's client labels raw bytes application/octet-stream.
        assert resp.request_info.headers.get("Content-Type") in (None, "application/octet-stream")
    assert resp.status == 415, await resp.text()
    assert_error(await resp.json(), "unsupported_media_type")
    assert table_counts(sql) == NOTHING


async def test_json_with_a_charset_is_accepted(client, sql):
    resp = await client.post(
        "/v1/alertmanager",
        data=json.dumps(load_fixture("single-tenant-firing.json")).encode(),
        headers={**WEBHOOK_HEADERS, "Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status == 200, await resp.text()


async def test_wrong_method_and_unknown_path_answer_json(client):
    resp = await client.get("/v1/alertmanager", headers=WEBHOOK_HEADERS)
    assert resp.status == 405
    assert_error(await resp.json())
    assert "POST" in resp.headers["Allow"]
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert_error(await resp.json())


# --- accepted payloads -------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
async def test_every_fixture_is_accepted_as_sent(client, sql, name):
    fixture = load_fixture(name)
    body = await post_webhook(client, fixture)
    n = len(fixture["alerts"])
    assert body["alerts"] == n
    assert body["new"] == n
    assert body["duplicates"] == 0
    assert body["truncated"] == fixture["truncatedAlerts"]
    rows = sql("SELECT fingerprint, status, tenant_id FROM alerts ORDER BY fingerprint")
    assert rows == sorted(
        (a["fingerprint"], a["status"], a["labels"]["tenant_id"]) for a in fixture["alerts"]
    )
    # The fixtures' fingerprints are Alertmanager's: our computation agrees with them.
    for a in fixture["alerts"]:
        assert fingerprint(a["labels"]) == a["fingerprint"]
    (delivery,) = sql(
        "SELECT alert_count, truncated_alerts, group_key, receiver, status FROM deliveries"
    )
    assert delivery == (
        n,
        fixture["truncatedAlerts"],
        fixture["groupKey"],
        fixture["receiver"],
        fixture["status"],
    )
    ((details,),) = sql("SELECT details FROM audit_log WHERE action = 'delivery.accepted'")
    assert details["alerts"] == n
    assert details["truncated"] == fixture["truncatedAlerts"]
    assert details["groupKey"] == fixture["groupKey"]
    action = "alert.fired" if fixture["status"] == "firing" else "alert.resolved"
    logged = audit_rows(sql, action)
    assert sorted(d["fingerprint"] for _, d in logged) == sorted(
        a["fingerprint"] for a in fixture["alerts"]
    )
    for actor, d in logged:
        assert actor == "alertmanager"
        assert d["alertname"] == "TenantErrorRateHigh"
        assert datetime.fromisoformat(d["startsAt"]) == datetime.fromisoformat(
            fixture["alerts"][0]["startsAt"]
        )
    deliveries = await metric_value(
        client, f'receiver_webhook_deliveries_total{{status="{fixture["status"]}"}}'
    )
    assert deliveries == 1.0
    assert await metric_value(client, 'receiver_webhook_alerts_total{result="new"}') == n


async def test_unknown_fields_are_ignored(client, sql):
    body = load_fixture("single-tenant-firing.json")
    body["notification_reason"] = "new_alert"
    body["routeLabels"] = {"team": "platform"}
    body["alerts"][0]["someFutureField"] = {"nested": [1, 2]}
    out = await post_webhook(client, body)
    assert out["new"] == 1
    assert sql("SELECT fingerprint FROM alerts") == [(FIXTURE_FINGERPRINT,)]


async def test_old_alertmanager_payload_gets_the_same_identity(client, sql):
    old = load_fixture("single-tenant-firing.json")
    del old["truncatedAlerts"]
    for a in old["alerts"]:
        del a["fingerprint"]
        a["generatorURL"] = ""  # amtool alert add sends none
    out = await post_webhook(client, old)
    assert out["new"] == 1
    assert out["truncated"] == 0
    assert sql("SELECT fingerprint, generator_url FROM alerts") == [(FIXTURE_FINGERPRINT, "")]
    # The same instance from a 0.25 peer is a copy of it, not a new instance.
    out = await post_webhook(client, load_fixture("single-tenant-firing.json"))
    assert out["duplicates"] == 1
    assert out["new"] == 0
    assert sql("SELECT count(*) FROM alerts") == [(1,)]
    assert sql("SELECT truncated_alerts FROM deliveries ORDER BY id") == [(0,), (0,)]


async def test_firing_end_is_stored_as_null_and_resolved_end_as_sent(client, sql):
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    assert sql("SELECT status, ends_at FROM alerts") == [("firing", None)]
    await post_webhook(client, load_fixture("single-tenant-resolved.json"))
    assert sql("SELECT status, ends_at FROM alerts") == [
        ("resolved", datetime(2026, 11, 22, 14, 25, 41, 33000, tzinfo=UTC))
    ]


async def test_nanosecond_timestamps_with_an_offset_are_the_same_instant(client, sql):
    # 14:24:16.033Z written the way Go can write it: nine digits, in +02:00.
    body = load_fixture("single-tenant-firing.json")
    body["alerts"][0]["startsAt"] = "2026-11-22T16:24:16.033000000+02:00"
    out = await post_webhook(client, body)
    assert out["new"] == 1
    (starts_at,) = sql("SELECT starts_at FROM alerts")[0]
    assert starts_at == datetime(2026, 11, 22, 14, 24, 16, 33000, tzinfo=UTC)
    # ... so the fixture (same instant in Z) is a copy of it.
    out = await post_webhook(client, load_fixture("single-tenant-firing.json"))
    assert out["duplicates"] == 1
    assert sql("SELECT count(*) FROM alerts") == [(1,)]

    # Nanoseconds beyond the microsecond are not lost in a way that splits identity:
    # the same instant written twice with nine digits is one instance.
    body = load_fixture("single-tenant-firing.json")
    body["alerts"][0]["startsAt"] = "2026-11-22T16:30:00.123456789+02:00"
    await post_webhook(client, body)
    body["alerts"][0]["startsAt"] = "2026-11-22T14:30:00.123456789Z"
    out = await post_webhook(client, body)
    assert out["duplicates"] == 1
    assert sql("SELECT count(*) FROM alerts") == [(2,)]


# --- at-least-once delivery ------------------------------------------------------------------


async def test_the_same_payload_twice_is_one_instance(client, sql):
    fixture = load_fixture("single-tenant-firing.json")
    first = await post_webhook(client, fixture)
    second = await post_webhook(client, fixture)
    assert (first["new"], first["duplicates"], first["breaker_transitions"]) == (1, 0, 1)
    assert (second["new"], second["duplicates"], second["breaker_transitions"]) == (0, 1, 0)
    assert sql("SELECT count(*) FROM alerts") == [(1,)]
    assert sql("SELECT count(*) FROM deliveries") == [(2,)]
    dup = audit_rows(sql, "alert.duplicate")
    assert len(dup) == 1
    assert dup[0][1]["fingerprint"] == FIXTURE_FINGERPRINT
    assert len(audit_rows(sql, "alert.fired")) == 1
    assert len(audit_rows(sql, "breaker.transition")) == 1
    assert len(audit_rows(sql, "delivery.accepted")) == 2
    assert await metric_value(client, 'receiver_webhook_alerts_total{result="duplicate"}') == 1.0


async def test_concurrent_copies_from_ha_peers_make_one_instance_and_one_trip(client, sql):
    fixture = load_fixture("single-tenant-firing.json")

    async def send() -> tuple[int, dict[str, Any]]:
        resp = await client.post("/v1/alertmanager", json=fixture, headers=WEBHOOK_HEADERS)
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(send() for _ in range(10)))
    assert [status for status, _ in answers] == [200] * 10, answers
    assert sum(body["new"] for _, body in answers) == 1
    assert sum(body["duplicates"] for _, body in answers) == 9
    assert sum(body["breaker_transitions"] for _, body in answers) == 1
    assert sql("SELECT count(*) FROM alerts") == [(1,)]
    assert sql("SELECT count(*) FROM deliveries") == [(10,)]
    transitions = audit_rows(sql, "breaker.transition", "tenant-a")
    assert len(transitions) == 1
    assert (transitions[0][1]["from"], transitions[0][1]["to"]) == ("closed", "open")
    assert sql("SELECT state, trips FROM breakers WHERE tenant_id = 'tenant-a'") == [("open", 1)]


async def test_concurrent_copies_of_a_resolved_make_one_change(client, sql):
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    fixture = load_fixture("single-tenant-resolved.json")

    async def send() -> dict[str, Any]:
        resp = await client.post("/v1/alertmanager", json=fixture, headers=WEBHOOK_HEADERS)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    answers = await asyncio.gather(*(send() for _ in range(10)))
    assert sum(a["changed"] for a in answers) == 1
    assert sum(a["duplicates"] for a in answers) == 9
    assert len(audit_rows(sql, "alert.resolved")) == 1


async def test_resolved_never_regresses_to_firing(client, sql):
    await post_webhook(client, load_fixture("single-tenant-resolved.json"))
    late = await post_webhook(client, load_fixture("single-tenant-firing.json"))
    assert late["duplicates"] == 1
    assert late["breaker_transitions"] == 0
    assert sql("SELECT status, ends_at IS NOT NULL FROM alerts") == [("resolved", True)]
    assert (await get_breaker(client, "tenant-a"))["state"] == "closed"
    assert audit_rows(sql, "breaker.transition") == []

    # Also after a firing was seen first: firing, resolved, then the firing retried.
    await post_webhook(client, firing("tenant-b"))
    await post_webhook(client, resolved("tenant-b"))
    again = await post_webhook(client, firing("tenant-b"))
    assert again["duplicates"] == 1
    assert sql("SELECT status FROM alerts WHERE tenant_id = 'tenant-b'") == [("resolved",)]
    assert len(audit_rows(sql, "breaker.transition", "tenant-b")) == 1  # the first trip only


async def test_resolved_without_a_prior_firing_is_recorded(client, sql):
    fixture = load_fixture("single-tenant-resolved.json")
    out = await post_webhook(client, fixture)
    assert out["new"] == 1
    assert out["breaker_transitions"] == 0
    assert sql("SELECT fingerprint, status, ends_at FROM alerts") == [
        (FIXTURE_FINGERPRINT, "resolved", datetime(2026, 11, 22, 14, 25, 41, 33000, tzinfo=UTC))
    ]
    ((actor, details),) = audit_rows(sql, "alert.resolved")
    assert actor == "alertmanager"
    assert details["seen_firing"] is False
    assert (await get_breaker(client, "tenant-a"))["state"] == "closed"


async def test_a_stale_firing_does_not_re_trip(client, sql):
    # A newer instance of the same labels fired and resolved; the breaker is closed again.
    await post_webhook(client, resolved("tenant-a", starts_at="2026-11-22T15:00:00Z"))
    assert (await get_breaker(client, "tenant-a"))["state"] == "closed"
    # A late retry of an older firing of those labels arrives.
    out = await post_webhook(client, firing("tenant-a", starts_at="2026-11-22T14:00:00Z"))
    assert out["new"] == 0
    assert out["duplicates"] == 1
    assert out["breaker_transitions"] == 0
    assert (await get_breaker(client, "tenant-a"))["state"] == "closed"
    assert audit_rows(sql, "breaker.transition") == []
    assert sql("SELECT starts_at, status FROM alerts") == [
        (datetime(2026, 11, 22, 15, 0, tzinfo=UTC), "resolved")
    ]
    ((_, details),) = audit_rows(sql, "alert.duplicate")
    assert "stale" in details["reason"]

    # A genuinely new firing (a later startsAt) does trip.
    out = await post_webhook(client, firing("tenant-a", starts_at="2026-11-22T16:00:00Z"))
    assert out["new"] == 1
    assert out["breaker_transitions"] == 1
    assert (await get_breaker(client, "tenant-a"))["state"] == "open"


async def test_alerts_without_a_breaker_role_are_recorded_only(client, sql):
    tenant_only = isolating_alert("tenant-t", isolate=False)
    nobody = copy.deepcopy(tenant_only)
    del nobody["labels"]["tenant_id"]
    nobody["fingerprint"] = fingerprint(nobody["labels"])
    out = await post_webhook(client, webhook_payload(tenant_only, nobody))
    assert out["new"] == 2
    assert out["breaker_transitions"] == 0
    assert sql("SELECT count(*) FROM alerts") == [(2,)]
    assert sql("SELECT count(*) FROM breakers WHERE state <> 'closed'") == [(0,)]


# --- the audit log is append-only ---------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ],
)
async def test_audit_log_rejects_rewrites(client, sql, clean_db, statement):
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    before = sql("SELECT id, actor, action, details FROM audit_log ORDER BY id")
    assert before
    with (
        psycopg.connect(libpq(clean_db), autocommit=True) as conn,
        pytest.raises(psycopg.Error, match="append-only"),
    ):
        conn.execute(statement)
    assert sql("SELECT id, actor, action, details FROM audit_log ORDER BY id") == before


# --- operational endpoints -------------------------------------------------------------------


async def test_healthz_readyz_and_metrics(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"

    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "schema": "ok", "breaker_listener": "ok"}

    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    await client.post("/v1/alertmanager", json={}, headers=WEBHOOK_HEADERS)
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    for line in (
        'receiver_webhook_deliveries_total{status="firing"} 1.0',
        'receiver_webhook_alerts_total{result="new"} 1.0',
        'receiver_webhook_rejections_total{reason="invalid_payload"} 1.0',
        "receiver_webhook_processing_seconds_count ",
        "receiver_webhook_processing_seconds_bucket{",
    ):
        assert line in text, line


async def test_unauthenticated_mode_serves_without_tokens(app_client, sql):
    client = await app_client(webhook_token=None, api_token=None, allow_unauthenticated=True)
    out = await post_webhook_no_auth(client, load_fixture("single-tenant-firing.json"))
    assert out["new"] == 1
    resp = await client.get("/v1/tenants/tenant-a/breaker")
    assert resp.status == 200
    assert (await resp.json())["state"] == "open"
    resp = await client.put("/v1/tenants/tenant-a", json={"tier": "gold"})
    assert resp.status == 200, await resp.text()


def test_an_app_without_tokens_is_refused_unless_allowed(clean_db):
    from receiver.app import create_app
    from receiver.settings import SettingsError
    from tests.conftest import make_settings

    for tokens in ({"webhook_token": None}, {"api_token": None}, {"webhook_token": ""}):
        with pytest.raises(SettingsError, match="RECEIVER_ALLOW_UNAUTHENTICATED=true"):
            create_app(make_settings(clean_db, **tokens))


async def test_an_empty_bearer_never_matches(app_client, sql):
    # With only the API token configured (and unauthenticated mode on for the webhook),
    # an empty bearer or basic password is still not the API token.
    client = await app_client(webhook_token="", allow_unauthenticated=True)
    for header in ("Bearer ", "Bearer", "Basic " + base64.b64encode(b"user:").decode()):
        resp = await client.get("/v1/breakers", headers={"Authorization": header})
        assert resp.status == 401, header


async def post_webhook_no_auth(client: Any, body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/alertmanager", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_fixture_start_time_is_the_documented_one():
    # Guard for the helpers: they derive payloads from this fixture instance.
    alert = load_fixture("single-tenant-firing.json")["alerts"][0]
    assert (alert["startsAt"], alert["fingerprint"]) == (FIXTURE_STARTS_AT, FIXTURE_FINGERPRINT)
