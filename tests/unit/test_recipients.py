"""Who gets which e-mail (audiences) and the bookkeeping of each recipient's state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from receiver.domain.notification import IncidentMessage, NotificationEvent, TenantSummary
from receiver.domain.recipients import (
    ACCEPTED,
    OPERATORS,
    PENDING,
    REFUSED,
    Recipient,
    all_accepted,
    describe_unaccepted,
    email_audiences,
    merge,
    parse_addresses,
    pending_recipients,
)
from receiver.domain.tiers import Priority, Tier

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_msg(**overrides: object) -> IncidentMessage:
    fields: dict[str, object] = {
        "event": NotificationEvent.OPENED,
        "incident_id": "INC-20240501-0001",
        "title": "3 tenants failing (a, b, d): TenantErrorRateHigh",
        "priority": Priority.P0,
        "previous_priority": None,
        "status": "open",
        "opened_at": T0,
        "ack_due_at": T0 + timedelta(minutes=15),
        "actor": None,
        "note": "b's index is broken",
        "tenants": (),
        "runbook_urls": ("https://runbooks.example/x",),
        "incident_url": "https://receiver.example/v1/incidents/INC-20240501-0001",
    }
    fields.update(overrides)
    return IncidentMessage(**fields)  # type: ignore[arg-type]


def test_parse_addresses() -> None:
    assert parse_addresses(None) == []
    assert parse_addresses("a@x.io") == ["a@x.io"]
    assert parse_addresses(["a@x.io", "B <b@y.io>, c@z.io"]) == ["a@x.io", "b@y.io", "c@z.io"]
    assert parse_addresses('"Doe, Jane" <jane@x.io>, A@X.IO, a@x.io') == ["jane@x.io", "A@X.IO"]


@pytest.mark.parametrize(
    "value", ["  ", "not-an-address", "evil@x.io\r\nBcc: all@x.io", "@x.io", "a@", "a b@x.io"]
)
def test_unusable_addresses_are_dropped(value: str) -> None:
    assert parse_addresses(value) == []


def test_operators_then_one_audience_per_tenant_with_admins() -> None:
    msg = make_msg(
        tenants=(
            TenantSummary("a", Tier.GOLD, "Alpha Inc", "open", "admin@a.io, Ops <ops@a.io>"),
            TenantSummary("b", Tier.SILVER, None, "open", "ONCALL@example.com"),
            TenantSummary("c", None, None, "open", None),
            TenantSummary("d", None, None, "open", "admin@a.io"),
        )
    )
    audiences = email_audiences(msg, operators=["oncall@example.com", "sre@example.com"])
    assert [(a.key, a.recipients) for a in audiences] == [
        (OPERATORS, ("oncall@example.com", "sre@example.com")),
        ("tenant:a", ("admin@a.io", "ops@a.io")),
        # b's only admin is an operator: the operators' message reaches it.
        ("tenant:d", ("admin@a.io",)),  # shared with a: each tenant sends its own
    ]
    operators, alpha, delta = audiences
    assert operators.message == msg
    for audience, tenant in ((alpha, "a"), (delta, "d")):
        view = audience.message
        assert [t.tenant_id for t in view.tenants] == [tenant]
        # Nothing the operators wrote or see about the others: title, note, links.
        assert view.note is None and view.runbook_urls == () and view.incident_url is None
        assert view.title.startswith("Service disruption affecting")
        assert view.incident_id == msg.incident_id and view.event is msg.event
    assert alpha.message.title == "Service disruption affecting Alpha Inc"
    assert delta.message.title == "Service disruption affecting d"


def test_no_operators_means_tenant_audiences_only() -> None:
    msg = make_msg(tenants=(TenantSummary("a", None, None, "open", "x@a.io"),))
    assert [a.key for a in email_audiences(msg, operators=())] == ["tenant:a"]
    assert email_audiences(make_msg(), operators=()) == []


def test_merge_keeps_final_answers() -> None:
    current = (
        Recipient("a@x", ACCEPTED, "250 ok"),
        Recipient("b@x"),
        Recipient("c@x"),
        Recipient("d@x", REFUSED, "550 no"),
    )
    outcomes = {
        "a@x": Recipient("a@x", PENDING, "451 later"),  # never back to pending
        "b@x": Recipient("b@x", ACCEPTED, "250 ok"),
        "c@x": Recipient("c@x", PENDING, "452 too many"),
    }
    merged = merge(current, outcomes)
    assert [r.state for r in merged] == [ACCEPTED, ACCEPTED, PENDING, REFUSED]
    assert not all_accepted(merged)
    assert describe_unaccepted(merged) == (
        "refused: d@x (550 no); not accepted yet: c@x (452 too many)"
    )
    accepted = {"a@x": Recipient("a@x", ACCEPTED, "250 ok")}
    assert all_accepted(merge(pending_recipients(["a@x"]), accepted))
    assert Recipient.from_json(merged[2].to_json()) == merged[2]


def test_describe_names_at_most_twenty() -> None:
    many = tuple(Recipient(f"u{i}@x", REFUSED) for i in range(25))
    assert describe_unaccepted(many).endswith("u19@x and 5 more")
