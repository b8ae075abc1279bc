"""Group commit: webhook deliveries that arrive together are written in one transaction.

A batch opens with the first delivery submitted and closes `wait` later, or at once when
it holds `max_deliveries`; while `MAX_IN_FLIGHT` batches are being written, a closed batch
keeps gathering until one of them is done, so under load batches grow by themselves
(while PostgreSQL flushes one commit, the next batch fills). Each delivery is answered
only after the commit of its batch:

- the batch commits: every member gets its own result (ingest.ingest_deliveries runs
  them one after the other in the transaction, so copies of one alert across the batch
  collapse into one transition, as across transactions);
- a conflict (serialization failure, deadlock) retries the batch in place
  (db.transaction.in_transaction);
- a transient failure (the database away, the deadline): every member 503;
- anything else (a value the database can never store, a bug): the members are run again
  each alone, so the delivery that can never succeed fails by itself and the others
  commit.

Every member keeps its own deadline (RECEIVER_REQUEST_DEADLINE_SECONDS): the batch runs by
the earliest one, and a member whose deadline passes while it waits is answered 503 (a
commit that lands later makes the sender's retry a duplicate, as for one delivery).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db.transaction import current_deadline, deadline_at
from receiver.errors import DatabaseUnavailable
from receiver.service.ingest import (
    IngestResult,
    WebhookDelivery,
    ingest_deliveries,
    needs_guard,
)

log = logging.getLogger(__name__)

# Batches written at once per process: fewer than the pool's connections, so that the
# background loops and the API always find one.
MAX_IN_FLIGHT = 4


@dataclass
class _Member:
    delivery: WebhookDelivery
    answer: asyncio.Future[IngestResult]
    deadline: float | None


@dataclass
class Batcher:
    """Gathers concurrent deliveries into batches; `submit` answers one delivery.

    Two lanes: deliveries that may trip a breaker take the mass-isolation guard's lock,
    held to commit, so they go one batch at a time per process (the next batch gathers
    meanwhile, and one guard decision covers it) instead of holding connections that wait
    on the lock; the others go MAX_IN_FLIGHT batches at a time."""

    sessions: async_sessionmaker[AsyncSession]
    config: ServiceConfig
    wait_seconds: float
    max_deliveries: int
    _lanes: dict[bool, _Lane] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lanes = {
            guarded: _Lane(self, max_in_flight=1 if guarded else MAX_IN_FLIGHT)
            for guarded in (False, True)
        }

    async def submit(self, delivery: WebhookDelivery) -> IngestResult:
        """The delivery's result once its batch committed; DatabaseUnavailable (503) when
        that did not happen by the deadline; the delivery's own error otherwise."""
        loop = asyncio.get_running_loop()
        member = _Member(delivery, loop.create_future(), current_deadline())
        member.answer.add_done_callback(_consume)
        self._lanes[needs_guard(delivery.alerts)].add(member)
        timeout = None if member.deadline is None else max(0.0, member.deadline - loop.time())
        done, _ = await asyncio.wait({member.answer}, timeout=timeout)
        if not done:
            raise DatabaseUnavailable("webhook delivery: not committed within the deadline")
        return member.answer.result()

    async def close(self) -> None:
        """Write what is gathered and wait for every batch (shutdown)."""
        for lane in self._lanes.values():
            await lane.close()

    async def write(self, batch: Sequence[_Member]) -> None:
        deadlines = [m.deadline for m in batch if m.deadline is not None]
        with deadline_at(min(deadlines) if deadlines else None):
            try:
                results = await ingest_deliveries(
                    sessions=self.sessions,
                    deliveries=[m.delivery for m in batch],
                    config=self.config,
                )
            except DatabaseUnavailable as exc:
                for m in batch:
                    _fail(m, DatabaseUnavailable(exc.detail))
                return
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0], exc)
                    return
                log.info(
                    "a batch failed; its deliveries are written one by one",
                    extra={"deliveries": len(batch), "error": str(exc)},
                )
            else:
                for m, result in zip(batch, results, strict=True):
                    if not m.answer.done():
                        m.answer.set_result(result)
                return
        await asyncio.gather(*(self.write([m]) for m in batch))


@dataclass
class _Lane:
    batcher: Batcher
    max_in_flight: int
    _open: list[_Member] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    _closed: bool = False  # the open batch's wait is over; it goes when a slot is free
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, member: _Member) -> None:
        b = self.batcher
        self._open.append(member)
        if len(self._open) >= b.max_deliveries or b.wait_seconds <= 0:
            self._close()
        elif self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(b.wait_seconds, self._close)

    async def close(self) -> None:
        self._close()
        while self._in_flight or self._open:
            if self._in_flight:
                await asyncio.wait(set(self._in_flight))
            self._start_ready()

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        self._start_ready()

    def _start_ready(self) -> None:
        size = self.batcher.max_deliveries
        while self._closed and self._open and len(self._in_flight) < self.max_in_flight:
            batch = self._open[:size]
            del self._open[:size]
            task = asyncio.get_running_loop().create_task(self.batcher.write(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        # What is left waited already: it goes as soon as a batch finishes, with whatever
        # arrives meanwhile.
        if not self._open:
            self._closed = False

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start_ready()


def _fail(member: _Member, exc: BaseException) -> None:
    if not member.answer.done():
        member.answer.set_exception(exc)


def _consume(answer: asyncio.Future[IngestResult]) -> None:
    """An answer nobody waits for any more (its deadline passed) is not an error."""
    if not answer.cancelled():
        answer.exception()
