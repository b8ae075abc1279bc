import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.backoff import retry_delay


@pytest.mark.parametrize(
    ("attempt", "draw", "expected"),
    [(1, 0.5, 0.5), (2, 0.5, 1.0), (3, 0.5, 2.0), (10, 0.5, 30.0), (10, 0.999, 59.94)],
)
def test_exponential_with_jitter_and_cap(attempt, draw, expected):
    assert retry_delay(attempt, base=1, cap=60, draw=draw) == pytest.approx(expected)


def test_never_zero():
    assert retry_delay(1, base=1, cap=60, draw=0.0) == pytest.approx(0.1)


def test_retry_after_is_a_floor_but_capped():
    assert retry_delay(1, base=1, cap=60, draw=0.1, retry_after=30) == 30
    assert retry_delay(1, base=1, cap=60, draw=0.1, retry_after=3600) == 60


@pytest.mark.parametrize(("attempt", "draw"), [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_rejects_nonsense(attempt, draw):
    with pytest.raises(ValueError):
        retry_delay(attempt, base=1, cap=60, draw=draw)


@given(
    attempt=st.integers(1, 1000),
    draw=st.floats(0, 1, exclude_max=True),
    base=st.floats(0.01, 10),
    cap=st.floats(0.01, 3600),
)
def test_bounded_by_the_exponential_ceiling_and_the_cap(attempt, draw, base, cap):
    delay = retry_delay(attempt, base=base, cap=cap, draw=draw)
    assert 0 < delay <= max(cap, min(base, cap) / 10) + 1e-9
