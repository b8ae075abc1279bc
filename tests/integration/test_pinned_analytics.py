"""Pinned (issue 11): GET /v1/analytics/incidents against numbers worked out by hand for a
fixed history, not against the SQL view that computes the same formula.

Incidents are opened, acknowledged and resolved through the API, then given fixed times
with SQL; trips are made through the webhook and the override API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import API_HEADERS
from tests.integration.helpers import firing, post_webhook
from tests.integration.test_breakers import override, transitions, wait_state
from tests.integration.test_notifications import open_incident

Rows = Callable[..., list[tuple[Any, ...]]]
DAY = "2026-03-02"
SINCE, UNTIL = f"{DAY}T00:00:00Z", "2026-03-03T00:00:00Z"


def t(hhmm: str, day: str = DAY) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00")


async def analytics(client: Any, since: str, until: str) -> dict[str, Any]:
    resp = await client.get(
        "/v1/analytics/incidents", params={"since": since, "until": until}, headers=API_HEADERS
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def lifecycle(client: Any, incident: str, *actions: str) -> None:
    for action in actions:
        resp = await client.post(
            f"/v1/incidents/{incident}/{action}", json={"actor": "alice"}, headers=API_HEADERS
        )
        assert resp.status == 200, await resp.text()


def place(
    sql: Rows,
    incident: str,
    opened: datetime,
    due: datetime,
    acked: datetime | None = None,
    resolved: datetime | None = None,
) -> None:
    sql(
        "UPDATE incidents SET opened_at = %s, ack_due_at = %s, acknowledged_at = %s, "
        "resolved_at = %s WHERE id = %s",
        opened,
        due,
        acked,
        resolved,
        incident,
    )


def stats(incidents: int, mtta, mttr, breaches: int, false_positives: int) -> dict[str, Any]:
    return {
        "incidents": incidents,
        "mtta_seconds": mtta,
        "mttr_seconds": mttr,
        "sla_breaches": breaches,
        "false_positives": false_positives,
    }


async def test_analytics_of_a_fixed_history(app_client, sql):
    client = await app_client(correlation_window_seconds=0, max_isolated_percent=100)
    # One incident per tenant; the tier sets the priority (platinum P0, gold P1, bronze P2).
    i1 = await open_incident(client, "p0-a", "platinum")
    i2 = await open_incident(client, "p0-b", "platinum")
    i3 = await open_incident(client, "p1-a", "gold")
    i4 = await open_incident(client, "p2-a", "bronze")
    i5 = await open_incident(client, "p2-b", "bronze")
    i6 = await open_incident(client, "p1-late", "gold")
    await lifecycle(client, i1, "acknowledge", "resolve")
    await lifecycle(client, i2, "acknowledge", "resolve")
    await lifecycle(client, i3, "acknowledge")
    await lifecycle(client, i4, "resolve")
    await lifecycle(client, i6, "acknowledge")
    resp = await client.put(
        f"/v1/incidents/{i4}/postmortem",
        json={"actor": "alice", "false_positive": True},
        headers=API_HEADERS,
    )
    assert resp.status == 200, await resp.text()

    # The history, in UTC on 2026-03-02:
    #            opened  ack due  acknowledged   resolved   tta     ttr    SLA
    # i1 P0      00:00   00:04    00:04          00:30      240    1800    met (ack == due)
    # i2 P0      11:00   11:15    11:20          12:00     1200    3600    breached
    # i3 P1      12:00   12:30    12:10          -          600       -    met
    # i4 P2      13:00   14:00    -              15:00        -    7200    breached (resolved late)
    # i5 P2      14:00   16:00    -              -            -       -    breached (still open)
    # i6 P1      opened at `until` (2026-03-03 00:00): outside [since, until)
    place(sql, i1, t("00:00"), t("00:04"), t("00:04"), t("00:30"))
    place(sql, i2, t("11:00"), t("11:15"), t("11:20"), t("12:00"))
    place(sql, i3, t("12:00"), t("12:30"), t("12:10"))
    place(sql, i4, t("13:00"), t("14:00"), None, t("15:00"))
    place(sql, i5, t("14:00"), t("16:00"))
    place(sql, i6, t("00:00", "2026-03-03"), t("00:30", "2026-03-03"), t("00:01", "2026-03-03"))

    out = await analytics(client, SINCE, UNTIL)
    assert datetime.fromisoformat(out["since"]) == t("00:00")
    assert datetime.fromisoformat(out["until"]) == t("00:00", "2026-03-03")
    assert out["incidents"] == 5
    assert out["counts_by_priority"] == {"P0": 2, "P1": 1, "P2": 2}
    assert out["counts_by_status"] == {"open": 1, "acknowledged": 1, "resolved": 3}
    assert out["mtta_seconds"] == pytest.approx((240 + 1200 + 600) / 3)  # 680
    assert out["mttr_seconds"] == pytest.approx((1800 + 3600 + 7200) / 3)  # 4200
    assert out["sla_breaches"] == 3
    assert out["false_positives"] == 1
    assert out["false_positive_rate"] == pytest.approx(1 / 5)
    assert out["by_priority"] == {
        "P0": stats(2, pytest.approx(720), pytest.approx(2700), 1, 0),
        "P1": stats(1, pytest.approx(600), None, 0, 0),
        "P2": stats(2, None, pytest.approx(7200), 2, 1),
    }
    # The trips happened now (in the audit log), not on 2026-03-02.
    assert (out["breaker_trips_by_tenant"], out["breaker_trips"]) == ({}, 0)

    # Part of the day: since is inclusive, until exclusive (i2 in at 11:00, i4 out at 13:00).
    out = await analytics(client, f"{DAY}T11:00:00Z", f"{DAY}T13:00:00Z")
    assert out["incidents"] == 2
    assert out["counts_by_priority"] == {"P0": 1, "P1": 1, "P2": 0}
    assert out["counts_by_status"] == {"open": 0, "acknowledged": 1, "resolved": 1}
    assert out["mtta_seconds"] == pytest.approx((1200 + 600) / 2)
    assert out["mttr_seconds"] == pytest.approx(3600)
    assert (out["sla_breaches"], out["false_positives"]) == (1, 0)

    # i6 opened exactly at the first window's end: it starts the next one.
    out = await analytics(client, UNTIL, "2026-03-04T00:00:00Z")
    assert (out["incidents"], out["mtta_seconds"], out["mttr_seconds"]) == (1, 60.0, None)
    assert out["counts_by_priority"] == {"P0": 0, "P1": 1, "P2": 0}
    assert out["false_positive_rate"] == 0.0


async def test_trips_by_tenant_count_automatic_moves_into_open(app_client, sql):
    client = await app_client(breaker_open_seconds=0.5, max_isolated_percent=100)
    since = datetime.now(UTC) - timedelta(seconds=1)

    # acme: one trip; released from forced_closed into open, which is no trip.
    await post_webhook(client, firing("acme"))
    await override(client, "acme", "force_close")
    await override(client, "acme", "release")
    # beta: a trip, then half-open, then a new firing re-opens it: a second trip.
    await post_webhook(client, firing("beta"))
    await wait_state(client, "beta", "half_open")
    await post_webhook(client, firing("beta", starts_at="2026-11-22T15:00:00Z"))
    # epsilon: one trip; forced open by an operator and released (into open): still one.
    await post_webhook(client, firing("epsilon"))
    await override(client, "epsilon", "force_open")
    await override(client, "epsilon", "release")
    # gamma: forced open and released by an operator, no alert: no trip.
    await override(client, "gamma", "force_open")
    await override(client, "gamma", "release")
    # delta: firing without isolate: no breaker at all.
    await post_webhook(client, firing("delta", isolate=False))

    # What the audit log holds, so the count below is visibly a subset of it.
    assert ("alice", "forced_closed", "open") in transitions(sql, "acme")
    assert ("alice", "forced_open", "open") in transitions(sql, "epsilon")
    assert [(f, to) for _, f, to in transitions(sql, "beta")] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
    ]
    assert [(f, to) for _, f, to in transitions(sql, "gamma")] == [
        ("closed", "forced_open"),
        ("forced_open", "closed"),
    ]

    until = datetime.now(UTC) + timedelta(minutes=1)
    out = await analytics(client, since.isoformat(), until.isoformat())
    assert out["breaker_trips_by_tenant"] == {"beta": 2, "acme": 1, "epsilon": 1}
    assert out["breaker_trips"] == 4
    # A window that ends before any of it counts none.
    out = await analytics(client, (since - timedelta(hours=1)).isoformat(), since.isoformat())
    assert (out["breaker_trips_by_tenant"], out["breaker_trips"]) == ({}, 0)
