"""Authentication and the one place where exceptions become JSON `{error, detail}`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from receiver.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    ReceiverError,
    Unprocessable,
)
from receiver.http.auth import (
    PRINCIPAL,
    Principal,
    Role,
    TokenRegistry,
    gateway_may,
)
from receiver.http.parsing import HttpError, InvalidPayload, json_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WEBHOOK_PATH = "/v1/alertmanager"


# How each kind of service error is answered. 503 is the only transient answer:
# Alertmanager retries 5xx and gives up at once on every 4xx.
STATUS_OF: dict[type[ReceiverError], int] = {
    Unprocessable: 422,
    InvalidInput: 400,
    NotFound: 404,
    Conflict: 409,
    DatabaseUnavailable: 503,
}


def status_of(exc: ReceiverError) -> int:
    if isinstance(exc, HttpError):
        return exc.status
    for kind in type(exc).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]  # type: ignore[index]
    return 500


def error_response(status: int, error: str, detail: str, **extra: object) -> web.Response:
    return json_response({"error": error, "detail": detail, **extra}, status=status)


def receiver_error_response(request: web.Request, exc: ReceiverError) -> web.Response:
    """The JSON answer to a service error: its status, `{error, detail}`, Retry-After on 503."""
    status = status_of(exc)
    extra: dict[str, object] = {}
    if isinstance(exc, InvalidPayload):
        extra["problems"] = exc.problems
    response = error_response(status, exc.error, exc.detail, **extra)
    if status == 503:
        response.headers["Retry-After"] = "5"
        log.warning("answering 503", extra={"path": request.path, "detail": exc.detail})
    return response


def unexpected_error_response(request: web.Request) -> web.Response:
    # Never a traceback to the client; the full one goes to the log.
    log.exception("unhandled error", extra={"path": request.path})
    return error_response(500, "internal_error", "unexpected error; see the server log")


def error_middleware(on_webhook_rejection: Callable[[str], None]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ReceiverError as exc:
            if request.path == WEBHOOK_PATH and status_of(exc) < 500:
                on_webhook_rejection(exc.error)
            return receiver_error_response(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if request.path == WEBHOOK_PATH:
                on_webhook_rejection(exc.reason.lower().replace(" ", "_"))
            detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else ""
            response = error_response(
                exc.status,
                exc.reason.lower().replace(" ", "_"),
                detail or f"{request.method} {request.path}: {exc.reason}",
            )
            for name in ("Allow", "Retry-After"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response
        except Exception:
            return unexpected_error_response(request)

    return middleware


# The attribute that marks a hot read (`hot_read` below).
_HOT: Final = "__receiver_hot_read__"


def hot_read(handler: Handler) -> Handler:
    """Marks a route handler as a hot read, which `hot_read_middleware` calls directly for
    a request with a valid token, past every other middleware. Such a handler answers its
    own errors (it must never raise) and needs nothing the middlewares put on the request
    (no principal: it answers the same to every role that may call it). Only for routes
    the gateway token may call (GATEWAY_ROUTES)."""
    setattr(handler, _HOT, True)
    return handler


def hot_read_middleware(*, tokens: TokenRegistry) -> Middleware:
    """The outermost middleware. The gateways read breakers thousands of times a second and
    each middleware costs them (a call, and a coroutine for the error mapping): a hot read
    with a valid token skips the chain. Everything else, a rejection of a hot read
    included, goes through the chain unchanged, which answers it as for any path."""

    # Not a coroutine, like auth_middleware: it hands back the awaitable it picks.
    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        route_handler = request.match_info.handler
        if getattr(route_handler, _HOT, False):
            principal, _ = tokens.from_header(request.headers.get("Authorization", ""))
            if principal is not None and principal.role is not Role.WEBHOOK:
                return route_handler(request)
        return handler(request)

    return middleware


def _unauthorized(request: web.Request, which: str, presented: bool) -> web.Response:
    log.info(
        "rejected a request without a valid token",
        extra={"path": request.path, "remote": request.remote},
    )
    response = error_response(
        401,
        "unauthorized",
        f"invalid token for {request.path} (the {which} token is expected)"
        if presented
        else f"missing or invalid bearer token (the {which} token)",
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="receiver"'
    return response


async def _answer(response: web.StreamResponse) -> web.StreamResponse:
    return response


def auth_middleware(
    *, tokens: TokenRegistry, on_webhook_rejection: Callable[[str], None]
) -> Middleware:
    # Not a coroutine: it decides synchronously and hands back the handler's own awaitable,
    # so an authenticated request pays no extra coroutine and frame on the hot read path.
    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if not request.path.startswith("/v1/"):
            return handler(request)
        principal, presented = tokens.from_header(request.headers.get("Authorization", ""))
        if request.path == WEBHOOK_PATH:
            if tokens.webhook_open or (principal is not None and principal.role is Role.WEBHOOK):
                return handler(request)
            on_webhook_rejection("unauthorized")
            return _answer(_unauthorized(request, "webhook", presented))
        if principal is None or principal.role is Role.WEBHOOK:
            if tokens.api_open:  # RECEIVER_ALLOW_UNAUTHENTICATED=true
                request[PRINCIPAL] = Principal(Role.ANONYMOUS)
                return handler(request)
            return _answer(_unauthorized(request, "API", presented))
        if principal.role is Role.GATEWAY and not gateway_may(request):
            return _answer(
                error_response(
                    403,
                    "forbidden",
                    f"the gateway token may not {request.method} {request.path}: it may only "
                    "read breakers and post outcomes",
                )
            )
        request[PRINCIPAL] = principal
        return handler(request)

    return middleware
