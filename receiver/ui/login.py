"""Sign in (an operator token typed once, kept as a signed session cookie) and out."""

from __future__ import annotations

from aiohttp import web

from receiver.ui.auth import COOKIE_PATH, LOGIN_COOKIE, SESSION_COOKIE, set_cookie
from receiver.ui.forms import local_next, login_form
from receiver.ui.guard import AUTH, error_page
from receiver.ui.render import page


def _login_page(request: web.Request, *, next_path: str, error: str | None = None) -> web.Response:
    """The form with a fresh login CSRF token (double submit: cookie and field)."""
    nonce, field = request.app[AUTH].login_challenge()
    response = page(
        request,
        "login.html",
        status=401 if error else 200,
        login_csrf=field,
        next_path=local_next(next_path),
        error=error,
    )
    set_cookie(request, response, LOGIN_COOKIE, nonce, 3600)
    return response


async def login_form_page(request: web.Request) -> web.Response:
    return _login_page(request, next_path=request.query.get("next", "/ui/"))


async def sign_in(request: web.Request) -> web.Response:
    form = await login_form(request)
    auth = request.app[AUTH]
    if not auth.login_answer_ok(request.cookies.get(LOGIN_COOKIE), form.csrf):
        return error_page(
            request, 403, "Form refused", "The sign-in form expired or is not this site's."
        )
    name = auth.identify(form.token, name=form.name or "")
    if name is None:
        return _login_page(request, next_path=form.next, error="That token is not valid.")
    response = web.HTTPSeeOther(local_next(form.next))
    set_cookie(request, response, SESSION_COOKIE, auth.new_session(name, form.token), auth.max_age)
    response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    raise response


async def sign_out(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    raise response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/login", login_form_page)
    app.router.add_post("/ui/login", sign_in)
    app.router.add_post("/ui/logout", sign_out)
