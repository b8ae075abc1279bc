"""Errors the service layer raises. They say what went wrong, not how to answer it: the
HTTP layer (receiver.http.middlewares) maps each kind to one status code."""

from __future__ import annotations


class ReceiverError(Exception):
    error = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ReceiverError):
    error = "invalid_input"


class NotFound(ReceiverError):
    error = "not_found"


class Conflict(ReceiverError):
    error = "conflict"


class DatabaseUnavailable(ReceiverError):
    """Transient: the caller should retry (Alertmanager retries only 5xx)."""

    error = "database_unavailable"


class Unprocessable(InvalidInput):
    """Input that is well-formed but can never be stored or acted on (422): retrying it
    would fail the same way for ever."""

    error = "unprocessable"
