"""Helpers of the console tests: sign in through the form, read a page's CSRF token."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import API_TOKEN

CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def sign_in(client: Any, *, name: str = "", token: str = API_TOKEN) -> Any:
    page = await client.get("/ui/login")
    assert page.status == 200
    form = {"token": token, "name": name, "csrf": csrf_of(await page.text()), "next": "/ui/"}
    return await client.post("/ui/login", data=form, allow_redirects=False)


async def page_csrf(client: Any, path: str) -> str:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return csrf_of(await resp.text())
