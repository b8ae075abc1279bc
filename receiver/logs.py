"""JSON logs, one object per line, for people grepping at 3 a.m. and for log shippers."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from receiver.db import json

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Anything passed with extra={...} becomes a field of its own.
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # readyz asks alembic for the schema revision on every probe; its INFO lines are noise.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp's access log as JSON. Breaker reads are the hot path and are logged at
    DEBUG, so thousands of gateway reads a second do not drown the interesting lines."""

    @property
    def enabled(self) -> bool:
        # aiohttp skips timing and calling log() altogether when this is False: with
        # RECEIVER_LOG_LEVEL=WARNING the hot path pays nothing for access logs.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        quiet = request.method == "GET" and (
            request.path.endswith("/breaker") or request.path in ("/healthz", "/metrics")
        )
        level = logging.DEBUG if quiet and response.status < 400 else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 2),
                "remote": request.remote,
                "bytes": response.body_length,
            },
        )
