"""Per-tenant circuit breakers through HTTP against a real PostgreSQL: trips, the
time-driven half-open, probes, probation, operator overrides, the mass-isolation guard,
the reads gateways make, metrics, and refused input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_HEADERS, WEBHOOK_HEADERS, load_fixture
from tests.integration.helpers import (
    audit_rows,
    firing,
    get_breaker,
    isolating_alert,
    poll,
    post_webhook,
    resolved,
    seconds_between,
    table_counts,
    webhook_payload,
)

OPEN = 0.5  # seconds: the first open period in the time-driven tests


async def post_json(client: Any, path: str, body: Any, *, expect: int = 200) -> dict[str, Any]:
    resp = await client.post(path, json=body, headers=API_HEADERS)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def override(client: Any, tenant: str, action: str, *, expect: int = 200, **kw: Any):
    body = {"action": action, "reason": kw.pop("reason", "maintenance"), "actor": "alice", **kw}
    return await post_json(client, f"/v1/tenants/{tenant}/breaker", body, expect=expect)


async def outcomes(client: Any, tenant: str, success: int, failure: int) -> dict[str, Any]:
    body = {"success": success, "failure": failure}
    return await post_json(client, f"/v1/tenants/{tenant}/outcomes", body)


async def stored_state(sql, tenant: str) -> str | None:
    rows = sql("SELECT state FROM breakers WHERE tenant_id = %s", tenant)
    return rows[0][0] if rows else None


async def wait_stored(sql, tenant: str, state: str) -> None:
    async def probe() -> str | None:
        return await stored_state(sql, tenant)

    await poll(probe, lambda s: s == state, what=f"{tenant} stored as {state}")


async def wait_state(client: Any, tenant: str, state: str) -> dict[str, Any]:
    return await poll(
        lambda: get_breaker(client, tenant),
        lambda b: b["state"] == state,
        what=f"{tenant} reading {state}",
    )


def transitions(sql, tenant: str) -> list[tuple[str, str, str]]:
    return [
        (actor, d["from"], d["to"]) for actor, d in audit_rows(sql, "breaker.transition", tenant)
    ]


# --- trips ----------------------------------------------------------------------------------


async def test_firing_isolating_alert_trips_the_breaker(client, sql):
    out = await post_webhook(client, load_fixture("single-tenant-firing.json"))
    assert out["breaker_transitions"] == 1
    b = await get_breaker(client, "tenant-a")
    assert (b["state"], b["allow"], b["admit_ratio"]) == ("open", False, 0.0)
    assert (b["trips"], b["streak"], b["alert_firing"]) == (1, 1, True)
    assert seconds_between(b["opened_at"], b["next_change_at"]) == 60.0  # the default period
    assert sql("SELECT state, trips FROM breakers WHERE tenant_id = 'tenant-a'") == [("open", 1)]
    assert transitions(sql, "tenant-a") == [("alertmanager", "closed", "open")]
    ((_, details),) = audit_rows(sql, "breaker.transition", "tenant-a")
    assert details["reason"]

    resp = await client.get("/v1/breakers", headers=API_HEADERS)
    listed = (await resp.json())["breakers"]
    assert [(x["tenant_id"], x["state"]) for x in listed] == [("tenant-a", "open")]


async def test_duplicates_and_more_firings_while_open_do_not_trip_again(client, sql):
    for _ in range(3):
        await post_webhook(client, load_fixture("single-tenant-firing.json"))
    # A different instance of the same tenant while the breaker is open: still one trip.
    await post_webhook(client, firing("tenant-a", starts_at="2026-11-22T14:40:00Z"))
    b = await get_breaker(client, "tenant-a")
    assert (b["state"], b["trips"], b["streak"]) == ("open", 1, 1)
    assert len(transitions(sql, "tenant-a")) == 1


async def test_grouped_fixture_trips_each_tenant_it_carries(client, sql):
    # Ten known tenants: the guard allows two isolated at once.
    await register(client, [f"tenant-{c}" for c in "abcdefghij"])
    out = await post_webhook(client, load_fixture("grouped-truncated-firing.json"))
    assert out["breaker_transitions"] == 2
    for tenant in ("tenant-a", "tenant-b"):
        assert (await get_breaker(client, tenant))["state"] == "open"
    # tenant-c was truncated away: it never arrived, so nothing is known of it.
    assert (await get_breaker(client, "tenant-c"))["state"] == "closed"
    assert audit_rows(sql, "breaker.suppressed") == []


async def test_grouped_fixture_with_only_its_own_tenants_known_isolates_one(client, sql):
    # Only the two tenants of the payload are known: isolating both would be 100 %.
    out = await post_webhook(client, load_fixture("grouped-truncated-firing.json"))
    assert out["breaker_transitions"] == 1
    states = {t: (await get_breaker(client, t))["state"] for t in ("tenant-a", "tenant-b")}
    assert states == {"tenant-a": "open", "tenant-b": "closed"}
    ((_, details),) = audit_rows(sql, "breaker.suppressed", "tenant-b")
    assert (details["isolated"], details["limit"]) == (1, 1)


async def test_unknown_tenant_reads_closed(client, sql):
    b = await get_breaker(client, "never-seen-tenant")
    assert b["tenant_id"] == "never-seen-tenant"
    assert (b["state"], b["allow"], b["admit_ratio"], b["trips"]) == ("closed", True, 1.0, 0)
    listed = await (await client.get("/v1/breakers", headers=API_HEADERS)).json()
    assert listed["breakers"] == [] and isinstance(listed["view_age_ms"], int)
    assert table_counts(sql)["breakers"] == 0


async def test_tenant_alert_without_isolate_does_not_trip(client, sql):
    await post_webhook(client, firing("tenant-q", isolate=False))
    assert (await get_breaker(client, "tenant-q"))["state"] == "closed"
    assert transitions(sql, "tenant-q") == []


# --- time, probes and probation ----------------------------------------------------------------


async def test_open_turns_half_open_then_failing_probes_reopen_for_twice_as_long(app_client, sql):
    client = await app_client(breaker_open_seconds=OPEN, half_open_probes=4)
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    b = await get_breaker(client, "tenant-a")
    assert seconds_between(b["opened_at"], b["next_change_at"]) == OPEN

    # Probe results while open say nothing about recovery and are not counted.
    b = await outcomes(client, "tenant-a", 0, 5)
    assert (b["state"], b["probe_failures"], b["trips"]) == ("open", 0, 1)

    b = await wait_state(client, "tenant-a", "half_open")
    assert (b["allow"], b["admit_ratio"]) == (True, 0.1)
    assert seconds_between(b["opened_at"], b["half_open_at"]) == OPEN
    # The sweeper persists the change and audits it as the system's.
    await wait_stored(sql, "tenant-a", "half_open")
    assert transitions(sql, "tenant-a") == [
        ("alertmanager", "closed", "open"),
        ("system", "open", "half_open"),
    ]

    # Too few probes decide nothing; enough with failures at the ratio re-open.
    b = await outcomes(client, "tenant-a", 1, 1)
    assert (b["state"], b["probe_successes"], b["probe_failures"]) == ("half_open", 1, 1)
    b = await outcomes(client, "tenant-a", 0, 2)
    assert (b["state"], b["allow"], b["trips"], b["streak"]) == ("open", False, 2, 2)
    assert seconds_between(b["opened_at"], b["next_change_at"]) == 2 * OPEN
    assert (await stored_state(sql, "tenant-a")) == "open"
    *_, (actor, details) = audit_rows(sql, "breaker.transition", "tenant-a")
    assert (actor, details["from"], details["to"]) == ("gateway", "half_open", "open")
    assert "0.75" in details["reason"]

    # The longer period runs out too; healthy probes close it and end the streak.
    b = await wait_state(client, "tenant-a", "half_open")
    assert seconds_between(b["opened_at"], b["half_open_at"]) == 2 * OPEN
    await wait_stored(sql, "tenant-a", "half_open")
    b = await outcomes(client, "tenant-a", 4, 0)
    assert (b["state"], b["allow"], b["admit_ratio"], b["streak"]) == ("closed", True, 1.0, 0)
    assert (await stored_state(sql, "tenant-a")) == "closed"
    assert transitions(sql, "tenant-a") == [
        ("alertmanager", "closed", "open"),
        ("system", "open", "half_open"),
        ("gateway", "half_open", "open"),
        ("system", "open", "half_open"),
        ("gateway", "half_open", "closed"),
    ]
    resp = await client.get("/v1/breakers", headers=API_HEADERS)
    assert (await resp.json())["breakers"] == []


async def test_time_driven_changes_are_the_systems_whoever_persists_them(app_client, sql):
    # No sweeper in time: the gateway's outcomes and an operator persist what time did.
    client = await app_client(
        breaker_open_seconds=OPEN,
        half_open_probes=4,
        sweep_interval_seconds=3600,
        max_isolated_percent=100,
    )
    await post_webhook(client, firing("tenant-s"))
    await wait_state(client, "tenant-s", "half_open")  # computed, not yet stored
    assert (await stored_state(sql, "tenant-s")) == "open"
    b = await outcomes(client, "tenant-s", 1, 0)
    assert (b["state"], b["probe_successes"]) == ("half_open", 1)
    assert transitions(sql, "tenant-s") == [
        ("alertmanager", "closed", "open"),
        ("system", "open", "half_open"),
    ]

    await post_webhook(client, firing("tenant-o"))
    await wait_state(client, "tenant-o", "half_open")
    await override(client, "tenant-o", "force_open")
    assert transitions(sql, "tenant-o") == [
        ("alertmanager", "closed", "open"),
        ("system", "open", "half_open"),
        ("alice", "half_open", "forced_open"),
    ]
    ((_, details),) = audit_rows(sql, "breaker.override", "tenant-o")
    assert (details["from"], details["to"]) == ("half_open", "forced_open")


async def test_new_firing_while_half_open_reopens_with_a_longer_period(app_client, sql):
    client = await app_client(breaker_open_seconds=OPEN)
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    await wait_state(client, "tenant-a", "half_open")
    out = await post_webhook(client, firing("tenant-a", starts_at="2026-11-22T15:00:00Z"))
    assert out["breaker_transitions"] >= 1
    b = await get_breaker(client, "tenant-a")
    assert (b["state"], b["streak"], b["trips"]) == ("open", 2, 2)
    assert seconds_between(b["opened_at"], b["next_change_at"]) == 2 * OPEN


async def test_resolved_plus_probation_closes_without_probes(app_client, sql):
    client = await app_client(breaker_open_seconds=OPEN, half_open_probation_seconds=0.5)
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    out = await post_webhook(client, load_fixture("single-tenant-resolved.json"))
    assert out["changed"] == 1
    # Resolved while open: still open until the period runs out (no skipping half-open).
    b = await get_breaker(client, "tenant-a")
    assert (b["state"], b["alert_firing"]) == ("open", False)

    await wait_state(client, "tenant-a", "closed")
    await wait_stored(sql, "tenant-a", "closed")
    assert transitions(sql, "tenant-a") == [
        ("alertmanager", "closed", "open"),
        ("system", "open", "half_open"),
        ("system", "half_open", "closed"),
    ]
    *_, (_, details) = audit_rows(sql, "breaker.transition", "tenant-a")
    assert "probation" in details["reason"]
    # Probation counts from entering half-open, since the alert resolved earlier.
    b = await get_breaker(client, "tenant-a")
    assert (b["streak"], b["trips"]) == (0, 1)


async def test_firing_again_during_probation_keeps_the_breaker_from_closing(app_client, sql):
    client = await app_client(breaker_open_seconds=OPEN, half_open_probation_seconds=30)
    await post_webhook(client, load_fixture("single-tenant-firing.json"))
    await post_webhook(client, load_fixture("single-tenant-resolved.json"))
    await wait_state(client, "tenant-a", "half_open")
    await post_webhook(client, firing("tenant-a", starts_at="2026-11-22T15:00:00Z"))
    b = await get_breaker(client, "tenant-a")
    assert (b["state"], b["streak"], b["alert_firing"]) == ("open", 2, True)


# --- operator overrides ---------------------------------------------------------------------


async def test_force_open_holds_against_alerts_and_release_closes(client, sql):
    b = await override(client, "tenant-f", "force_open", reason="suspicious traffic")
    assert (b["state"], b["allow"], b["admit_ratio"]) == ("forced_open", False, 0.0)
    # A resolved (and a firing) alert cannot move an operator's decision.
    await post_webhook(client, resolved("tenant-f"))
    assert (await get_breaker(client, "tenant-f"))["state"] == "forced_open"

    resp = await client.get("/v1/breakers", headers=API_HEADERS)
    listed = [(x["tenant_id"], x["state"]) for x in (await resp.json())["breakers"]]
    assert listed == [("tenant-f", "forced_open")]

    b = await override(client, "tenant-f", "release", reason="traffic checked")
    assert (b["state"], b["allow"]) == ("closed", True)
    assert sql("SELECT state FROM breakers WHERE tenant_id = 'tenant-f'") == [("closed",)]

    overrides = audit_rows(sql, "breaker.override", "tenant-f")
    assert [(a, d["action"], d["reason"]) for a, d in overrides] == [
        ("alice", "force_open", "suspicious traffic"),
        ("alice", "release", "traffic checked"),
    ]
    assert transitions(sql, "tenant-f") == [
        ("alice", "closed", "forced_open"),
        ("alice", "forced_open", "closed"),
    ]


async def test_force_close_holds_against_firing_and_release_reopens(client, sql):
    await post_webhook(client, firing("tenant-g"))
    b = await override(client, "tenant-g", "force_close", reason="known false positive")
    assert (b["state"], b["allow"], b["admit_ratio"]) == ("forced_closed", True, 1.0)
    # A new firing instance while forced: recorded, but the breaker stays as forced.
    out = await post_webhook(client, firing("tenant-g", starts_at="2026-11-22T15:00:00Z"))
    assert out["new"] == 1
    assert out["breaker_transitions"] == 0
    assert (await get_breaker(client, "tenant-g"))["state"] == "forced_closed"

    # Released while an isolating alert fires: open, as a new streak.
    b = await override(client, "tenant-g", "release", reason="done")
    assert (b["state"], b["allow"], b["streak"]) == ("open", False, 1)
    assert transitions(sql, "tenant-g") == [
        ("alertmanager", "closed", "open"),
        ("alice", "open", "forced_closed"),
        ("alice", "forced_closed", "open"),
    ]
    assert [a for a, _ in audit_rows(sql, "breaker.override", "tenant-g")] == ["alice", "alice"]


async def test_override_from_a_forced_state_to_the_other(client, sql):
    await override(client, "tenant-h", "force_open")
    b = await override(client, "tenant-h", "force_close")
    assert b["state"] == "forced_closed"
    # Forcing what is already forced changes nothing but is still audited as asked.
    b = await override(client, "tenant-h", "force_close")
    assert b["state"] == "forced_closed"
    assert len(audit_rows(sql, "breaker.override", "tenant-h")) == 3
    assert len(transitions(sql, "tenant-h")) == 2


async def test_release_of_a_breaker_nobody_forced_is_a_conflict(client, sql):
    before = table_counts(sql)
    resp = await client.post(
        "/v1/tenants/tenant-i/breaker",
        json={"action": "release", "reason": "oops", "actor": "bob"},
        headers=API_HEADERS,
    )
    assert resp.status == 409
    body = await resp.json()
    assert body["error"] == "conflict"
    assert "not forced" in body["detail"]
    assert audit_rows(sql, "breaker.override") == []
    assert {k: v for k, v in table_counts(sql).items() if k != "breakers"} == {
        k: v for k, v in before.items() if k != "breakers"
    }


# --- the mass-isolation guard ----------------------------------------------------------------


async def register(client: Any, tenants: list[str]) -> None:
    tiers = ["platinum", "gold", "silver", "bronze"]
    for i, tenant in enumerate(tenants):
        resp = await client.put(
            f"/v1/tenants/{tenant}", json={"tier": tiers[i % 4]}, headers=API_HEADERS
        )
        assert resp.status == 200, await resp.text()


def assert_guard_held(sql, failing: list[str]) -> None:
    opened = [t for (t,) in sql("SELECT tenant_id FROM breakers WHERE state = 'open' ORDER BY 1")]
    assert len(opened) == 2, opened
    suppressed = audit_rows(sql, "breaker.suppressed")
    assert len(suppressed) == 3
    assert sorted(opened + [d_tenant for d_tenant in _suppressed_tenants(sql)]) == sorted(failing)
    for actor, details in suppressed:
        assert actor == "alertmanager"
        assert (details["isolated"], details["limit"]) == (2, 2)


def _suppressed_tenants(sql) -> list[str]:
    return [
        t for (t,) in sql("SELECT tenant_id FROM audit_log WHERE action = 'breaker.suppressed'")
    ]


async def test_mass_isolation_guard_one_delivery_at_a_time(client, sql):
    tenants = [f"guard-{i:02d}" for i in range(10)]
    await register(client, tenants)
    failing = tenants[:5]
    for tenant in failing:
        await post_webhook(client, firing(tenant))
    assert_guard_held(sql, failing)
    assert [t for t in failing if (await get_breaker(client, t))["state"] == "open"] == failing[:2]
    for tenant in failing[2:]:
        b = await get_breaker(client, tenant)
        assert (b["state"], b["allow"], b["alert_firing"]) == ("closed", True, True)
    resp = await client.get("/v1/breakers", headers=API_HEADERS)
    assert [x["tenant_id"] for x in (await resp.json())["breakers"]] == failing[:2]


async def test_mass_isolation_guard_in_one_grouped_delivery(client, sql):
    tenants = [f"guard-{i:02d}" for i in range(10)]
    await register(client, tenants)
    failing = tenants[5:]
    out = await post_webhook(client, webhook_payload(*[isolating_alert(t) for t in failing]))
    assert out["breaker_transitions"] == 2
    assert_guard_held(sql, failing)


async def test_mass_isolation_guard_against_concurrent_deliveries(client, sql):
    tenants = [f"guard-{i:02d}" for i in range(10)]
    await register(client, tenants)
    failing = tenants[:5]
    answers = await asyncio.gather(*(post_webhook(client, firing(t)) for t in failing))
    assert sum(a["breaker_transitions"] for a in answers) == 2
    assert_guard_held(sql, failing)


# --- metrics -------------------------------------------------------------------------------


async def test_metrics_show_breaker_state_and_trips_per_tenant(app_client, sql):
    client = await app_client(max_isolated_percent=100)
    await post_webhook(client, load_fixture("grouped-truncated-firing.json"))
    await override(client, "tenant-z", "force_open")
    samples = await scrape(client)
    state = "receiver_breaker_state"
    assert samples[(state, (("state", "open"), ("tenant_id", "tenant-a")))] == 1.0
    assert samples[(state, (("state", "closed"), ("tenant_id", "tenant-a")))] == 0.0
    assert samples[(state, (("state", "open"), ("tenant_id", "tenant-b")))] == 1.0
    assert samples[(state, (("state", "forced_open"), ("tenant_id", "tenant-z")))] == 1.0
    # Exactly one state is 1 per tenant.
    for tenant in ("tenant-a", "tenant-b", "tenant-z"):
        ones = [k for k, v in samples.items() if k[0] == state and ("tenant_id", tenant) in k[1]]
        assert sum(samples[k] for k in ones) == 1.0
    assert samples[("receiver_breaker_trips", (("tenant_id", "tenant-a"),))] == 1.0
    assert samples[("receiver_breaker_trips", (("tenant_id", "tenant-b"),))] == 1.0
    assert samples[("receiver_breaker_trips", (("tenant_id", "tenant-z"),))] == 0.0
    assert samples[("receiver_breakers_isolated", ())] == 3.0


async def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(await resp.text())
        for s in family.samples
    }


# --- refused input -------------------------------------------------------------------------

# Over 512 bytes of UTF-8 (a tenant id can have spaces, slashes, any printable text).
LONG_ID = "t" * 513


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail_part"),
    [
        (
            "post",
            "/v1/tenants/t1/breaker",
            {"action": "explode", "reason": "r", "actor": "a"},
            422,
            "action",
        ),
        ("post", "/v1/tenants/t1/breaker", {"action": "force_open", "actor": "a"}, 422, "reason"),
        (
            "post",
            "/v1/tenants/t1/breaker",
            {"action": "force_open", "reason": "  ", "actor": "a"},
            422,
            "reason",
        ),
        ("post", "/v1/tenants/t1/breaker", {"action": "force_open", "reason": "r"}, 422, "actor"),
        (
            "post",
            "/v1/tenants/t1/breaker",
            {"action": "force_open", "reason": "r", "actor": "a", "until": 5},
            422,
            "until",
        ),
        ("post", "/v1/tenants/t1/breaker", ["force_open"], 422, "body"),
        ("post", "/v1/tenants/t1/outcomes", {"success": -1, "failure": 3}, 422, "success"),
        ("post", "/v1/tenants/t1/outcomes", {"success": 1, "failure": -3}, 422, "failure"),
        ("post", "/v1/tenants/t1/outcomes", {"success": "3", "failure": 0}, 422, "success"),
        ("post", "/v1/tenants/t1/outcomes", {"success": 1.5, "failure": 0}, 422, "success"),
        ("post", "/v1/tenants/t1/outcomes", {"success": 2.0, "failure": 0}, 422, "success"),
        ("post", "/v1/tenants/t1/outcomes", {"success": True, "failure": 0}, 422, "success"),
        ("post", "/v1/tenants/t1/outcomes", {"success": 1, "failure": None}, 422, "failure"),
        ("post", "/v1/tenants/t1/outcomes", {"success": 10**9, "failure": 0}, 422, "success"),
        ("post", "/v1/tenants/t1/outcomes", {"success": 0, "failure": 0}, 400, "at least one"),
        ("post", "/v1/tenants/t1/outcomes", {}, 400, "at least one"),
        ("post", "/v1/tenants/t1/outcomes", {"successes": 3}, 422, "successes"),
        ("put", "/v1/tenants/t1", {"tier": "diamond"}, 422, "tier"),
        ("put", "/v1/tenants/t1", {"tier": "Gold"}, 422, "tier"),
        ("put", "/v1/tenants/t1", {}, 422, "tier"),
        ("put", "/v1/tenants/t1", {"tier": "gold", "hourly_cost": -5}, 422, "hourly_cost"),
        ("put", "/v1/tenants/t1", {"tier": "gold", "hourly_cost": "lots"}, 422, "hourly_cost"),
        (
            "post",
            f"/v1/tenants/{LONG_ID}/breaker",
            {"action": "force_open", "reason": "r", "actor": "a"},
            400,
            "tenant id",
        ),
        (
            "post",
            "/v1/tenants/has%0Acontrol/breaker",
            {"action": "force_open", "reason": "r", "actor": "a"},
            400,
            "tenant id",
        ),
        (
            "post",
            "/v1/tenants//breaker",
            {"action": "force_open", "reason": "r", "actor": "a"},
            400,
            "tenant id",
        ),
        ("post", f"/v1/tenants/{LONG_ID}/outcomes", {"success": 1, "failure": 0}, 400, "tenant id"),
        (
            "post",
            "/v1/tenants/has%0Acontrol/outcomes",
            {"success": 1, "failure": 0},
            400,
            "tenant id",
        ),
        ("post", "/v1/tenants//outcomes", {"success": 1, "failure": 0}, 400, "tenant id"),
        ("put", f"/v1/tenants/{LONG_ID}", {"tier": "gold"}, 400, "tenant id"),
        ("put", "/v1/tenants/has%0Acontrol", {"tier": "gold"}, 400, "tenant id"),
        ("put", "/v1/tenants/", {"tier": "gold"}, 400, "tenant id"),
        ("get", f"/v1/tenants/{LONG_ID}/breaker", None, 400, "tenant id"),
        ("get", "/v1/tenants/has%0Acontrol/breaker", None, 400, "tenant id"),
        ("get", "/v1/tenants/not-utf-8-%FF/breaker", None, 400, "tenant id"),
        ("get", "/v1/tenants//breaker", None, 400, "tenant id"),
    ],
)
async def test_bad_input_is_refused_clearly_and_changes_nothing(
    client, sql, method, path, body, status, detail_part
):
    await post_webhook(client, firing("t1"))
    before = table_counts(sql)
    state_before = sql(
        "SELECT state, trips, probe_successes, probe_failures, version FROM breakers"
    )
    kwargs: dict[str, Any] = {"headers": API_HEADERS}
    if body is not None:
        kwargs["json"] = body
    resp = await getattr(client, method)(path, **kwargs)
    assert resp.status == status, await resp.text()
    out = await resp.json()
    assert set(out) >= {"error", "detail"}
    assert detail_part in out["detail"], out
    if status == 422:
        assert out["problems"]
    assert table_counts(sql) == before
    assert sql("SELECT state, trips, probe_successes, probe_failures, version FROM breakers") == (
        state_before
    )


async def test_bad_input_for_a_half_open_breaker_changes_no_probe_count(app_client, sql):
    client = await app_client(breaker_open_seconds=OPEN, half_open_probes=10)
    await post_webhook(client, firing("t1"))
    await wait_stored(sql, "t1", "half_open")
    before = sql("SELECT probe_successes, probe_failures, version FROM breakers")
    for bad in ({"success": 5, "failure": -1}, {"success": 0, "failure": 0}, {"failure": 1.5}):
        resp = await client.post("/v1/tenants/t1/outcomes", json=bad, headers=API_HEADERS)
        assert resp.status in (400, 422)
    assert sql("SELECT probe_successes, probe_failures, version FROM breakers") == before
    b = await outcomes(client, "t1", 2, 1)
    assert (b["probe_successes"], b["probe_failures"]) == (2, 1)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/tenants/t1/breaker", {"action": "force_open", "reason": "r", "actor": "a"}),
        ("post", "/v1/tenants/t1/outcomes", {"success": 1, "failure": 0}),
        ("put", "/v1/tenants/t1", {"tier": "gold"}),
        ("get", "/v1/tenants/t1/breaker", None),
        ("get", "/v1/breakers", None),
        ("get", "/v1/tenants/t1", None),
    ],
)
@pytest.mark.parametrize("headers", [WEBHOOK_HEADERS, {}], ids=["webhook-token", "no-token"])
async def test_api_endpoints_need_the_api_token(client, sql, method, path, body, headers):
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    resp = await getattr(client, method)(path, **kwargs)
    assert resp.status == 401, await resp.text()
    out = await resp.json()
    assert out["error"] == "unauthorized"
    assert "API token" in out["detail"]
    assert table_counts(sql) == {
        "alerts": 0,
        "deliveries": 0,
        "audit_log": 0,
        "breakers": 0,
        "tenants": 0,
    }


async def test_tenant_registration_is_read_back_and_audited(client, sql):
    resp = await client.put(
        "/v1/tenants/acme",
        json={"tier": "gold", "name": "Acme", "hourly_cost": 120.5},
        headers=API_HEADERS,
    )
    assert resp.status == 200, await resp.text()
    resp = await client.get("/v1/tenants/acme", headers=API_HEADERS)
    got = await resp.json()
    assert (got["tier"], got["name"], got["hourly_cost"]) == ("gold", "Acme", 120.5)
    ((actor, details),) = audit_rows(sql, "tenant.configured", "acme")
    assert actor == "api"
    assert (details["tier"], details["name"], details["hourly_cost"]) == ("gold", "Acme", 120.5)
    resp = await client.get("/v1/tenants/nobody", headers=API_HEADERS)
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


async def test_a_suppressed_trip_is_retried_when_the_guard_has_room(client, sql):
    """Alertmanager sends no new firing instance while the alert keeps firing, so the
    receiver itself isolates a still-failing tenant once the shared failure has eased."""
    tenants = [f"guard-{i:02d}" for i in range(10)]
    await register(client, tenants)
    failing = tenants[:3]
    for tenant in failing:
        await post_webhook(client, firing(tenant))
    assert [(await get_breaker(client, t))["state"] for t in failing] == [
        "open",
        "open",
        "closed",
    ]
    # An operator takes one isolated tenant out of the count: room for one more.
    resp = await client.post(
        f"/v1/tenants/{failing[0]}/breaker",
        json={"action": "force_close", "reason": "known cause, serving it", "actor": "oncall"},
        headers=API_HEADERS,
    )
    assert resp.status == 200, await resp.text()
    b = await poll(
        lambda: get_breaker(client, failing[2]),
        lambda b: b["state"] == "open",
        within=15,
        what="the suppressed tenant to be isolated",
    )
    assert b["trips"] == 1
    (actor, details) = audit_rows(sql, "breaker.transition", failing[2])[-1]
    assert actor == "system"
    assert details["to"] == "open" and "guard has room" in details["reason"]
    assert len(audit_rows(sql, "breaker.suppressed", failing[2])) == 1
