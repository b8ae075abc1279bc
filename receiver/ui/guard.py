"""The console's middleware, for /ui paths only: who is asking (a bearer token or the
session cookie), the CSRF check of every form post made with the cookie, HTML error
pages instead of the API's JSON, and the security headers of every page."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable
from urllib.parse import quote

from aiohttp import web

from receiver.errors import ReceiverError
from receiver.http.middlewares import Handler, status_of
from receiver.ui.auth import OPERATOR, SESSION_COOKIE, ConsoleAuth, Operator
from receiver.ui.render import page

log = logging.getLogger(__name__)

AUTH = web.AppKey("console_auth", ConsoleAuth)
PUBLIC = ("/ui/login", "/ui/static/")
HEADERS = {
    # Styles and scripts come from /ui/static only; no inline script, no framing.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    return page(request, "error.html", status=status, code=status, title=title, detail=detail)


def _bearer(request: web.Request) -> str | None:
    # Bearer only: a browser resends cached Basic credentials by itself (ambient, like a
    # cookie), but never an Authorization: Bearer header.
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _operator(request: web.Request, auth: ConsoleAuth) -> Operator | None:
    token = _bearer(request)
    if token is not None:
        name = auth.identify(token)
        return Operator(name=name, csrf=None) if name else None
    return auth.session(request.cookies.get(SESSION_COOKIE))


async def _signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/ui":
        raise web.HTTPPermanentRedirect("/ui/")
    if request.path.startswith(PUBLIC):
        return await handler(request)
    operator = _operator(request, request.app[AUTH])
    if operator is None:
        if request.method == "GET" and _bearer(request) is None:
            raise web.HTTPSeeOther(f"/ui/login?next={quote(request.path_qs, safe='/')}")
        return error_page(request, 401, "Sign in first", "A valid operator token is needed.")
    request[OPERATOR] = operator
    if request.method not in ("GET", "HEAD") and operator.csrf is not None:
        form = await request.post()
        sent = str(form.get("csrf", "")) or request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), operator.csrf.encode()):
            log.warning(
                "console form refused: CSRF token missing or wrong", extra={"path": request.path}
            )
            return error_page(
                request,
                403,
                "Form refused",
                "This form did not carry this session's CSRF token, so nothing was changed. "
                "Reload the page and submit it again.",
            )
    return await handler(request)


@web.middleware
def console_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    # Not a coroutine: any other path gets the handler's own awaitable back, so the API (the
    # gateways' breaker reads above all) pays no coroutine and frame for the console.
    path = request.path
    if not (path == "/ui" or path.startswith("/ui/")):
        return handler(request)
    return _console(request, handler)


async def _console(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _signed_in(request, handler)
    except ReceiverError as exc:
        response = error_page(request, status_of(exc), exc.error.replace("_", " "), exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_page(request, exc.status, exc.reason, exc.text or "")
    except Exception:
        log.exception("console page failed", extra={"path": request.path})
        response = error_page(request, 500, "Unexpected error", "See the server log.")
    if not response.prepared:
        response.headers.update(HEADERS)
        static = request.path.startswith("/ui/static/")
        response.headers["Cache-Control"] = "public, max-age=86400" if static else "no-store"
    return response
