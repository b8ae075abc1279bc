"""What readiness asks of the database: that it answers, and at which schema revision."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.db import migrate


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated). Raises when unreachable."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        return await conn.run_sync(migrate.current_revision)
