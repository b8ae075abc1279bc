"""Running one unit of work in one transaction, with the retries PostgreSQL asks for, within
a deadline, on the database's clock.

Errors, by what the caller can do about them (README "Errors"):
- a conflict between concurrent transactions is retried in place (ATTEMPTS times);
- a transient failure (SQLSTATE classes 08, 40, 53, 57P0x, the timeouts; a lost
  connection; the deadline; conflicts that outlast the retries) is DatabaseUnavailable:
  503, the caller retries later and may then succeed;
- a value the database can never store (SQLSTATE classes 22 and 54: out of range, too
  long for an index row) is Unprocessable: 422, retrying would fail the same way forever;
- anything else is a bug and propagates unchanged (500).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import psycopg.errors
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.errors import DatabaseUnavailable, ReceiverError, Unprocessable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Concurrent copies of one delivery (Alertmanager HA peers) can collide; PostgreSQL says
# "try again" with these, and the retry sees the other copy's committed result.
_RETRY_IN_PLACE = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.UniqueViolation,
)
ATTEMPTS = 5
# SQLSTATE classes and codes that say "not now" rather than "never": connection exceptions,
# transaction rollbacks (serialization, deadlock), insufficient resources, operator
# intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now,
# 57P05 idle session timeout), and the timeouts: 57014 (statement_timeout, or a cancel),
# 55P03 (lock_timeout), 25P03 (idle_in_transaction_session_timeout). 25006 (read-only
# transaction) is a failover in progress: the primary is a standby for a moment.
_TRANSIENT_CLASSES = ("08", "40", "53", "57P")
_TRANSIENT_STATES = frozenset({"57014", "55P03", "25P03", "25006"})
# The input itself cannot be stored: data exceptions (22: out of range, invalid text) and
# program limits (54: an index row over its size limit, too many columns).
_UNSTORABLE_CLASSES = ("22", "54")

# The absolute deadline (event loop time) of the transactions run in this context.
_DEADLINE: ContextVar[float | None] = ContextVar("transaction_deadline", default=None)
# Where a session keeps its transaction's database time (AsyncSession.info).
_NOW = "receiver.now"


def _sqlstate(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.TimeoutError | ConnectionError | OSError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = _sqlstate(exc)
        if state is None:
            # No answer from the server at all: the connection broke (psycopg raises
            # OperationalError or InterfaceError without a SQLSTATE).
            return isinstance(exc.orig, psycopg.OperationalError | psycopg.InterfaceError)
        return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES
    return False


def _is_unstorable(exc: BaseException) -> bool:
    state = _sqlstate(exc)
    return state is not None and state.startswith(_UNSTORABLE_CLASSES)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every `in_transaction` inside the block commits, or raises DatabaseUnavailable, by
    `seconds` from now (the HTTP layer wraps a webhook in it)."""
    with deadline_at(asyncio.get_running_loop().time() + seconds):
        yield


def current_deadline() -> float | None:
    """The absolute deadline (event loop time) of this context, None when there is none."""
    return _DEADLINE.get()


@contextlib.contextmanager
def deadline_at(at: float | None) -> Iterator[None]:
    """As `deadline`, with an absolute event loop time (None: no deadline): a batch of
    deliveries (service/group_commit.py) runs by the earliest deadline of its members."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock, read once per transaction: every decision of one transaction
    uses one instant, and replicas whose clocks disagree still decide alike. A statement
    that already returns the time hands it over with `remember_now`, which saves this
    round trip."""
    now = session.info.get(_NOW)
    if now is None:
        now = session.info[_NOW] = await session.scalar(select(func.statement_timestamp()))
    assert isinstance(now, datetime)
    return now


def remember_now(session: AsyncSession, now: datetime) -> datetime:
    """Record the transaction's time, read by one of its own statements."""
    return session.info.setdefault(_NOW, now)  # type: ignore[no-any-return]


@dataclass
class _Progress:
    committing: bool = False


async def in_transaction(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    what: str,
) -> T:
    """Run `work` in one transaction, committed before this returns.

    Retries conflicts between concurrent transactions in place; turns an unreachable
    database, and a deadline reached (see `deadline`), into DatabaseUnavailable (503) and
    a value the database cannot store into Unprocessable (422). Anything else propagates
    unchanged.

    Within a deadline the attempts run in a task of their own, so that the answer comes
    by the deadline whatever the database does (psycopg's cancellation of a running query
    can itself wait seconds for a server that does not answer). At the deadline:
    - before COMMIT was sent, the task is cancelled: psycopg cancels the statement in the
      server and the session rolls back; nothing was committed, and the 503 is exact;
    - while COMMIT is in flight, the task is NOT cancelled (a cancel landing inside the
      commit would leave its outcome unknown to us and roll nothing back): it finishes
      in the background and logs its outcome, and the caller gets 503. If the commit
      then succeeds, the sender's retry is a duplicate, which every use case recognises
      (a delivery by its alert instances) and answers 200 without a second effect.
    A result is returned only once COMMIT has returned: never a 2xx for work that was
    not committed."""
    deadline_at = _DEADLINE.get()
    progress = _Progress()
    if deadline_at is None:
        return await _attempts(sessions, work, what=what, progress=progress)
    task = asyncio.ensure_future(_attempts(sessions, work, what=what, progress=progress))
    loop = asyncio.get_running_loop()
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline_at - loop.time()))
    except asyncio.CancelledError:
        _abandon(task, progress, what=what)
        raise
    if task in done:
        return task.result()
    _abandon(task, progress, what=what)
    raise DatabaseUnavailable(
        f"{what}: not committed within the deadline"
        + (
            " (the commit's outcome is not known yet; a retry is safe)"
            if progress.committing
            else ""
        )
    )


def _abandon(task: asyncio.Future[T], progress: _Progress, *, what: str) -> None:
    """Stop waiting for `task`: cancel it unless it is committing, and log how it ends."""
    if not progress.committing:
        task.cancel()

    def outcome(t: asyncio.Future[T]) -> None:
        if t.cancelled():
            log.info("%s abandoned at the deadline, rolled back", what)
        elif t.exception() is not None:
            log.warning("%s failed after its deadline", what, extra={"error": str(t.exception())})
        else:
            log.warning(
                "%s committed after its deadline (answered 503; a retry is a duplicate)", what
            )

    task.add_done_callback(outcome)


async def _attempts(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    what: str,
    progress: _Progress,
) -> T:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await _attempt(sessions, work, progress)
        except sa_exc.DBAPIError as exc:
            if isinstance(exc.orig, _RETRY_IN_PLACE):
                if attempt < ATTEMPTS:
                    log.info(
                        "retrying %s after a conflict",
                        what,
                        extra={"attempt": attempt, "sqlstate": _sqlstate(exc)},
                    )
                    await asyncio.sleep(random.uniform(0.005, 0.05) * attempt)
                    continue
                # Still colliding after every attempt: contention, not bad input. The
                # sender's retry, later, sees the other transactions' results.
                raise DatabaseUnavailable(f"{what}: kept conflicting with concurrent work") from exc
            mapped = _classified(exc, what)
            if mapped is None:
                raise
            raise mapped from exc
        except Exception as exc:
            if _is_transient(exc):
                raise DatabaseUnavailable(f"{what}: database unavailable ({exc})") from exc
            raise
    raise AssertionError("unreachable")


def _classified(exc: sa_exc.DBAPIError, what: str) -> ReceiverError | None:
    """The error to answer `exc` with; None when it is a bug (it propagates: 500)."""
    if _is_transient(exc):
        return DatabaseUnavailable(f"{what}: database unavailable ({exc.orig})")
    if _is_unstorable(exc):
        # The message is PostgreSQL's (e.g. "index row size 3016 exceeds maximum 2704"),
        # never the value itself.
        first_line = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
        return Unprocessable(f"{what}: the database cannot store this input: {first_line}")
    return None


async def _attempt(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    progress: _Progress,
) -> T:
    async with sessions() as session:  # closing rolls back whatever was not committed
        result = await work(session)
        progress.committing = True
        try:
            await session.commit()
        finally:
            progress.committing = False
        return result
