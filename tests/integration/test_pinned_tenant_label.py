"""Pinned (issue 11): a non-default RECEIVER_TENANT_LABEL end to end. With
tenant_label="customer" the `customer` label names the tenant for the webhook, the
breaker and the incident; `tenant_id` is then just another label."""

from __future__ import annotations

import copy
from typing import Any

from receiver.domain.alerts import fingerprint
from tests.conftest import API_HEADERS
from tests.integration.helpers import (
    audit_rows,
    get_breaker,
    isolating_alert,
    post_webhook,
    webhook_payload,
)


def customer_alert(customer: str, *, isolate: bool = True, alertname: str | None = None):
    """The fixture's isolating alert with `customer` in place of `tenant_id`."""
    alert = copy.deepcopy(isolating_alert(customer, isolate=isolate))
    del alert["labels"]["tenant_id"]
    alert["labels"]["customer"] = customer
    if alertname:
        alert["labels"]["alertname"] = alertname
    alert["fingerprint"] = fingerprint(alert["labels"])
    return alert


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    body = webhook_payload(*alerts)
    body["groupLabels"] = {"alertname": alerts[0]["labels"]["alertname"]}
    return body


async def get(client: Any, path: str) -> Any:
    resp = await client.get(path, headers=API_HEADERS)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_a_custom_tenant_label_trips_the_breaker_and_opens_the_incident(app_client, sql):
    client = await app_client(tenant_label="customer")
    resp = await client.put("/v1/tenants/acme", json={"tier": "gold"}, headers=API_HEADERS)
    assert resp.status == 200, await resp.text()

    out = await post_webhook(client, payload(customer_alert("acme")))
    assert (out["new"], out["breaker_transitions"]) == (1, 1)
    (incident_id,) = out["incidents"]

    breaker = await get_breaker(client, "acme")
    assert (breaker["state"], breaker["allow"], breaker["trips"]) == ("open", False, 1)
    assert [(d["from"], d["to"]) for _, d in audit_rows(sql, "breaker.transition", "acme")] == [
        ("closed", "open")
    ]
    incident = await get(client, f"/v1/incidents/{incident_id}")
    assert incident["priority"] == "P1"  # the gold tier was found through the label
    assert [(t["tenant_id"], t["cause"]) for t in incident["tenants"]] == [("acme", "tripped")]
    assert [a["tenant_id"] for a in incident["alerts"]] == ["acme"]
    listed = await get(client, "/v1/incidents?tenant=acme")
    assert [i["id"] for i in listed["incidents"]] == [incident_id]
    assert sql("SELECT tenant_id FROM alerts") == [("acme",)]

    # A tenant alert (no isolate) under the same label joins the tenant's open incident.
    out = await post_webhook(
        client, payload(customer_alert("acme", isolate=False, alertname="TenantLatencyHigh"))
    )
    assert (out["new"], out["breaker_transitions"], out["incidents"]) == (1, 0, [incident_id])
    incident = await get(client, f"/v1/incidents/{incident_id}")
    assert sorted(a["alertname"] for a in incident["alerts"]) == [
        "TenantErrorRateHigh",
        "TenantLatencyHigh",
    ]


async def test_with_a_custom_tenant_label_tenant_id_names_no_tenant(app_client, sql):
    client = await app_client(tenant_label="customer")
    only_tenant_id = isolating_alert("beta")  # tenant_id="beta", isolate="true"
    out = await post_webhook(client, webhook_payload(only_tenant_id))
    assert (out["new"], out["breaker_transitions"], out["incidents"]) == (1, 0, [])

    breaker = await get_breaker(client, "beta")
    assert (breaker["state"], breaker["trips"]) == ("closed", 0)
    assert sql("SELECT tenant_id, isolating FROM alerts") == [(None, False)]
    assert sql("SELECT count(*) FROM tenants") == [(0,)]
    assert sql("SELECT count(*) FROM breakers") == [(0,)]
    assert sql("SELECT count(*) FROM incidents") == [(0,)]
    assert audit_rows(sql, "breaker.transition") == []
    assert (await get(client, "/v1/incidents?tenant=beta"))["incidents"] == []


async def test_the_default_label_is_tenant_id(client, sql):
    """The contrast: the same alert under the default settings does trip `beta`."""
    out = await post_webhook(client, webhook_payload(isolating_alert("beta")))
    assert out["breaker_transitions"] == 1 and len(out["incidents"]) == 1
    assert (await get_breaker(client, "beta"))["state"] == "open"
    # ...and a `customer` label alone names nobody.
    out = await post_webhook(client, payload(customer_alert("acme")))
    assert (out["breaker_transitions"], out["incidents"]) == (0, [])
    assert (await get_breaker(client, "acme"))["state"] == "closed"
