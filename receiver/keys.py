"""Typed application keys: what the app factory puts on `web.Application` and the handlers
and background jobs read. One module that imports no handler, so that no handler needs
`receiver.app` (which imports every handler)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from receiver.cache.breaker_view import BreakerView
from receiver.cache.listener import BreakerListener
from receiver.channels.base import Sender
from receiver.channels.health import ChannelHealth
from receiver.config import ServiceConfig
from receiver.domain.notification import Channel
from receiver.metrics import Metrics
from receiver.service.group_commit import Batcher
from receiver.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
CONFIG = web.AppKey("config", ServiceConfig)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
VIEW = web.AppKey("breaker_view", BreakerView)
LISTENER = web.AppKey("breaker_listener", BreakerListener)
METRICS = web.AppKey("metrics", Metrics)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
SENDERS = web.AppKey("senders", dict[Channel, Sender])
CHANNEL_HEALTH = web.AppKey("channel_health", ChannelHealth)
BATCHER = web.AppKey("batcher", Batcher)
