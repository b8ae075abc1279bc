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

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url

from receiver.cache.breaker_view import BreakerView
from receiver.db.breakers import (
    NOTIFY_CHANNEL,
    Versioned,
    breaker_from_row,
    versioned_from_notification,
)

log = logging.getLogger(__name__)

# How often an idle listener proves its connection is alive (a silently dropped TCP
# connection would otherwise look like "no changes" forever).
HEARTBEAT_SECONDS = 5.0
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


class BreakerListener:
    def __init__(self, database_url: str, view: BreakerView) -> None:
        self._conninfo = libpq_conninfo(database_url)
        self._view = view
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self.reloads = 0

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=3,
                    application_name=f"{APPLICATION_NAME} pid={os.getpid()}",
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await self._reload(conn)
                    self.connected.set()
                    self.last_error = None
                    delay = 0.2
                    log.info("breaker listener connected", extra={"rows": len(self._view.all())})
                    await self._consume(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever broke (connection, a bad row), serving stale beats a dead listener:
                # log it, say so in readyz, and start over with a fresh reload.
                if isinstance(exc, psycopg.Error | OSError):
                    log.warning("breaker listener lost its connection", extra={"error": str(exc)})
                else:
                    log.exception("breaker listener failed")
                self.connected.clear()
                self.last_error = str(exc)
                await asyncio.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 5.0)

    async def _reload(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM breakers")
            rows = await cur.fetchall()
        self._view.replace_all(Versioned(r["version"], breaker_from_row(r)) for r in rows)
        self.reloads += 1

    async def _consume(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            async for notify in conn.notifies(timeout=HEARTBEAT_SECONDS):
                try:
                    self._view.apply([versioned_from_notification(notify.payload)])
                except (ValueError, KeyError) as exc:
                    log.error(
                        "ignoring a malformed breaker notification", extra={"error": str(exc)}
                    )
            await conn.execute("SELECT 1")
