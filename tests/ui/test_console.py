"""The console through HTTP (no browser): access, sessions, CSRF, every page, the live
board's stream, overrides, acknowledge/resolve and the postmortem, against the real
PostgreSQL of the suite."""

from __future__ import annotations

import asyncio
from typing import Any

from receiver.ui.auth import SESSION_COOKIE
from tests.conftest import API_HEADERS, API_TOKEN
from tests.integration.helpers import firing, post_webhook
from tests.ui.console import csrf_of, page_csrf, sign_in


async def test_unauthenticated_pages_redirect_to_the_login(client: Any) -> None:
    for path in ("/ui/", "/ui/incidents", "/ui/analytics", "/ui/incidents/INC-20260101-0001"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/ui/login?next=/ui/"), resp.headers
    resp = await client.post("/ui/tenants/t1/override", data={"action": "force_open"})
    assert resp.status == 401
    assert "text/html" in resp.headers["Content-Type"]


async def test_login_sets_a_strict_session_cookie(client: Any) -> None:
    resp = await sign_in(client, name="alice")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"
    cookie = resp.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/ui"
    assert int(cookie["max-age"]) == 12 * 3600
    assert not cookie["secure"]  # plain http in the test; https sets it
    board = await client.get("/ui/")
    assert board.status == 200
    assert "alice" in await board.text()


async def test_secure_cookie_behind_an_https_proxy(client: Any) -> None:
    page = await client.get("/ui/login")
    form = {"token": API_TOKEN, "csrf": csrf_of(await page.text())}
    resp = await client.post(
        "/ui/login", data=form, headers={"X-Forwarded-Proto": "https"}, allow_redirects=False
    )
    assert resp.status == 303
    assert resp.cookies[SESSION_COOKIE]["secure"]


async def test_a_wrong_token_or_a_forged_login_form_is_refused(client: Any) -> None:
    resp = await sign_in(client, token="not-the-token")
    assert resp.status == 401
    assert SESSION_COOKIE not in resp.cookies
    assert "not valid" in await resp.text()
    forged = await client.post("/ui/login", data={"token": API_TOKEN, "csrf": "x"})
    assert forged.status == 403


async def test_a_bearer_token_works_without_a_session(client: Any) -> None:
    resp = await client.get("/ui/", headers=API_HEADERS)
    assert resp.status == 200
    assert "operator" in await resp.text()
    bad = await client.get("/ui/", headers={"Authorization": "Bearer nope"})
    assert bad.status == 401


async def test_a_tampered_or_foreign_cookie_is_no_session(client: Any) -> None:
    await sign_in(client)
    jar = client.session.cookie_jar
    value = next(c.value for c in jar if c.key == SESSION_COOKIE)
    jar.clear()
    client.session.cookie_jar.update_cookies(
        {SESSION_COOKIE: ("A" if value[0] != "A" else "B") + value[1:]}
    )
    resp = await client.get("/ui/", allow_redirects=False)
    assert resp.status == 303


async def test_logout_ends_the_session(client: Any) -> None:
    await sign_in(client)
    csrf = await page_csrf(client, "/ui/")
    resp = await client.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/login"
    assert (await client.get("/ui/", allow_redirects=False)).status == 303


async def test_force_open_needs_confirmation_a_reason_and_the_csrf_token(
    client: Any, sql: Any
) -> None:
    await sign_in(client, name="bob")
    confirm = await client.get("/ui/tenants/tenant-x/override?action=force_open")
    assert confirm.status == 200
    html = await confirm.text()
    assert "Force open the breaker of tenant-x?" in html
    csrf = csrf_of(html)
    refused = await client.post(
        "/ui/tenants/tenant-x/override", data={"action": "force_open", "reason": "drill"}
    )
    assert refused.status == 403
    assert sql("SELECT count(*) FROM breakers")[0][0] == 0
    assert sql("SELECT count(*) FROM audit_log")[0][0] == 0
    done = await client.post(
        "/ui/tenants/tenant-x/override",
        data={"action": "force_open", "reason": "drill", "csrf": csrf},
        allow_redirects=False,
    )
    assert done.status == 303, await done.text()
    rows = sql("SELECT actor, details->>'reason' FROM audit_log WHERE action = 'breaker.override'")
    assert rows == [("bob", "drill")]
    board = await (await client.get("/ui/")).text()
    assert 'data-tenant="tenant-x" data-state="forced_open"' in board
    again = await client.post(
        "/ui/tenants/tenant-y/override",
        data={"action": "release", "reason": "nothing forced", "csrf": csrf},
    )
    assert again.status == 409
    assert "not" in await again.text()


async def test_the_board_streams_a_change_as_it_happens(client: Any) -> None:
    await sign_in(client)
    resp = await client.get("/ui/board/events")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")

    async def next_event() -> str:
        lines = []
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line == "" and lines:
                if any(x.startswith("event: board") for x in lines):
                    return "\n".join(x.removeprefix("data: ") for x in lines[1:])
                lines = []
            elif line and not line.startswith((":", "retry:")):
                lines.append(line)
        raise AssertionError("stream ended")

    first = await asyncio.wait_for(next_event(), 5)
    assert "No tenant is known yet" in first
    await post_webhook(client, firing("tenant-live"))
    update = await asyncio.wait_for(next_event(), 5)
    assert 'data-tenant="tenant-live" data-state="open"' in update
    resp.close()


async def test_pages_escape_what_alerts_and_people_wrote(client: Any) -> None:
    body = firing("tenant-esc")
    body["alerts"][0]["annotations"]["runbook_url"] = "javascript:alert(1)"
    await post_webhook(client, body)
    await sign_in(client)
    (incident_id,) = [
        i["id"]
        for i in (await (await client.get("/v1/incidents", headers=API_HEADERS)).json())[
            "incidents"
        ]
    ]
    csrf = await page_csrf(client, f"/ui/incidents/{incident_id}")
    saved = await client.post(
        f"/ui/incidents/{incident_id}/postmortem",
        data={
            "csrf": csrf,
            "root_cause": "<script>alert(1)</script> **bold**",
            "five_whys": "why one\nwhy two",
            "action_items": "Add a guard | platform-team | 2030-01-31",
        },
        allow_redirects=False,
    )
    assert saved.status == 303, await saved.text()
    html = await (await client.get(f"/ui/incidents/{incident_id}")).text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html
    assert "<strong>bold</strong>" in html
    assert 'href="javascript:' not in html
    assert "Add a guard" in html


async def test_acknowledge_and_resolve_from_the_page(client: Any, sql: Any) -> None:
    await post_webhook(client, firing("tenant-ack"))
    await sign_in(client, name="carol")
    listing = await (await client.get("/ui/incidents?status=open&priority=&tenant=")).text()
    (incident_id,) = [r[0] for r in sql("SELECT id FROM incidents")]
    assert incident_id in listing and "due in" in listing
    csrf = await page_csrf(client, f"/ui/incidents/{incident_id}")
    ack = await client.post(
        f"/ui/incidents/{incident_id}/acknowledge", data={"csrf": csrf, "note": "on it"}
    )
    assert ack.status == 200  # followed the redirect back to the page
    assert "acknowledged by <strong>carol</strong>" in await ack.text()
    twice = await client.post(f"/ui/incidents/{incident_id}/acknowledge", data={"csrf": csrf})
    assert twice.status == 409
    res = await client.post(f"/ui/incidents/{incident_id}/resolve", data={"csrf": csrf})
    assert res.status == 200
    assert sql("SELECT status, acknowledged_by, resolved_by FROM incidents") == [
        ("resolved", "carol", "carol")
    ]


async def test_analytics_and_filters(client: Any) -> None:
    await post_webhook(client, firing("tenant-an"))
    await sign_in(client)
    for days in (7, 30, 90):
        page = await client.get(f"/ui/analytics?days={days}")
        assert page.status == 200
        html = await page.text()
        assert html.count("<svg") == 3
        assert "tenant-an" in html
    assert (await client.get("/ui/analytics?days=3")).status == 400
    assert (await client.get("/ui/?state=open&tier=")).status == 200
    assert (await client.get("/ui/?state=bogus")).status == 422
    assert (await client.get("/ui/incidents/INC-nope")).status == 404


async def test_security_headers(client: Any) -> None:
    resp = await client.get("/ui/login")
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    css = await client.get("/ui/static/console.css")
    assert css.status == 200 and "prefers-color-scheme: dark" in await css.text()


async def test_a_named_operator_token_is_its_own_actor_and_the_gateway_token_no_operator(
    app_client: Any, sql: Any, tmp_path: Any
) -> None:
    alice, gateway = "alice-token-0123456789", "gateway-token-0123456789"
    operators = tmp_path / "operators"
    operators.write_text(f"alice {alice}\n")
    client = await app_client(operator_tokens_file=operators, gateway_token=gateway)
    # The gateway token reads breakers; it never opens the console.
    refused = await sign_in(client, token=gateway)
    assert refused.status == 401
    assert SESSION_COOKIE not in refused.cookies
    assert (await client.get("/ui/", headers={"Authorization": f"Bearer {gateway}"})).status in (
        401,
        403,
    )
    # Alice signs in as "mallory": her token names her, whatever the form says.
    signed = await sign_in(client, token=alice, name="mallory")
    assert signed.status == 303, await signed.text()
    csrf = await page_csrf(client, "/ui/tenants/tenant-z/override?action=force_open")
    done = await client.post(
        "/ui/tenants/tenant-z/override",
        data={"action": "force_open", "reason": "drill", "csrf": csrf},
        allow_redirects=False,
    )
    assert done.status == 303, await done.text()
    assert sql("SELECT actor FROM audit_log WHERE action = 'breaker.override'") == [("alice",)]
