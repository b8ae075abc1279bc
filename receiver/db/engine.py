"""Engine and session factory. One AsyncSession per task; never shared."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from receiver.db import json
from receiver.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    connect_args: dict[str, Any] = {"connect_timeout": 3}
    if not settings.db_prepared_statements:
        # No server-side prepared statements: each statement is parsed where it runs,
        # whichever server connection a transaction pooler gives the transaction.
        connect_args["prepare_threshold"] = None
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        # A connection killed by a database restart is found and replaced on checkout,
        # so the service recovers by itself when PostgreSQL comes back.
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args=connect_args,
        # orjson writes datetimes as RFC 3339 strings, which audit details carry.
        json_serializer=json.dumps,
        json_deserializer=json.loads,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)
