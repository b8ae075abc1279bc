"""Routing from priority to channels, and the outbox JSON form (recipients: test_recipients)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.notification import (
    Channel,
    IncidentMessage,
    NotificationEvent,
    TenantSummary,
    channels_for,
    event_phrase,
    headline,
    tenant_line,
    what_happened,
)
from receiver.domain.tiers import Priority, Tier

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

PD, SLACK, EMAIL = Channel.PAGERDUTY, Channel.SLACK, Channel.EMAIL

EXPECTED = {
    Priority.P0: {PD, SLACK, EMAIL},
    Priority.P1: {PD, SLACK},
    Priority.P2: {SLACK, EMAIL},
}


def make_msg(**overrides: object) -> IncidentMessage:
    fields: dict[str, object] = {
        "event": NotificationEvent.OPENED,
        "incident_id": "INC-20240501-0001",
        "title": "Tenant acme error ratio above 50%",
        "priority": Priority.P1,
        "previous_priority": None,
        "status": "open",
        "opened_at": T0,
        "ack_due_at": T0 + timedelta(hours=1),
        "actor": None,
        "note": None,
        "tenants": (
            TenantSummary("acme", Tier.GOLD, "Acme Corp", "open", "ops@acme.io"),
            TenantSummary("beta", None, None, "forced_open"),
        ),
        "runbook_urls": ("https://runbooks.example/tenant-isolation",),
        "incident_url": "https://receiver.example/v1/incidents/INC-20240501-0001",
    }
    fields.update(overrides)
    return IncidentMessage(**fields)  # type: ignore[arg-type]


# --- routing -----------------------------------------------------------------------


@pytest.mark.parametrize("event", list(NotificationEvent))
@pytest.mark.parametrize("priority", list(Priority))
def test_every_priority_and_event(priority: Priority, event: NotificationEvent) -> None:
    assert channels_for(priority, event) == frozenset(EXPECTED[priority])


@pytest.mark.parametrize("event", list(NotificationEvent))
def test_p2_never_pages(event: NotificationEvent) -> None:
    assert PD not in channels_for(Priority.P2, event)


@pytest.mark.parametrize("event", [NotificationEvent.ACKNOWLEDGED, NotificationEvent.RESOLVED])
def test_ack_and_resolve_reach_pagerduty_only_when_the_incident_was_paged(
    event: NotificationEvent,
) -> None:
    # The priority passed is the highest reached: a P2 that escalated to P1 was paged.
    opened = channels_for(Priority.P1, NotificationEvent.ESCALATED)
    assert PD in opened and PD in channels_for(Priority.P1, event)
    assert PD not in channels_for(Priority.P2, NotificationEvent.OPENED)
    assert PD not in channels_for(Priority.P2, event)


def test_routing_accepts_plain_strings() -> None:
    assert channels_for(Priority("P0"), NotificationEvent("sla.breached")) == frozenset(
        {PD, SLACK, EMAIL}
    )
    with pytest.raises(ValueError):
        channels_for(Priority.P0, "incident.exploded")  # type: ignore[arg-type]


def test_enum_values_are_the_audit_words() -> None:
    assert [c.value for c in Channel] == ["pagerduty", "slack", "email"]
    assert [e.value for e in NotificationEvent] == [
        "incident.opened",
        "incident.escalated",
        "incident.acknowledged",
        "incident.resolved",
        "sla.breached",
    ]


# --- JSON form ---------------------------------------------------------------------


def test_round_trip_through_json_text() -> None:
    msg = make_msg(
        event=NotificationEvent.ESCALATED,
        priority=Priority.P0,
        previous_priority=Priority.P1,
        actor="system",
        note="mass isolation guard tripped",
        occurred_at=T0 + timedelta(minutes=3),
    )
    data = json.loads(json.dumps(msg.to_json()))
    assert data["priority"] == "P0" and data["previous_priority"] == "P1"
    assert data["tenants"][0] == {
        "tenant_id": "acme",
        "tier": "gold",
        "name": "Acme Corp",
        "breaker_state": "open",
        "admin_email": "ops@acme.io",
    }
    back = IncidentMessage.from_json(data)
    assert back == msg
    assert back.opened_at.utcoffset() == timedelta(0)
    assert isinstance(back.tenants, tuple) and isinstance(back.runbook_urls, tuple)


def test_from_json_ignores_unknown_keys_and_defaults_optional_ones() -> None:
    data = make_msg().to_json()
    data["added_later"] = {"x": 1}
    del data["occurred_at"]
    del data["version"]
    assert IncidentMessage.from_json(data) == make_msg()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("priority", "P9"),
        ("event", "incident.exploded"),
        ("opened_at", "yesterday"),
        ("title", None),
        ("tenants", "acme"),
        ("runbook_urls", [1, 2]),
        ("version", 99),
    ],
)
def test_from_json_rejects_bad_input(key: str, value: object) -> None:
    data = make_msg().to_json()
    data[key] = value
    with pytest.raises(ValueError):
        IncidentMessage.from_json(data)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_msg(opened_at=datetime(2024, 5, 1, 12, 0))


def test_lists_are_kept_as_tuples() -> None:
    msg = make_msg(runbook_urls=["https://a"], tenants=[])
    assert msg.runbook_urls == ("https://a",) and msg.tenants == ()
    hash(msg)


# codec="utf-8": no lone surrogates, which JSON text and jsonb refuse.
texts = st.text(st.characters(codec="utf-8"), max_size=40)
opt_texts = st.none() | texts
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
aware = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)
tenants = st.builds(
    TenantSummary,
    tenant_id=texts,
    tier=st.none() | st.sampled_from(Tier),
    name=opt_texts,
    breaker_state=st.sampled_from(["closed", "open", "half_open", "forced_open"]),
    admin_email=opt_texts,
)
messages = st.builds(
    IncidentMessage,
    event=st.sampled_from(NotificationEvent),
    incident_id=texts,
    title=texts,
    priority=st.sampled_from(Priority),
    previous_priority=st.none() | st.sampled_from(Priority),
    status=st.sampled_from(["open", "acknowledged", "resolved"]),
    opened_at=aware,
    ack_due_at=aware,
    actor=opt_texts,
    note=opt_texts,
    tenants=st.lists(tenants, max_size=5).map(tuple),
    runbook_urls=st.lists(texts, max_size=3).map(tuple),
    incident_url=opt_texts,
    occurred_at=st.none() | aware,
)


@given(messages)
def test_round_trip_property(msg: IncidentMessage) -> None:
    back = IncidentMessage.from_json(json.loads(json.dumps(msg.to_json())))
    assert back == msg
    # Same instants and the same offsets, not just equal instants.
    assert back.opened_at.utcoffset() == msg.opened_at.utcoffset()
    assert back.to_json() == msg.to_json()


@given(messages)
def test_wording_never_fails(msg: IncidentMessage) -> None:
    line = headline(msg)
    assert line.startswith(f"[{msg.priority}] ")
    assert len(line.splitlines()) == 1 and "\r" not in line and "\n" not in line
    assert what_happened(msg)
    for t in msg.tenants:
        assert t.breaker_state in tenant_line(t)


# --- wording -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({}, "opened"),
        (
            {
                "event": NotificationEvent.ESCALATED,
                "priority": Priority.P0,
                "previous_priority": Priority.P1,
            },
            "escalated from P1 to P0",
        ),
        ({"event": NotificationEvent.ACKNOWLEDGED, "actor": "alice"}, "acknowledged by alice"),
        ({"event": NotificationEvent.RESOLVED, "actor": "system"}, "resolved by system"),
        ({"event": NotificationEvent.SLA_BREACHED}, "SLA breached"),
    ],
)
def test_event_phrase(overrides: dict[str, object], phrase: str) -> None:
    assert event_phrase(make_msg(**overrides)) == phrase


def test_headline_is_the_subject_line() -> None:
    msg = make_msg(title="Tenant acme\nerror   ratio")
    assert headline(msg) == "[P1] INC-20240501-0001 opened: Tenant acme error ratio"


def test_tenant_line() -> None:
    assert (
        tenant_line(TenantSummary("acme", Tier.PLATINUM, "Acme Corp", "open"))
        == "acme (Acme Corp): platinum tier, breaker open"
    )
    assert tenant_line(TenantSummary("b", None, None, "half_open")) == (
        "b: tier unknown, breaker half_open"
    )
