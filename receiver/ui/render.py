"""Templates (package data in receiver/ui/templates), their filters, and `page`: a
template rendered with what every page shows (the operator, the CSRF token, the clock)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from receiver.ui import present
from receiver.ui.auth import OPERATOR

STATIC = Path(__file__).resolve().parent / "static"
NAV = (("/ui/", "Breakers"), ("/ui/incidents", "Incidents"), ("/ui/analytics", "Analytics"))


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("receiver.ui", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        clock=present.clock,
        iso=present.iso,
        duration=present.duration,
        percent=present.percent,
        path_segment=lambda v: quote(str(v), safe=""),
    )
    env.globals.update(
        ago=present.ago,
        until=present.until,
        nav=NAV,
        static_version=_static_version(),
        safe_url=present.safe_url,
    )
    app.router.add_static("/ui/static", STATIC, name="console-static")


def context(request: web.Request, **values: Any) -> dict[str, Any]:
    operator = request.get(OPERATOR)
    return {
        "operator": operator,
        "csrf": operator.csrf or "" if operator else "",
        "now": datetime.now(UTC),
        "path": request.path,
        **values,
    }


def page(request: web.Request, template: str, *, status: int = 200, **values: Any) -> web.Response:
    return aiohttp_jinja2.render_template(
        template, request, context(request, **values), status=status
    )


def fragment(request: web.Request, template: str, **values: Any) -> str:
    """A template rendered to text (the board's live updates)."""
    env = aiohttp_jinja2.get_env(request.app)
    return env.get_template(template).render(context(request, **values))
