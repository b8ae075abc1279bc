"""The reconciliation diff (receiver/domain/reconcile.py): properties and examples."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus, fingerprint, role_of
from receiver.domain.reconcile import (
    PeerAlert,
    PeerAnswer,
    PeerFailed,
    PeerOk,
    Reconciliation,
    active_union,
    instance_key,
    reconcile,
    reported_fingerprints,
)
from tests.conftest import load_fixture

TENANT_LABEL = "tenant_id"
T0 = datetime(2026, 11, 22, 14, 27, 21, 33000, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


# --- builders -----------------------------------------------------------------------


def labels_for(kind: str, tenant: str) -> dict[str, str]:
    if kind == "isolating":
        return {"alertname": "TenantErrorRateHigh", "tenant_id": tenant, "isolate": "true"}
    if kind == "platform":
        return {"alertname": "PlatformErrorRateHigh", "scope": "platform"}
    if kind == "tenant":
        return {"alertname": "TenantErrorRateElevated", "tenant_id": tenant}
    return {"alertname": "Watchdog", "severity": "none"}


def stored(
    labels: dict[str, str],
    starts_at: datetime,
    status: AlertStatus = AlertStatus.FIRING,
) -> AlertInstance:
    return AlertInstance(
        fingerprint=fingerprint(labels),
        starts_at=starts_at,
        ends_at=None,
        status=status,
        labels=labels,
        annotations={},
        generator_url="",
        role=role_of(labels, tenant_label=TENANT_LABEL),
        tenant_id=labels.get(TENANT_LABEL),
    )


def peer_alert(
    labels: dict[str, str],
    starts_at: datetime,
    *,
    state: str = "active",
    silenced_by: tuple[str, ...] = (),
    inhibited_by: tuple[str, ...] = (),
) -> PeerAlert:
    # The API writes startsAt in milliseconds, in whatever offset it was given.
    ms = starts_at.replace(microsecond=starts_at.microsecond - starts_at.microsecond % 1000)
    return PeerAlert(
        fingerprint=fingerprint(labels),
        starts_at=ms,
        labels=labels,
        state=state,
        silenced_by=silenced_by,
        inhibited_by=inhibited_by,
    )


def apply(stored_instances: list[AlertInstance], result: Reconciliation) -> list[AlertInstance]:
    """What the service's transaction does with a result, as far as the diff can see."""
    resolved = {c.key for c in result.resolved}
    out = [
        replace(i, status=AlertStatus.RESOLVED)
        if instance_key(i.fingerprint, i.starts_at) in resolved
        else i
        for i in stored_instances
    ]
    return out + [c.instance for c in result.fired]


def keys(changes: tuple[object, ...]) -> set[tuple[str, datetime]]:
    return {c.key for c in changes}  # type: ignore[attr-defined]


# --- strategies ---------------------------------------------------------------------

KINDS = st.sampled_from(["isolating", "platform", "tenant", "none"])
TENANTS = st.sampled_from(["tenant-a", "tenant-b", "tenant-c"])
# Starts a few seconds apart, with microseconds (as stored) in UTC or +02:00.
STARTS = st.builds(
    lambda s, us, tz: (T0 + timedelta(seconds=s, microseconds=us)).astimezone(tz),
    st.integers(0, 5),
    st.integers(0, 999_999),
    st.sampled_from([UTC, PLUS_TWO]),
)
STATES = st.sampled_from(
    [
        ("active", (), ()),
        ("suppressed", ("silence-1",), ()),
        ("suppressed", (), ("inhib-1",)),
        ("unprocessed", (), ()),
    ]
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[AlertInstance], list[PeerAnswer], frozenset]:  # type: ignore[type-arg]
    """A universe of instances; the receiver stored some of them (some resolved), each
    peer answered with some of them or failed; the previous poll found some stored
    firing instances absent."""
    universe = draw(st.lists(st.tuples(KINDS, TENANTS, STARTS), min_size=0, max_size=8))
    instances = {(tuple(sorted(labels_for(k, t).items())), s): (k, t, s) for k, t, s in universe}
    store: list[AlertInstance] = []
    alerts: list[PeerAlert] = []
    for kind, tenant, starts_at in instances.values():
        labels = labels_for(kind, tenant)
        where = draw(st.sampled_from(["stored", "stored-resolved", "peer-only", "both"]))
        if where in ("stored", "both"):
            store.append(stored(labels, starts_at))
        if where == "stored-resolved":
            store.append(stored(labels, starts_at, AlertStatus.RESOLVED))
        if where in ("peer-only", "both") or draw(st.booleans()):
            state, silenced, inhibited = draw(STATES)
            alerts.append(
                peer_alert(
                    labels,
                    starts_at,
                    state=state,
                    silenced_by=silenced,
                    inhibited_by=inhibited,
                )
            )
    peers: list[PeerAnswer] = []
    for n in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 4)) == 0:
            peers.append(PeerFailed(f"am-{n}", "timeout"))
        else:
            held = [a for a in alerts if draw(st.booleans())] if n else alerts
            peers.append(PeerOk(f"am-{n}", tuple(held)))
    firing_keys = [
        instance_key(i.fingerprint, i.starts_at) for i in store if i.status is AlertStatus.FIRING
    ]
    previous = frozenset(k for k in firing_keys if draw(st.booleans()))
    return store, peers, previous


# --- properties ---------------------------------------------------------------------


@given(worlds(), st.text(min_size=1, max_size=20))
def test_a_failing_peer_never_changes_anything(world: tuple, reason: str) -> None:  # type: ignore[type-arg]
    store, peers, previous = world
    peers = [*peers, PeerFailed("am-down", reason)]
    result = reconcile(store, peers, previous, tenant_label=TENANT_LABEL)
    assert not result.complete
    assert result.changes == ()
    assert result.absent == previous  # not advanced either
    assert PeerFailed("am-down", reason) in result.failed


@given(worlds())
def test_an_alert_absent_from_one_complete_poll_is_never_resolved(world: tuple) -> None:  # type: ignore[type-arg]
    store, peers, previous = world
    result = reconcile(store, peers, previous, tenant_label=TENANT_LABEL)
    assert keys(result.resolved) <= previous
    # ...and from no poll at all: the very first poll resolves nothing.
    assert reconcile(store, peers, frozenset(), tenant_label=TENANT_LABEL).resolved == ()


@given(worlds())
def test_rerunning_a_diff_on_its_own_result_changes_nothing(world: tuple) -> None:  # type: ignore[type-arg]
    store, peers, previous = world
    first = reconcile(store, peers, previous, tenant_label=TENANT_LABEL)
    again = reconcile(apply(store, first), peers, previous, tenant_label=TENANT_LABEL)
    assert again.changes == ()
    assert again.absent == first.absent


@given(worlds(), st.randoms())
def test_the_order_of_the_peers_does_not_matter(world: tuple, rnd) -> None:  # type: ignore[no-untyped-def, type-arg]
    store, peers, previous = world
    shuffled = list(peers)
    rnd.shuffle(shuffled)
    a = reconcile(store, peers, previous, tenant_label=TENANT_LABEL)
    b = reconcile(store, shuffled, previous, tenant_label=TENANT_LABEL)
    assert (a.complete, a.changes, a.absent) == (b.complete, b.changes, b.absent)


@given(worlds())
def test_what_a_peer_holds_is_never_resolved_silenced_or_not(world: tuple) -> None:  # type: ignore[type-arg]
    store, peers, previous = world
    result = reconcile(store, peers, previous, tenant_label=TENANT_LABEL)
    union = active_union(peers, tenant_label=TENANT_LABEL)
    if union is not None:
        assert not keys(result.resolved) & set(union)


@given(worlds())
def test_only_unknown_alerts_with_a_role_are_fired(world: tuple) -> None:  # type: ignore[type-arg]
    store, peers, previous = world
    result = reconcile(store, peers, previous, tenant_label=TENANT_LABEL)
    known = {instance_key(i.fingerprint, i.starts_at) for i in store}
    for change in result.fired:
        assert change.key not in known
        assert change.from_status is None
        assert change.instance.status is AlertStatus.FIRING
        assert change.instance.role in (AlertRole.ISOLATING, AlertRole.PLATFORM)
    for change in result.resolved:
        assert change.instance.role in (AlertRole.ISOLATING, AlertRole.PLATFORM)
        assert change.from_status is AlertStatus.FIRING


@settings(max_examples=200)
@given(worlds())
def test_two_complete_polls_leave_no_absent_instance_firing(world: tuple) -> None:  # type: ignore[type-arg]
    store, peers, _ = world
    peers = [p for p in peers if isinstance(p, PeerOk)]
    if not peers:
        return
    first = reconcile(store, peers, frozenset(), tenant_label=TENANT_LABEL)
    store = apply(store, first)
    second = reconcile(store, peers, first.absent, tenant_label=TENANT_LABEL)
    store = apply(store, second)
    union = active_union(peers, tenant_label=TENANT_LABEL)
    assert union is not None
    for instance in store:
        if instance.status is AlertStatus.FIRING and instance.role in (
            AlertRole.ISOLATING,
            AlertRole.PLATFORM,
        ):
            assert instance_key(instance.fingerprint, instance.starts_at) in union
    assert second.absent == frozenset()


# --- examples -----------------------------------------------------------------------


def test_the_truncated_group_member_is_found() -> None:
    """grouped-truncated-firing.json carries tenant-a and tenant-b and says one alert was
    truncated: tenant-c, which only Alertmanager's API shows."""
    payload = load_fixture("grouped-truncated-firing.json")
    assert payload["truncatedAlerts"] == 1
    delivered = []
    for alert in payload["alerts"]:
        instance = stored(alert["labels"], datetime.fromisoformat(alert["startsAt"]))
        assert instance.fingerprint == alert["fingerprint"]
        delivered.append(instance)
    starts_at = delivered[0].starts_at
    tenant_c = {**payload["alerts"][0]["labels"], "tenant_id": "tenant-c"}
    delivered_copies = [
        peer_alert(dict(a["labels"]), datetime.fromisoformat(a["startsAt"]))
        for a in payload["alerts"]
    ]
    api = PeerOk("am-0", (*delivered_copies, peer_alert(tenant_c, starts_at)))
    result = reconcile(delivered, [api], frozenset(), tenant_label=TENANT_LABEL)
    assert result.complete
    (change,) = result.changes
    assert change.instance.tenant_id == "tenant-c"
    assert change.instance.role is AlertRole.ISOLATING
    assert change.instance.starts_at == starts_at
    assert change.audit_details() == {
        "fingerprint": fingerprint(tenant_c),
        "startsAt": starts_at,
        "alertname": "TenantErrorRateHigh",
        "from": None,
        "to": "firing",
        "peerState": "active",
    }


def test_two_peers_one_failing_changes_nothing_then_the_next_complete_poll_does() -> None:
    a = labels_for("isolating", "tenant-a")
    store = [stored(a, T0)]
    ok = PeerOk("am-0", ())
    down = PeerFailed("am-1", "HTTP 503")
    # Absent at the one peer that answered, but the poll is incomplete: nothing.
    r1 = reconcile(store, [ok, down], frozenset(), tenant_label=TENANT_LABEL)
    assert (r1.complete, r1.changes, r1.absent, r1.failed) == (False, (), frozenset(), (down,))
    # First complete poll: absent once, nothing resolved yet.
    r2 = reconcile(store, [ok, PeerOk("am-1", ())], r1.absent, tenant_label=TENANT_LABEL)
    assert r2.changes == () and r2.absent == {instance_key(fingerprint(a), T0)}
    # A failed poll in between neither resolves nor forgets.
    r3 = reconcile(store, [ok, down], r2.absent, tenant_label=TENANT_LABEL)
    assert r3.changes == () and r3.absent == r2.absent
    # Second complete poll: resolved.
    r4 = reconcile(store, [ok, PeerOk("am-1", ())], r3.absent, tenant_label=TENANT_LABEL)
    (change,) = r4.changes
    assert change.to_status is AlertStatus.RESOLVED and change.from_status is AlertStatus.FIRING
    assert change.instance.status is AlertStatus.RESOLVED
    assert change.audit_details()["to"] == "resolved"
    assert r4.absent == frozenset()


def test_the_union_of_the_peers_counts() -> None:
    a = labels_for("isolating", "tenant-a")
    store = [stored(a, T0)]
    peers: list[PeerAnswer] = [PeerOk("am-0", ()), PeerOk("am-1", (peer_alert(a, T0),))]
    r1 = reconcile(store, peers, frozenset(), tenant_label=TENANT_LABEL)
    r2 = reconcile(store, peers, r1.absent, tenant_label=TENANT_LABEL)
    assert r1.changes == r2.changes == () and r2.absent == frozenset()


@pytest.mark.parametrize(
    ("state", "silenced_by", "inhibited_by"),
    [("suppressed", ("5c3d",), ()), ("suppressed", (), ("9f1e",)), ("unprocessed", (), ())],
)
def test_silenced_inhibited_and_unprocessed_alerts_are_active(
    state: str, silenced_by: tuple[str, ...], inhibited_by: tuple[str, ...]
) -> None:
    a = labels_for("isolating", "tenant-a")
    held = peer_alert(a, T0, state=state, silenced_by=silenced_by, inhibited_by=inhibited_by)
    # Stored: never resolved however many polls.
    absent: frozenset[tuple[str, datetime]] = frozenset()
    for _ in range(3):
        result = reconcile(
            [stored(a, T0)], [PeerOk("am-0", (held,))], absent, tenant_label="tenant_id"
        )
        assert result.changes == ()
        absent = result.absent
    # Never delivered (a silence stops the webhook, not the breaker): recorded as fired.
    (change,) = reconcile(
        [], [PeerOk("am-0", (held,))], frozenset(), tenant_label="tenant_id"
    ).changes
    details = change.audit_details()
    assert details["peerState"] == state
    assert details.get("silencedBy", []) == list(silenced_by)
    assert details.get("inhibitedBy", []) == list(inhibited_by)


def test_alerts_without_a_role_are_ignored() -> None:
    peers = [
        PeerOk(
            "am-0",
            (
                peer_alert(labels_for("tenant", "tenant-a"), T0),
                peer_alert(labels_for("none", "tenant-a"), T0),  # the Watchdog
            ),
        )
    ]
    store = [stored(labels_for("tenant", "tenant-b"), T0), stored(labels_for("none", "x"), T0)]
    r1 = reconcile(store, peers, frozenset(), tenant_label=TENANT_LABEL)
    r2 = reconcile(store, peers, r1.absent, tenant_label=TENANT_LABEL)
    assert r1.changes == r2.changes == ()


def test_the_tenant_label_is_configurable() -> None:
    acme = {"alertname": "TenantErrorRateHigh", "customer": "acme", "isolate": "true"}
    other = {"alertname": "TenantErrorRateHigh", "tenant_id": "t1", "isolate": "true"}
    peers = [PeerOk("am-0", (peer_alert(acme, T0), peer_alert(other, T0)))]
    (change,) = reconcile([], peers, frozenset(), tenant_label="customer").changes
    assert change.instance.tenant_id == "acme"
    assert change.instance.role is AlertRole.ISOLATING


def test_platform_alerts_count() -> None:
    platform = labels_for("platform", "")
    (change,) = reconcile(
        [], [PeerOk("am-0", (peer_alert(platform, T0),))], frozenset(), tenant_label=TENANT_LABEL
    ).changes
    assert change.instance.role is AlertRole.PLATFORM and change.instance.tenant_id is None


def test_identity_is_compared_at_the_apis_millisecond_precision_in_utc() -> None:
    a = labels_for("isolating", "tenant-a")
    # Stored from a webhook that carried nanoseconds (PostgreSQL kept microseconds), in
    # +02:00; the API answers in milliseconds.
    webhook_starts = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=PLUS_TWO)
    api = PeerOk("am-0", (peer_alert(a, webhook_starts.astimezone(UTC)),))
    assert api.alerts[0].starts_at.microsecond == 123000
    r1 = reconcile([stored(a, webhook_starts)], [api], frozenset(), tenant_label=TENANT_LABEL)
    assert r1.changes == () and r1.absent == frozenset()
    assert instance_key("f", webhook_starts) == ("f", datetime(2026, 1, 2, 1, 4, 5, 123000, UTC))


def test_a_resolved_instance_is_never_fired_again_from_a_stale_copy() -> None:
    a = labels_for("isolating", "tenant-a")
    peers = [PeerOk("am-0", (peer_alert(a, T0),))]
    store = [stored(a, T0, AlertStatus.RESOLVED)]
    assert reconcile(store, peers, frozenset(), tenant_label=TENANT_LABEL).changes == ()


def test_an_instance_older_than_a_recorded_one_is_never_fired() -> None:
    a = labels_for("isolating", "tenant-a")
    newer = T0 + timedelta(minutes=5)
    peers = [PeerOk("am-0", (peer_alert(a, T0),))]  # a peer behind the others
    store = [stored(a, newer, AlertStatus.RESOLVED)]
    assert reconcile(store, peers, frozenset(), tenant_label=TENANT_LABEL).changes == ()


def test_peers_out_of_step_the_newest_instance_wins() -> None:
    """Alertmanager holds one alert per fingerprint; the newer instance supersedes the
    older one, so the older stored instance is absent (and superseded at once by the
    ingest path when the newer one is recorded)."""
    a = labels_for("isolating", "tenant-a")
    newer = T0 + timedelta(minutes=5)
    peers: list[PeerAnswer] = [
        PeerOk("am-0", (peer_alert(a, T0),)),
        PeerOk("am-1", (peer_alert(a, newer),)),
    ]
    result = reconcile([stored(a, T0)], peers, frozenset(), tenant_label=TENANT_LABEL)
    (change,) = result.changes
    assert change.instance.starts_at == newer and change.to_status is AlertStatus.FIRING
    assert result.absent == {instance_key(fingerprint(a), T0)}


def test_an_alert_back_before_the_second_poll_starts_over() -> None:
    a = labels_for("isolating", "tenant-a")
    store = [stored(a, T0)]
    gone, back = PeerOk("am-0", ()), PeerOk("am-0", (peer_alert(a, T0),))
    r1 = reconcile(store, [gone], frozenset(), tenant_label=TENANT_LABEL)
    r2 = reconcile(store, [back], r1.absent, tenant_label=TENANT_LABEL)
    r3 = reconcile(store, [gone], r2.absent, tenant_label=TENANT_LABEL)
    assert r1.changes == r2.changes == r3.changes == ()
    assert r2.absent == frozenset() and r3.absent == r1.absent


def test_no_peer_is_no_complete_poll() -> None:
    store = [stored(labels_for("isolating", "tenant-a"), T0)]
    previous = frozenset({instance_key(store[0].fingerprint, T0)})
    result = reconcile(store, [], previous, tenant_label=TENANT_LABEL)
    assert (result.complete, result.changes, result.absent) == (False, (), previous)


def test_reported_fingerprints_lists_what_the_service_must_load() -> None:
    a, b = labels_for("isolating", "tenant-a"), labels_for("tenant", "tenant-b")
    peers: list[PeerAnswer] = [
        PeerOk("am-0", (peer_alert(a, T0), peer_alert(b, T0))),
        PeerFailed("am-1", "timeout"),
    ]
    assert reported_fingerprints(peers) == {fingerprint(a), fingerprint(b)}
