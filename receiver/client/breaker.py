"""A small breaker client for gateways, with a short local cache and batched outcomes.

- `admit(tenant)` answers from a cache refreshed at most every `cache_seconds` per
  tenant: closed admits everything, open nothing, half-open a random `admit_ratio` share
  (the probes).
- `record(tenant, ok)` counts the outcome of a request admitted while half-open; a
  background task reports the counts in batches to POST /v1/tenants/{id}/outcomes, which
  is how the receiver decides to close or re-open.
- If the receiver cannot be reached the client fails open (admits) by default: the
  breaker exists to contain one tenant, and a receiver outage must not take every tenant
  down with it. `fail_open=False` inverts that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    tenant_id: str
    state: str
    allow: bool
    admit_ratio: float
    retry_after: float | None = None  # seconds until the receiver expects a change

    @property
    def probing(self) -> bool:
        return self.state == "half_open"


class BreakerClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        cache_seconds: float = 1.0,
        timeout: float = 0.5,
        report_seconds: float = 1.0,
        fail_open: bool = True,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._cache_seconds = cache_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._report_seconds = report_seconds
        self._fail_open = fail_open
        self._session = session
        self._owns_session = session is None
        self._rng = rng or random.Random()
        self._cache: dict[str, tuple[float, Decision]] = {}
        self._inflight: dict[str, asyncio.Task[Decision]] = {}
        self._outcomes: dict[str, list[int]] = {}
        self._reporter: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if self._reporter is None:
            self._reporter = asyncio.create_task(self._report_forever(), name="breaker-outcomes")

    async def close(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
            self._reporter = None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            await self.flush()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.close()

    # --- decisions ------------------------------------------------------------------

    async def decision(self, tenant_id: str) -> Decision:
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        # One request per tenant at a time, however many requests wait on it.
        task = self._inflight.get(tenant_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch(tenant_id))
            self._inflight[tenant_id] = task
            task.add_done_callback(lambda _: self._inflight.pop(tenant_id, None))
        return await asyncio.shield(task)

    async def admit(self, tenant_id: str) -> Decision | None:
        """The decision if this request may pass, None if it must be shed."""
        d = await self.decision(tenant_id)
        if not d.allow:
            return None
        if d.admit_ratio >= 1.0 or self._rng.random() < d.admit_ratio:
            return d
        return None

    def record(self, tenant_id: str, *, ok: bool, decision: Decision) -> None:
        """Count the outcome of a request admitted under `decision` (probes only)."""
        if not decision.probing:
            return
        counts = self._outcomes.setdefault(tenant_id, [0, 0])
        counts[0 if ok else 1] += 1

    async def _fetch(self, tenant_id: str) -> Decision:
        assert self._session is not None, "call start() first (or use cleanup_ctx)"
        url = f"{self._base}/v1/tenants/{quote(tenant_id, safe='')}/breaker"
        try:
            async with self._session.get(url, headers=self._headers, timeout=self._timeout) as r:
                r.raise_for_status()
                body: dict[str, Any] = await r.json()
            d = Decision(
                tenant_id=tenant_id,
                state=str(body["state"]),
                allow=bool(body["allow"]),
                admit_ratio=float(body["admit_ratio"]),
            )
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            log.warning(
                "breaker lookup failed; %s",
                "admitting" if self._fail_open else "shedding",
                extra={"tenant_id": tenant_id, "error": repr(exc)},
            )
            d = Decision(
                tenant_id=tenant_id,
                state="unknown",
                allow=self._fail_open,
                admit_ratio=1.0 if self._fail_open else 0.0,
            )
        self._cache[tenant_id] = (time.monotonic() + self._cache_seconds, d)
        return d

    # --- outcomes -------------------------------------------------------------------

    async def flush(self) -> None:
        if self._session is None:
            return
        batch, self._outcomes = self._outcomes, {}
        for tenant_id, (success, failure) in batch.items():
            url = f"{self._base}/v1/tenants/{quote(tenant_id, safe='')}/outcomes"
            try:
                async with self._session.post(
                    url,
                    json={"success": success, "failure": failure},
                    headers=self._headers,
                    timeout=self._timeout,
                ) as r:
                    r.raise_for_status()
                    # The answer is the breaker after these outcomes: use it at once.
                    body = await r.json()
                    self._cache[tenant_id] = (
                        time.monotonic() + self._cache_seconds,
                        Decision(
                            tenant_id=tenant_id,
                            state=str(body["state"]),
                            allow=bool(body["allow"]),
                            admit_ratio=float(body["admit_ratio"]),
                        ),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "could not report probe outcomes",
                    extra={"tenant_id": tenant_id, "error": repr(exc)},
                )

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self._report_seconds)
            await self.flush()


def header(name: str) -> Callable[[web.Request], str | None]:
    """Tenant from a request header, the usual gateway convention."""

    def tenant_of(request: web.Request) -> str | None:
        return request.headers.get(name) or None

    return tenant_of


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def breaker_middleware(
    client: BreakerClient, *, tenant_of: Callable[[web.Request], str | None]
) -> Middleware:
    """Sheds isolated tenants with 503 and reports half-open probe outcomes.

    A 5xx answer (or an exception) counts as a failed probe; anything else as healthy."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        tenant_id = tenant_of(request)
        if tenant_id is None:
            return await handler(request)
        decision = await client.admit(tenant_id)
        if decision is None:
            return web.json_response(
                {
                    "error": "tenant_isolated",
                    "detail": f"tenant {tenant_id} is isolated by its circuit breaker; retry later",
                    "tenant_id": tenant_id,
                },
                status=503,
                headers={"Retry-After": "5"},
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            client.record(tenant_id, ok=exc.status < 500, decision=decision)
            raise
        except Exception:
            client.record(tenant_id, ok=False, decision=decision)
            raise
        client.record(tenant_id, ok=response.status < 500, decision=decision)
        return response

    return middleware
