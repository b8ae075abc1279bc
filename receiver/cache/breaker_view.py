"""The breaker view gateways read, thousands of times a second, without a database trip.

It holds the stored rows; the state a gateway sees is computed from the row and the clock
(`domain.breaker.effective`), so an open period that has elapsed reads as half-open at
once, before the sweeper has persisted it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import datetime

from receiver.db.breakers import Versioned
from receiver.domain import breaker as domain
from receiver.domain.breaker import Breaker, BreakerPolicy, BreakerState


class BreakerView:
    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._rows: dict[str, Breaker] = {}
        self._versions: dict[str, int] = {}
        # Encoded answers of the HTTP layer (http/breaker_json.py) that depend on the stored
        # row alone (a closed breaker, or no row at all), by tenant: a tenant's entry goes
        # whenever its row changes, so a read finds it with one lookup.
        self.encoded: dict[str, bytes] = {}
        # When the database was last heard from (monotonic): the listener's reload, a
        # notification or its heartbeat. Never heard: the age counts from creation.
        self._heard_at = time.monotonic()
        # Counts the changes, for those who follow them (the console's live board).
        self.generation = 0
        self._changed = asyncio.Event()

    def heard(self) -> None:
        """The listener has just heard from the database: the view is current."""
        self._heard_at = time.monotonic()

    def age_ms(self) -> int:
        """Milliseconds since the view last heard from the database (`view_age_ms`): a
        few seconds at most while the listener follows (its heartbeat is every 5 s);
        growing while the listener is cut off, when the view may be stale."""
        return int((time.monotonic() - self._heard_at) * 1000)

    def replace_all(self, rows: Iterable[Versioned]) -> None:
        rows = list(rows)
        self._rows = {v.breaker.tenant_id: v.breaker for v in rows}
        self._versions = {v.breaker.tenant_id: v.version for v in rows}
        self.encoded = {}
        self._bump()

    def apply(self, rows: Iterable[Versioned]) -> None:
        """Keep the newest copy of each row. This replica applies its own commits at once
        (read your writes) and hears them again through NOTIFY, possibly after a later
        commit of another replica's: versions put them in order."""
        changed = False
        for v in rows:
            tenant_id = v.breaker.tenant_id
            if self._versions.get(tenant_id, -1) >= v.version:
                continue
            self._rows[tenant_id] = v.breaker
            self._versions[tenant_id] = v.version
            self.encoded.pop(tenant_id, None)
            changed = True
        if changed:
            self._bump()

    def _bump(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, generation: int) -> int:
        """The generation, once it differs from `generation`."""
        if self.generation == generation:
            await self._changed.wait()
        return self.generation

    def stored(self, tenant_id: str) -> Breaker | None:
        """The row as stored (not advanced to now), None for a tenant without one."""
        return self._rows.get(tenant_id)

    def get(self, tenant_id: str, *, now: datetime) -> Breaker:
        row = self._rows.get(tenant_id)
        if row is None:
            return Breaker(tenant_id=tenant_id)
        if row.state is BreakerState.CLOSED:
            return row
        return domain.effective(row, now=now, policy=self._policy)

    def not_closed(self, *, now: datetime) -> list[Breaker]:
        out = []
        for row in self._rows.values():
            if row.state is BreakerState.CLOSED:
                continue
            b = domain.effective(row, now=now, policy=self._policy)
            if b.state is not BreakerState.CLOSED:
                out.append(b)
        return sorted(out, key=lambda b: b.tenant_id)

    def all(self) -> list[Breaker]:
        return list(self._rows.values())

    @property
    def policy(self) -> BreakerPolicy:
        return self._policy
