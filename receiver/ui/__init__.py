"""The operator console at /ui/: server-side pages (aiohttp-jinja2) over the same use
cases the JSON API calls. A layer beside http/ (it may use http's parsing and models):

    auth.py       tokens, the signed session cookie, CSRF, `operator_name`
    guard.py      the middleware: sign-in, CSRF check, HTML errors, security headers
    render.py     templates, filters and the page helper
    login.py      sign in and out
    board.py      the breaker board, its live stream (server-sent events) and overrides
    incidents.py  the incident list and page: acknowledge, resolve, postmortem
    analytics.py  MTTA/MTTR, priorities and trips as SVG charts (charts.py)
    present.py    what the templates show, built from the services' values
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from receiver.settings import Settings
from receiver.ui import analytics, board, incidents, login
from receiver.ui.auth import ConsoleAuth
from receiver.ui.guard import AUTH, console_middleware
from receiver.ui.live import STOPPING, stop_streams
from receiver.ui.render import setup_templates


def setup(app: web.Application, settings: Settings) -> None:
    """Templates, the console's middleware (innermost: inside the API's error handling)
    and its routes."""
    app[AUTH] = ConsoleAuth.from_settings(settings)
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(stop_streams)
    setup_templates(app)
    app.middlewares.append(console_middleware)
    login.add_routes(app)
    board.add_routes(app)
    incidents.add_routes(app)
    analytics.add_routes(app)
