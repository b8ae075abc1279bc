"""Input that can never succeed, and input that can (DESIGN.md "Least privilege and bounded
time"): only transient failures are 503; a value the database cannot store is 4xx, never a
503 Alertmanager would retry forever; any tenant id the webhook accepts, the API serves,
percent-encoded in the path, and the gateway client reads it; an unusable tenant label
value is recorded, audited and has no breaker effect while the delivery's other alerts take
effect."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg.errors
import pytest
from sqlalchemy import text

from receiver.client import BreakerClient
from receiver.db import transaction
from receiver.db.engine import create_engine, session_factory
from receiver.errors import DatabaseUnavailable, Unprocessable
from tests.conftest import API_HEADERS, API_TOKEN, make_settings
from tests.integration.helpers import (
    audit_rows,
    firing,
    isolating_alert,
    post_webhook,
    webhook_payload,
)

ODD_TENANTS = [
    "Acme Corp",
    "team/a",
    "100% uptime",
    "Zürich-東京",
    "what?#frag",
    "plus+sign",
    "a" * 512,
    "trailing space ",
]


@pytest.mark.parametrize("tenant", ODD_TENANTS, ids=lambda t: repr(t[:20]))
async def test_any_tenant_the_webhook_trips_the_api_serves(client, tenant):
    out = await post_webhook(client, firing(tenant))
    assert out["breaker_transitions"] == 1
    path = f"/v1/tenants/{quote(tenant, safe='')}"
    resp = await client.get(f"{path}/breaker", headers=API_HEADERS)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["tenant_id"], body["state"], body["allow"]) == (tenant, "open", False)
    for suffix in ("", "/health"):
        resp = await client.get(f"{path}{suffix}", headers=API_HEADERS)
        assert resp.status in (200, 404), await resp.text()  # 404: not registered
    resp = await client.put(path, json={"tier": "gold"}, headers=API_HEADERS)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["tenant_id"] == tenant


async def test_the_gateway_client_reads_odd_tenant_ids(app_client):
    client = await app_client(max_isolated_percent=100)
    for tenant in ODD_TENANTS:
        await post_webhook(client, firing(tenant))
    gateway = BreakerClient(str(client.make_url("/")), token=API_TOKEN, cache_seconds=0)
    await gateway.start()
    try:
        for tenant in ODD_TENANTS:
            d = await gateway.decision(tenant)
            # "unknown" would be the client failing open on a 400.
            assert (d.state, d.allow) == ("open", False), tenant
        assert (await gateway.decision("Acme Corp ")).state == "closed"
    finally:
        await gateway.close()


@pytest.mark.parametrize(
    "bad",
    [secrets.token_hex(1500), "é" * 257, "line\nbreak", "tab\there", "del\x7f", "c1\x85"],
    ids=["3000-chars", "514-bytes", "newline", "tab", "DEL", "C1"],
)
async def test_an_unusable_tenant_label_has_no_effect_but_the_rest_of_the_delivery_does(
    client, sql, bad
):
    good = isolating_alert("tenant-good")
    unusable = isolating_alert(bad)
    out = await post_webhook(client, webhook_payload(unusable, good))  # 200, never 503
    assert (out["new"], out["breaker_transitions"]) == (2, 1)
    assert sql("SELECT tenant_id, state FROM breakers") == [("tenant-good", "open")]
    assert sql("SELECT count(*) FROM tenants WHERE tenant_id = %s", bad)[0][0] == 0
    # Recorded on the alert: its labels keep the value; it belongs to no tenant.
    ((tenant_id, isolating, labels),) = sql(
        "SELECT tenant_id, isolating, labels FROM alerts WHERE fingerprint = %s",
        unusable["fingerprint"],
    )
    assert (tenant_id, isolating, labels["tenant_id"]) == (None, False, bad)
    ((_, details),) = audit_rows(sql, "alert.unusable_tenant")
    assert details["fingerprint"] == unusable["fingerprint"]
    assert details["label"] == "tenant_id" and details["problem"]
    assert len(details["value"]) <= 100  # a prefix, not the whole value


async def test_hourly_cost_at_its_bound_is_422_not_500(client):
    for cost, status in ((1e12, 422), (999_999_999_999.99, 200), (1e13, 422)):
        resp = await client.put(
            "/v1/tenants/t-cost", json={"tier": "gold", "hourly_cost": cost}, headers=API_HEADERS
        )
        assert resp.status == status, (cost, await resp.text())


# --- how database errors are answered --------------------------------------------------------


@pytest.fixture
async def sessions(clean_db: str) -> Any:
    engine = create_engine(make_settings(clean_db))
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def test_a_value_the_database_cannot_index_is_unprocessable_not_unavailable(sessions):
    async def work(session: Any) -> None:
        await session.execute(
            # Random text: a repetitive one would compress below the index row limit.
            text("INSERT INTO tenants (tenant_id) VALUES (:t)"),
            {"t": secrets.token_hex(1500)},
        )

    with pytest.raises(Unprocessable, match="cannot store") as caught:
        await transaction.in_transaction(sessions, work, what="probe")
    assert isinstance(caught.value.__cause__.orig, psycopg.errors.ProgramLimitExceeded)


async def test_a_conflict_that_outlasts_the_retries_is_unavailable(sessions):
    attempts = 0

    async def work(session: Any) -> None:
        nonlocal attempts
        attempts += 1
        for _ in range(2):
            await session.execute(text("INSERT INTO tenants (tenant_id) VALUES ('dup')"))

    with pytest.raises(DatabaseUnavailable, match="conflicting"):
        await transaction.in_transaction(sessions, work, what="probe")
    assert attempts == transaction.ATTEMPTS


# --- a startsAt far ahead of the database clock ---------------------------------------------


async def test_a_starts_at_in_year_9999_has_no_effect_and_stales_nothing(client, sql):
    # The fixture's real instance, and a copy of the same labels from year 9999.
    future = isolating_alert("tenant-f", starts_at="9999-01-01T00:00:00Z")
    out = await post_webhook(client, webhook_payload(future))
    assert (out["new"], out["breaker_transitions"]) == (0, 0)  # 200, recorded as ignored
    assert sql("SELECT count(*) FROM alerts")[0][0] == 0
    assert sql("SELECT count(*) FROM breakers")[0][0] == 0
    ((_, details),) = audit_rows(sql, "alert.ignored", "tenant-f")
    assert "ahead of the database clock" in details["reason"]
    assert audit_rows(sql, "delivery.accepted")

    # A real firing of the same labels afterwards is not stale: it trips.
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    out = await post_webhook(client, webhook_payload(isolating_alert("tenant-f", starts_at=now)))
    assert (out["new"], out["duplicates"], out["breaker_transitions"]) == (1, 0, 1)


async def test_a_start_less_than_an_hour_ahead_counts(client, sql):
    soon = (datetime.now(UTC) + timedelta(minutes=50)).isoformat().replace("+00:00", "Z")
    out = await post_webhook(client, webhook_payload(isolating_alert("tenant-s", starts_at=soon)))
    assert (out["new"], out["breaker_transitions"]) == (1, 1)
