"""A bounded webhook load on a set of replicas, every answer recorded: who answered, what,
and how long it took. Each delivery carries one alert of its own (a `seq` label makes its
fingerprint unique), so what was committed can be counted per delivery afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from receiver.domain.alerts import fingerprint
from tests.conftest import WEBHOOK_HEADERS
from tests.integration.helpers import ServerProcess, isolating_alert, webhook_payload

# Longer than any bound a test asserts: an answer that never comes is recorded as such.
CLIENT_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class Answer:
    replica: int
    fingerprint: str
    started: float  # time.monotonic()
    elapsed: float
    status: int | None  # None: no HTTP answer (timeout, connection refused or reset)
    error: str = ""

    @property
    def ended(self) -> float:
        return self.started + self.elapsed

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Load:
    http: aiohttp.ClientSession
    replicas: Sequence[ServerProcess]
    run: str  # label value shared by this load's alerts
    workers: int = 6
    max_deliveries: int = 20_000
    max_seconds: float = 120.0
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _next: int = 0

    def delivery(self, n: int) -> tuple[str, dict[str, object]]:
        alert = isolating_alert(f"load-{n % 8}", isolate=False)
        alert["labels"]["run"] = self.run
        alert["labels"]["seq"] = str(n)
        alert["fingerprint"] = fingerprint(alert["labels"])
        return alert["fingerprint"], webhook_payload(alert)

    async def _worker(self, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            n = self._next
            if n >= self.max_deliveries:
                return
            self._next += 1
            replica = n % len(self.replicas)
            fp, body = self.delivery(n)
            started = time.monotonic()
            status: int | None = None
            error = ""
            try:
                async with self.http.post(
                    f"{self.replicas[replica].url}/v1/alertmanager",
                    json=body,
                    headers=WEBHOOK_HEADERS,
                    timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS),
                ) as resp:
                    status = resp.status
                    text = await resp.text()
                    if not 200 <= status < 300:
                        error = text[:300]
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.answers.append(
                Answer(replica, fp, started, time.monotonic() - started, status, error)
            )
            if status != 200:
                # Alertmanager backs off too; this keeps a 2-core machine from spinning.
                await asyncio.sleep(0.02)

    async def run_until_stopped(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        await asyncio.gather(*(self._worker(deadline) for _ in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()

    def ok_since(self, since: float, replica: int) -> int:
        """2xx answers from `replica` to requests started after `since`, counted from its
        last failure on: a streak."""
        streak = 0
        for a in self.answers:
            if a.replica != replica or a.started < since:
                continue
            streak = streak + 1 if a.ok else 0
        return streak

    async def wait_ok(self, count: int, *, since: float, within: float) -> None:
        deadline = time.monotonic() + within
        while any(self.ok_since(since, r) < count for r in range(len(self.replicas))):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"replicas not serving {count} 2xx in a row within {within}s; last answers: "
                    f"{self.answers[-6:]!r}"
                )
            await asyncio.sleep(0.05)
