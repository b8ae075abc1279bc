"""The console's pure parts: SVG charts escape and scale, text filters, safe links, the
Markdown renderer escapes HTML, the session cookie's rules."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import pytest

from receiver.http.auth import TokenRegistry
from receiver.ui import charts, present
from receiver.ui.auth import ConsoleAuth
from receiver.ui.forms import action_items, local_next


def test_charts_escape_labels_and_describe_their_data() -> None:
    svg = charts.hbar_chart("Trips", [("<b>evil</b>", 3), ("tenant-a", 1)])
    assert "<b>evil</b>" not in svg and "&lt;b&gt;evil&lt;/b&gt;" in svg
    assert svg.startswith("<svg") and 'role="img"' in svg and "<title" in svg
    line = charts.line_chart(
        "Times",
        [charts.Series("MTTA", "series-1", {date(2026, 1, 2): 90.0, date(2026, 1, 3): 30.0})],
        start=date(2026, 1, 1),
        end=date(2026, 1, 5),
    )
    assert line.count("<circle") == 2 and line.count("<polyline") == 1
    assert "2026-01-02 1 min 30 s" in line
    assert "no incidents" in charts.line_chart(
        "Times", [], start=date(2026, 1, 1), end=date(2026, 1, 2)
    )
    assert "no incidents" in charts.bar_chart("P", [("P0", 0, "prio-p0")])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0, "0 s"),
        (59.9, "59 s"),
        (61, "1 min 01 s"),
        (7380, "2 h 03 min"),
        (90000, "1 d 1 h"),
        (-5, "-5 s"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert present.duration(seconds) == text


def test_only_http_links_are_followed() -> None:
    assert present.safe_url("https://runbooks.example/x") == "https://runbooks.example/x"
    for bad in ("javascript:alert(1)", "data:text/html,x", "//evil", "", None):
        assert present.safe_url(bad) is None


def test_markdown_escapes_html_and_unsafe_links() -> None:
    html = present.markdown_html("# T\n\n<img src=x onerror=alert(1)> [x](javascript:alert(1))\n")
    assert "<img" not in html and "&lt;img" in html
    assert 'href="javascript' not in html
    assert "<h1>T</h1>" in html
    assert "<table>" in present.markdown_html("| a | b |\n|---|---|\n| 1 | 2 |\n")


def test_after_login_only_console_paths() -> None:
    assert local_next("/ui/incidents?status=open") == "/ui/incidents?status=open"
    for bad in ("https://evil.example/", "//evil.example/ui/", "/v1/breakers", "/ui\\x", None):
        assert local_next(bad) == "/ui/"


def test_action_item_lines() -> None:
    assert action_items("Fix it | sre | 2030-01-01\n\nMore | db-team | 2030-02-01 | done") == [
        {"description": "Fix it", "owner_team": "sre", "due": "2030-01-01"},
        {"description": "More", "owner_team": "db-team", "due": "2030-02-01", "status": "done"},
    ]


def _tokens(api: str) -> TokenRegistry:
    return TokenRegistry(webhook=None, api=api.encode(), gateway=None, operators=())


def test_sessions_are_signed_expire_and_die_with_their_token() -> None:
    auth = ConsoleAuth(key=b"k" * 32, tokens=_tokens("tok"), max_age=60)
    assert auth.identify("nope") is None
    assert auth.identify("tok") == "operator"
    assert auth.identify("tok", name=" alice ") == "alice"
    cookie = auth.new_session("alice", "tok")
    op = auth.session(cookie)
    assert op is not None and op.name == "alice" and op.csrf
    # (the first character: the last one of base64 may carry only padding bits)
    assert auth.session(("A" if cookie[0] != "A" else "B") + cookie[1:]) is None
    # Another replica with the same key reads it; another key, or a rotated token, does not.
    assert ConsoleAuth(key=b"k" * 32, tokens=_tokens("tok"), max_age=60).session(cookie) == op
    assert ConsoleAuth(key=b"j" * 32, tokens=_tokens("tok"), max_age=60).session(cookie) is None
    assert ConsoleAuth(key=b"k" * 32, tokens=_tokens("new"), max_age=60).session(cookie) is None
    expired = ConsoleAuth(key=b"k" * 32, tokens=_tokens("tok"), max_age=0)
    time.sleep(1.1)
    assert expired.session(cookie) is None


def test_the_default_key_is_shared_by_replicas_with_the_same_api_token(settings) -> None:  # type: ignore[no-untyped-def]
    a = ConsoleAuth.from_settings(settings)
    b = ConsoleAuth.from_settings(settings)
    assert b.session(a.new_session("x", settings.api_token.get_secret_value())) is not None


def test_iso_is_utc() -> None:
    assert present.iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05+00:00"


def test_a_session_key_file_is_read_and_a_short_one_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from receiver.settings import Settings, SettingsError

    short, good = tmp_path / "short", tmp_path / "good"
    short.write_text("replace-me\n")
    good.write_text("x" * 48 + "\n")
    api, webhook = "api-token-" + "t" * 16, "webhook-token-" + "w" * 16
    base = {
        "database_url": "postgresql+psycopg://u@h/db",
        "api_token": api,
        "webhook_token": webhook,
    }
    with pytest.raises(SettingsError, match="at least 32"):
        Settings(**base, ui_session_key_file=short).check_startable()
    settings = Settings(**base, ui_session_key_file=good)
    settings.check_startable()
    auth = ConsoleAuth.from_settings(settings)
    other = ConsoleAuth(key=b"x" * 48, tokens=_tokens(api), max_age=60)
    assert other.session(auth.new_session("x", api)) is not None
