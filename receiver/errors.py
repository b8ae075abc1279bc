"""Errors the service layer raises; the HTTP layer maps each to one status code."""

from __future__ import annotations


class ReceiverError(Exception):
    status = 500
    error = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ReceiverError):
    status = 400
    error = "invalid_input"


class NotFound(ReceiverError):
    status = 404
    error = "not_found"


class Conflict(ReceiverError):
    status = 409
    error = "conflict"


class DatabaseUnavailable(ReceiverError):
    """Transient: the caller should retry (Alertmanager retries only 5xx)."""

    status = 503
    error = "database_unavailable"
