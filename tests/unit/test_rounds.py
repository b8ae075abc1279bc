"""independent_rounds (receiver/domain/alerts.py): how group commit orders the deliveries
of one batch so that each is written as if it were alone."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus, independent_rounds

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def alert(fingerprint: str, tenant: str | None, *, platform: bool = False) -> AlertInstance:
    role = AlertRole.ISOLATING if tenant else AlertRole.OTHER
    role = AlertRole.PLATFORM if platform else role
    return AlertInstance(
        fingerprint=fingerprint,
        starts_at=T0,
        ends_at=None,
        status=AlertStatus.FIRING,
        labels={},
        annotations={},
        generator_url="",
        role=role,
        tenant_id=tenant,
    )


def test_independent_deliveries_share_one_round() -> None:
    deliveries = [[alert(f"f{i}", f"t{i}")] for i in range(5)]
    assert independent_rounds(deliveries) == [[0, 1, 2, 3, 4]]


def test_a_copy_goes_after_the_delivery_it_copies() -> None:
    a, b = [alert("f1", "t1")], [alert("f2", "t2")]
    assert independent_rounds([a, b, a, a, b]) == [[0, 1], [2, 4], [3]]


def test_a_shared_tenant_orders_deliveries_of_different_alerts() -> None:
    assert independent_rounds([[alert("f1", "t1")], [alert("f2", "t1")]]) == [[0], [1]]


def test_an_alert_of_no_tenant_is_a_round_of_its_own() -> None:
    before, after = [alert("f1", "t1")], [alert("f3", "t3")]
    platform = [alert("p", None, platform=True)]
    assert independent_rounds([before, platform, after]) == [[0], [1], [2]]
    heartbeat = [alert("w", None)]
    assert independent_rounds([heartbeat, before, after]) == [[0], [1, 2]]


def test_no_deliveries_no_rounds() -> None:
    assert independent_rounds([]) == []
    assert independent_rounds([[]]) == [[0]]


# Deliveries of up to three alerts over few fingerprints and tenants, so that they collide.
ALERTS = st.builds(
    alert,
    st.sampled_from(["f0", "f1", "f2", "f3", "f4", "f5"]),
    st.sampled_from([None, "t0", "t1", "t2", "t3"]),
    platform=st.booleans(),
)
BATCHES = st.lists(st.lists(ALERTS, max_size=3), max_size=12)


@given(BATCHES)
def test_rounds_keep_every_delivery_once_and_order_every_conflict(
    deliveries: list[list[AlertInstance]],
) -> None:
    rounds = independent_rounds(deliveries)
    placed = [i for r in rounds for i in r]
    assert sorted(placed) == list(range(len(deliveries)))
    assert all(rounds)  # no empty round
    round_of = {i: n for n, r in enumerate(rounds) for i in r}

    def keys(i: int) -> set[tuple[str, str]]:
        out = {("fingerprint", a.fingerprint) for a in deliveries[i]}
        return out | {("tenant", a.tenant_id) for a in deliveries[i] if a.tenant_id}

    def alone(i: int) -> bool:
        return any(a.tenant_id is None or a.role is AlertRole.PLATFORM for a in deliveries[i])

    for i in range(len(deliveries)):
        assert sorted(rounds[round_of[i]]) == rounds[round_of[i]]  # arrival order kept
        for j in range(i + 1, len(deliveries)):
            if keys(i) & keys(j) or alone(i) or alone(j):
                # A later delivery that could see the earlier one's effects comes after it.
                assert round_of[i] < round_of[j], (i, j, rounds)
