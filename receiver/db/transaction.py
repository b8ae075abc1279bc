"""Running one unit of work in one transaction, with the retries PostgreSQL asks for."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg.errors
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Concurrent copies of one delivery (Alertmanager HA peers) can collide; PostgreSQL says
# "try again" with these, and the retry sees the other copy's committed result.
_RETRY_IN_PLACE = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.UniqueViolation,
)
# The database is away or restarting: the caller (Alertmanager, a gateway) retries later.
_TRANSIENT = (
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
    psycopg.errors.ConnectionException,
    psycopg.errors.QueryCanceled,
    psycopg.errors.InsufficientResources,
    psycopg.errors.ReadOnlySqlTransaction,
)
ATTEMPTS = 5


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.TimeoutError | ConnectionError | OSError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        return isinstance(orig, (*_TRANSIENT, psycopg.OperationalError, psycopg.InterfaceError))
    return False


async def in_transaction(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    what: str,
) -> T:
    """Run `work` in one transaction, committed before this returns.

    Retries conflicts between concurrent transactions in place; turns an unreachable
    database into DatabaseUnavailable (503). Anything else propagates unchanged."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with sessions() as session, session.begin():
                return await work(session)
        except sa_exc.DBAPIError as exc:
            if isinstance(exc.orig, _RETRY_IN_PLACE) and attempt < ATTEMPTS:
                log.info(
                    "retrying %s after a conflict",
                    what,
                    extra={"attempt": attempt, "sqlstate": getattr(exc.orig, "sqlstate", None)},
                )
                await asyncio.sleep(random.uniform(0.005, 0.05) * attempt)
                continue
            if _is_transient(exc):
                raise DatabaseUnavailable(f"{what}: database unavailable ({exc.orig})") from exc
            raise
        except Exception as exc:
            if _is_transient(exc):
                raise DatabaseUnavailable(f"{what}: database unavailable ({exc})") from exc
            raise
    raise AssertionError("unreachable")
