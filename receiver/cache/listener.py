"""Keeps a BreakerView current: LISTEN on the breakers channel, reload on every (re)connect.

LISTEN comes before the reload, so no change committed in between is lost; versions make
the overlap harmless. If the connection drops the view keeps serving its last state (a
gateway is better served by slightly old breakers than by none), /readyz reports the
listener down, and the listener reconnects with backoff and reloads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url

from receiver.cache.breaker_view import BreakerView
from receiver.db import breakers as breaker_rows
from receiver.db.engine import keepalive_args, server_options

log = logging.getLogger(__name__)

# How often an idle listener proves its connection is alive (a silently dropped TCP
# connection would otherwise look like "no changes" forever), and how long the proof may
# take: a heartbeat unanswered by then means the connection is dead (readyz turns red at
# once, the listener reconnects and reloads). Keepalives (db/engine.py) and a statement
# timeout bound the connection's other waits.
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TIMEOUT_SECONDS = 3.0
STATEMENT_TIMEOUT_MS = 30_000
# How the listener's connection shows in pg_stat_activity (with the process id), so an
# operator can tell each replica's listener from the pool's connections.
APPLICATION_NAME = "receiver-listener"


def libpq_conninfo(sqlalchemy_url: str) -> str:
    """The libpq connection string SQLAlchemy's psycopg dialect would connect with, so the
    listener reaches the same servers as the pool in every URL form SQLAlchemy accepts
    (multi-host `?host=h1,h2&port=p1,p2` and `?host=h1:p1&host=h2:p2` included)."""
    _, params = PGDialect_psycopg().create_connect_args(make_url(sqlalchemy_url))
    params.pop("context", None)
    return make_conninfo(**params)


class HeartbeatTimeout(Exception):
    """The database did not answer the listener's heartbeat in time."""


class BreakerListener:
    def __init__(self, database_url: str, view: BreakerView) -> None:
        self._conninfo = libpq_conninfo(database_url)
        self._connect_args = {
            **keepalive_args(),
            "options": server_options(database_url, statement_timeout=STATEMENT_TIMEOUT_MS),
        }
        self._view = view
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self.reloads = 0

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name=f"{APPLICATION_NAME} pid={os.getpid()}",
                    **self._connect_args,
                )
                # Closed, not left through `async with`: that would first wait for the
                # connection's lock, which an abandoned heartbeat may hold for seconds.
                try:
                    await breaker_rows.listen(conn)
                    await self._reload(conn)
                    self.connected.set()
                    self.last_error = None
                    delay = 0.2
                    log.info("breaker listener connected", extra={"rows": len(self._view.all())})
                    await self._consume(conn)
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever broke (connection, a bad row), serving stale beats a dead listener:
                # log it, say so in readyz, and start over with a fresh reload.
                if isinstance(exc, psycopg.Error | OSError | HeartbeatTimeout):
                    log.warning("breaker listener lost its connection", extra={"error": str(exc)})
                else:
                    log.exception("breaker listener failed")
                self.connected.clear()
                self.last_error = str(exc) or type(exc).__name__
                await asyncio.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 5.0)

    async def _reload(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._view.replace_all(await breaker_rows.load_all(conn))
        self._view.heard()
        self.reloads += 1

    async def _consume(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=HEARTBEAT_SECONDS):
                self._view.heard()
                try:
                    self._view.apply([breaker_rows.versioned_from_notification(notify.payload)])
                except (ValueError, KeyError) as exc:
                    log.error(
                        "ignoring a malformed breaker notification", extra={"error": str(exc)}
                    )
            await self._heartbeat(conn)

    async def _heartbeat(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """One round trip within HEARTBEAT_TIMEOUT_SECONDS, or the connection is dead.

        Not asyncio.wait_for: cancelling a query makes psycopg ask the server to cancel
        it and wait for the answer, seconds more on a dead connection; readyz must turn
        red when the heartbeat is late, not after that. The ping is abandoned instead and
        the connection closed under it (`async with` in `run`)."""
        ping = asyncio.ensure_future(breaker_rows.ping(conn))
        done, _ = await asyncio.wait({ping}, timeout=HEARTBEAT_TIMEOUT_SECONDS)
        if ping in done:
            ping.result()
            self._view.heard()
            return
        self.connected.clear()
        self.last_error = f"no answer to the heartbeat within {HEARTBEAT_TIMEOUT_SECONDS:g}s"
        ping.cancel()
        ping.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise HeartbeatTimeout(self.last_error)
