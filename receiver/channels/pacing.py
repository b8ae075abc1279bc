"""Pacing each channel to its provider's rate, and pausing it when the provider says so.

A token bucket per channel: `rate` sends a second, up to one second's worth at once
(at least one). The worker claims only as many rows as there are tokens, so a channel
is never sent faster than its rate and attempts are not spent on 429s; a 429 pauses the
whole channel (its Retry-After, else the row's backoff), not only the row that got it.

Per process: with N replicas, each paces itself, so set the rates to a share of the
provider's (the defaults leave PagerDuty's 120 a minute to one replica; see README).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from receiver.domain.notification import Channel


@dataclass
class _Bucket:
    rate: float  # tokens per second
    capacity: float
    tokens: float
    updated: float
    paused_until: float = float("-inf")


class Pacer:
    def __init__(
        self,
        rates: Mapping[Channel, float],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`rates`: sends per second for each paced channel; others are not paced."""
        self._clock = clock
        now = clock()
        self._buckets = {
            channel: _Bucket(rate, max(1.0, rate), max(1.0, rate), now)
            for channel, rate in rates.items()
            if rate > 0
        }

    def rate(self, channel: Channel) -> float | None:
        bucket = self._buckets.get(channel)
        return None if bucket is None else bucket.rate

    def _refill(self, bucket: _Bucket) -> float:
        now = self._clock()
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.updated) * bucket.rate)
        bucket.updated = now
        return now

    def available(self, channel: Channel, limit: int) -> int:
        """How many sends `channel` may start now (at most `limit`)."""
        bucket = self._buckets.get(channel)
        if bucket is None:
            return limit
        now = self._refill(bucket)
        if now < bucket.paused_until:
            return 0
        return max(0, min(limit, math.floor(bucket.tokens)))

    def take(self, channel: Channel, n: int) -> None:
        bucket = self._buckets.get(channel)
        if bucket is not None and n:
            self._refill(bucket)
            bucket.tokens -= n

    def wait(self, channel: Channel) -> float:
        """Seconds until `channel` may send again (0 when it may now)."""
        bucket = self._buckets.get(channel)
        if bucket is None:
            return 0.0
        now = self._refill(bucket)
        pause = max(0.0, bucket.paused_until - now)
        refill = max(0.0, (1.0 - bucket.tokens) / bucket.rate)
        return max(pause, refill)

    def pause(self, channel: Channel, seconds: float) -> None:
        """No sends on `channel` for `seconds` (a provider's 429)."""
        bucket = self._buckets.get(channel)
        if bucket is not None and seconds > 0:
            bucket.paused_until = max(bucket.paused_until, self._clock() + seconds)
