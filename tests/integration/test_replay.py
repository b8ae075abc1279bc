"""`python -m receiver replay` against what the running service recorded.

Random histories (fires, resolves, copies, probe outcomes, overrides, many tenants) go
through the service (create_app, HTTP), on a controlled clock: the handlers and the
sweeper read `CLOCK` (their module's `datetime` is patched), and the test is the sweeper,
sweeping at the very moment each breaker falls due (the replay's sweeper model; the
live sweeper is up to `sweep_interval_seconds` later). The baseline replay must then
reproduce what was recorded: trips, suppressions, isolated seconds, incidents.
"""

from __future__ import annotations

import asyncio
import copy
import html.parser
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from receiver.cli import main as cli_main
from receiver.domain.alerts import fingerprint
from receiver.keys import CONFIG, SESSIONS
from receiver.service import breakers as breaker_service
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS, libpq, make_settings, truncate_all
from tests.integration.helpers import isolating_alert, webhook_payload


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


CLOCK = Clock()


class _Datetime(datetime):
    """datetime whose now() is CLOCK's."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return CLOCK.now if tz is not None else CLOCK.now.replace(tzinfo=None)


async def _database_now(_session: Any) -> datetime:
    return CLOCK.now


@pytest.fixture
def controlled_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The service decides on the database's clock (db.transaction.database_now); here that
    clock is CLOCK, moved by the test, and the process's own clock with it."""
    for module in ("receiver.service.ingest", "receiver.service.breakers"):
        monkeypatch.setattr(f"{module}.database_now", _database_now)
    for module in ("receiver.http.webhook", "receiver.http.breakers", "receiver.app"):
        monkeypatch.setattr(f"{module}.datetime", _Datetime)
    return CLOCK


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- driving the service -------------------------------------------------------------------

OPEN, PROBES, PROBATION = 60.0, 4, 30.0


@dataclass
class Driver:
    client: TestClient
    url: str
    firing: dict[str, str] = field(default_factory=dict)  # tenant -> startsAt firing
    ended: list[tuple[str, str]] = field(default_factory=list)  # resolved (tenant, startsAt)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def _due(self) -> datetime | None:
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            row = conn.execute("SELECT min(next_check_at) FROM breakers").fetchone()
        return row[0] if row else None

    async def advance(self, to: datetime) -> None:
        """Move the clock to `to`, sweeping at each moment a breaker falls due."""
        app = self.client.server.app
        for _ in range(10_000):
            due = self._due()
            if due is None or due > to:
                break
            CLOCK.now = max(CLOCK.now, due)
            await breaker_service.sweep(sessions=app[SESSIONS], config=app[CONFIG])
        CLOCK.now = max(CLOCK.now, to)

    async def post(self, body: dict[str, Any]) -> None:
        resp = await self.client.post("/v1/alertmanager", json=body, headers=WEBHOOK_HEADERS)
        assert resp.status == 200, await resp.text()
        self.sent.append(body)

    async def fire(self, tenants: list[str]) -> None:
        alerts = []
        for t in sorted(set(tenants)):
            starts = iso(CLOCK.now - timedelta(seconds=30))
            if t in self.firing:
                # A new instance of the same labels while the old one fires.
                self.ended.append((t, self.firing[t]))
            self.firing[t] = starts
            alerts.append(isolating_alert(t, starts_at=starts))
        await self.post(webhook_payload(*alerts))

    async def resolve(self, tenant: str) -> None:
        if tenant in self.firing:
            starts = self.firing.pop(tenant)
        elif self.ended:
            tenant, starts = self.ended[-1]  # a late, repeated resolve
        else:
            return
        self.ended.append((tenant, starts))
        alert = isolating_alert(tenant, status="resolved", starts_at=starts, ends_at=iso(CLOCK.now))
        await self.post(webhook_payload(alert))

    async def platform(self, firing: bool) -> None:
        alert = isolating_alert("x", starts_at="2026-11-22T14:00:00Z")
        alert["labels"] = {"alertname": "PlatformDown", "scope": "platform", "severity": "page"}
        alert["fingerprint"] = fingerprint(alert["labels"])
        if not firing:
            alert["status"], alert["endsAt"] = "resolved", iso(CLOCK.now)
        await self.post(webhook_payload(alert))

    async def copy(self, index: int) -> None:
        if self.sent:
            await self.post(copy.deepcopy(self.sent[index % len(self.sent)]))

    async def outcomes(self, tenant: str, success: int, failure: int) -> None:
        resp = await self.client.post(
            f"/v1/tenants/{tenant}/outcomes",
            json={"success": success, "failure": failure},
            headers=API_HEADERS,
        )
        assert resp.status == 200, await resp.text()

    async def override(self, tenant: str, action: str) -> None:
        resp = await self.client.post(
            f"/v1/tenants/{tenant}/breaker",
            json={"action": action, "reason": "replay test", "actor": "tester"},
            headers=API_HEADERS,
        )
        assert resp.status in (200, 409), await resp.text()

    async def configure(self, tenant: str, tier: str) -> None:
        resp = await self.client.put(
            f"/v1/tenants/{tenant}", json={"tier": tier}, headers=API_HEADERS
        )
        assert resp.status == 200, await resp.text()


TENANTS = [f"tenant-{i}" for i in range(7)]
tenant = st.sampled_from(TENANTS)
fire = st.tuples(st.just("fire"), st.lists(tenant, min_size=1, max_size=3))
actions = st.one_of(
    fire,
    fire,
    st.tuples(st.just("fire"), st.lists(tenant, min_size=1, max_size=1)),
    st.tuples(st.just("resolve"), tenant),
    st.tuples(st.just("resolve"), tenant),
    st.tuples(st.just("copy"), st.integers(0, 50)),
    st.tuples(st.just("outcomes"), tenant, st.integers(0, 4), st.integers(0, 4)),
    st.tuples(
        st.just("override"), tenant, st.sampled_from(["force_open", "force_close", "release"])
    ),
    st.tuples(st.just("platform"), st.booleans()),
)
# Steps of up to 45 s: events land in open periods (60 s), half-open and probation (30 s).
steps = st.tuples(
    st.tuples(st.integers(1, 45_000), fire),
    st.lists(st.tuples(st.integers(1, 45_000), actions), min_size=3, max_size=24),
).map(lambda p: [p[0], *p[1]])


async def drive(
    url: str, history: list[tuple[int, Any]], tiers: dict[str, str], percent: int
) -> tuple[datetime, datetime]:
    from receiver.app import create_app

    CLOCK.now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    start = CLOCK.now
    app = create_app(
        make_settings(
            url,
            sweep_interval_seconds=3600,
            sla_check_interval_seconds=3600,
            breaker_open_seconds=OPEN,
            half_open_probes=PROBES,
            half_open_probation_seconds=PROBATION,
            max_isolated_percent=percent,
            # Off: with the clock hours ahead and no Watchdog, the heartbeat would open its
            # "pipeline silent" P0, which no tenant history replays.
            heartbeat_timeout_seconds=0,
        )
    )
    async with TestClient(TestServer(app)) as client:
        d = Driver(client, url)
        for t, tier in sorted(
            tiers.items()
        ):  # registrations first (occurred_at: the database's clock)
            await d.configure(t, tier)
        for millis, (kind, *args) in history:
            await d.advance(CLOCK.now + timedelta(milliseconds=millis))
            if kind == "outcomes" and args[1] + args[2] == 0:
                continue
            await getattr(d, kind)(*args)
        await d.advance(CLOCK.now + timedelta(seconds=1000))
    return start, CLOCK.now


# --- what was recorded ---------------------------------------------------------------------


def recorded(url: str, since: datetime, until: datetime) -> dict[str, Any]:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tenant_id, details FROM audit_log"
            " WHERE action = 'breaker.transition' ORDER BY id"
        ).fetchall()
        suppressed = conn.execute(
            "SELECT tenant_id FROM audit_log WHERE action = 'breaker.suppressed'"
        ).fetchall()
        incidents = conn.execute("SELECT priority, count(*) FROM incidents GROUP BY 1").fetchall()
    isolated = {"open", "half_open", "forced_open"}
    per: dict[str, dict[str, float]] = {}
    started: dict[str, datetime] = {}
    for t, details in rows:
        at = datetime.fromisoformat(details["at"])
        f = per.setdefault(t, {"trips": 0, "isolated_seconds": 0.0, "suppressed": 0})
        if details["to"] == "open":
            f["trips"] += 1
        if details["to"] in isolated and t not in started:
            started[t] = at
        elif details["to"] not in isolated and t in started:
            f["isolated_seconds"] += (min(at, until) - started.pop(t)).total_seconds()
    for t, at in started.items():
        per[t]["isolated_seconds"] += (until - at).total_seconds()
    for (t,) in suppressed:
        per.setdefault(t, {"trips": 0, "isolated_seconds": 0.0, "suppressed": 0})["suppressed"] += 1
    by_priority = {"P0": 0, "P1": 0, "P2": 0} | {p: n for p, n in incidents}
    return {
        "trips": len([1 for _, d in rows if d["to"] == "open"]),
        "suppressed": len(suppressed),
        "isolated_seconds": sum(f["isolated_seconds"] for f in per.values()),
        "incidents": sum(by_priority.values()),
        "by_priority": by_priority,
        "per_tenant": per,
    }


def retried(url: str) -> bool:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'breaker.transition'"
            " AND details->>'reason' LIKE 'isolating alert still firing%'"
        ).fetchone()
    return bool(rows and rows[0])


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    monkeypatch.setenv("DATABASE_URL", url)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = cli_main(["replay", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def service_env(percent: int) -> dict[str, str]:
    return {
        "RECEIVER_BREAKER_OPEN_SECONDS": str(OPEN),
        "RECEIVER_HALF_OPEN_PROBES": str(PROBES),
        "RECEIVER_HALF_OPEN_PROBATION_SECONDS": str(PROBATION),
        "RECEIVER_MAX_ISOLATED_PERCENT": str(percent),
    }


# --- the properties --------------------------------------------------------------------------


@settings(
    max_examples=int(os.environ.get("REPLAY_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=steps,
    tiers=st.dictionaries(
        tenant, st.sampled_from(["platinum", "gold", "silver", "bronze"]), max_size=4
    ),
    percent=st.sampled_from([10, 20, 34, 50, 100]),
)
def test_the_baseline_reproduces_what_the_service_recorded(
    clean_db: str,
    controlled_clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    history: list[tuple[int, Any]],
    tiers: dict[str, str],
    percent: int,
) -> None:
    truncate_all(clean_db)
    since, until = asyncio.run(drive(clean_db, history, tiers, percent))
    code, out, err = run_cli(
        monkeypatch, capsys, clean_db, "--since", iso(since), "--until", iso(until), "--json",
        "--set", "max_isolated_percent=10", env=service_env(percent),
    )  # fmt: skip
    if code == 1 and "nothing was recorded" in err:
        return  # every step was a no-op (an outcome for nobody, a copy of nothing)
    assert code == 0, err
    result = json.loads(out)
    base, want = result["baseline"], recorded(clean_db, since, until)
    event(f"trips {min(want['trips'], 3)}+" if want["trips"] >= 3 else f"trips {want['trips']}")
    event("some suppressed" if want["suppressed"] else "none suppressed")
    event("a retried trip" if retried(clean_db) else "no retried trip")
    event(f"incidents {min(want['incidents'], 2)}")
    assert base["trips"] == want["trips"]
    assert base["suppressed"] == want["suppressed"]
    assert abs(base["isolated_seconds"] - want["isolated_seconds"]) <= 1.0
    for t, f in want["per_tenant"].items():
        got = base["per_tenant"].get(t, {"trips": 0, "suppressed": 0, "isolated_seconds": 0})
        assert (got["trips"], got["suppressed"]) == (f["trips"], f["suppressed"]), t
        assert abs(got["isolated_seconds"] - f["isolated_seconds"]) <= 1.0, t
    assert base["incidents"] == want["incidents"]
    assert base["by_priority"] == want["by_priority"]
    # A lower guard than recorded, from since on: the window starts in the same state.
    assert result["proposed"]["trips"] >= 0


# --- reads only, errors, the report ----------------------------------------------------------


async def small_story(url: str) -> tuple[datetime, datetime]:
    history = [
        (1000, ("fire", ["tenant-1"])),
        (5000, ("fire", ["tenant-2", "tenant-3"])),
        (70_000, ("outcomes", "tenant-1", 4, 0)),
        (1000, ("resolve", "tenant-2")),
        (200_000, ("resolve", "tenant-3")),
    ]
    return await drive(url, history, {"tenant-1": "gold"}, 34)


@pytest.fixture
def reader(clean_db: str, pg_server: str) -> Iterator[str]:
    """A role with SELECT alone on every table, and the URL to connect as it."""
    role, password = f"replay_reader_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    with psycopg.connect(libpq(clean_db), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        yield make_url(clean_db).set(username=role, password=password).render_as_string(False)
    finally:
        with psycopg.connect(libpq(clean_db), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_role_with_select_alone_can_replay(
    clean_db: str,
    reader: str,
    controlled_clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    since, until = asyncio.run(small_story(clean_db))
    with psycopg.connect(libpq(clean_db), autocommit=True) as conn:
        probes = conn.execute(
            "SELECT tenant_id, success, failure, state_before, state_after FROM probe_outcomes"
        ).fetchall()
    assert probes == [("tenant-1", 4, 0, "half_open", "closed")]
    code, out, err = run_cli(
        monkeypatch, capsys, reader, "--since", iso(since), "--until", iso(until),
        "--set", "max_isolated_percent=100", env=service_env(34),
    )  # fmt: skip
    assert code == 0, err
    assert "baseline" in out and "proposed" in out and "timeline" in out
    assert "max_isolated_percent 34.0 -> 100.0" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--set", "max_isolated_percnt=10"], 2, "max_isolated_percnt: is not a setting"),
        (["--set", "port=10"], 2, "port: decides nothing a replay replays"),
        (["--set", "max_isolated_percent=150"], 2, "Input should be less than or equal to 100"),
        (["--set", "half_open_probes=0"], 2, "Input should be greater than or equal to 1"),
        (["--set", "breaker_open_seconds"], 2, "expected NAME=VALUE"),
        (["--since", "yesterday"], 2, "not an ISO 8601 time"),
        (["--since", "2030-01-02", "--until", "2030-01-01"], 2, "is after --until"),
        (["--since", "2001-01-01", "--until", "2001-01-02"], 1, "nothing was recorded between"),
    ],
)
def test_bad_arguments_and_an_empty_window_say_why(
    clean_db: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    got, out, err = run_cli(monkeypatch, capsys, clean_db, *args)
    assert got == code
    assert message in err
    assert "Traceback" not in err and out == ""


class _Svg(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: dict[str, int] = {}
        self.svg = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svg += tag == "svg"
        colour = dict(attrs).get("fill")
        if tag == "rect" and colour and colour.startswith("#") and colour != "#f6f6f6":
            self.bars[colour] = self.bars.get(colour, 0) + 1


def test_the_html_report_renders(
    clean_db: str,
    controlled_clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    since, until = asyncio.run(small_story(clean_db))
    report = tmp_path / "replay.html"
    code, out, err = run_cli(
        monkeypatch, capsys, clean_db, "--since", iso(since), "--until", iso(until), "--json",
        "--set", "breaker_open_seconds=300", "--html", str(report), env=service_env(34),
    )  # fmt: skip
    assert code == 0, err
    spans = {
        run: sum(len(f["spans"]) for f in json.loads(out)[run]["per_tenant"].values())
        for run in ("baseline", "proposed")
    }
    parsed = _Svg()
    parsed.feed(report.read_text())
    assert parsed.svg == 1
    # One bar per isolation span: baseline blue, proposed orange.
    assert parsed.bars == {"#3b6fb6": spans["baseline"], "#e07b24": spans["proposed"]}
    assert spans["baseline"] > 0
    keep = Path("/tmp/replay-report")
    if keep.is_dir():
        shutil.copy(report, keep / "replay.html")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return
    png = tmp_path / "replay.png"
    subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
         "--window-size=1000,600", report.as_uri()],
        check=False, capture_output=True, timeout=120,
    )  # fmt: skip
    assert png.exists() and png.stat().st_size > 5000
    if keep.is_dir():
        shutil.copy(png, keep / "replay.png")
