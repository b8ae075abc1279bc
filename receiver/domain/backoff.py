"""Retry delays for notification delivery: exponential backoff with full jitter.

Full jitter (a uniform draw below the exponential ceiling) spreads the retries of many
replicas and messages after a provider's outage, instead of having them return together.
"""

from __future__ import annotations


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    draw: float,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    `draw` is a number in [0, 1) from the caller's random source, so this stays pure.
    A provider's Retry-After is honoured as a floor (never retry earlier than asked)."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not 0 <= draw < 1:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 32))
    # Never zero: a tight loop against a failing provider helps nobody.
    delay = max(ceiling * draw, min(base, cap) / 10)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
