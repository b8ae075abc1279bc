"""Payload builders, polling and a `python -m receiver serve` process for the integration tests.

Payloads start from the real Alertmanager 0.25 fixtures and change only what a test needs
(tenant, status, startsAt), so every derived payload still has Alertmanager's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from receiver import embedded_pg
from receiver.domain.alerts import fingerprint
from tests.conftest import API_HEADERS, WEBHOOK_HEADERS, load_fixture

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
# The single-tenant fixture's instance: tenant-a, fingerprint 894e6d65ba8b54bd.
FIXTURE_STARTS_AT = "2026-11-22T14:24:16.033Z"
FIXTURE_FINGERPRINT = "894e6d65ba8b54bd"
COUNTED_TABLES = ("alerts", "deliveries", "audit_log", "breakers", "tenants")


def isolating_alert(
    tenant: str,
    *,
    status: str = "firing",
    starts_at: str = FIXTURE_STARTS_AT,
    ends_at: str | None = None,
    isolate: bool = True,
) -> dict[str, Any]:
    """The single-tenant fixture's alert, moved to `tenant` (fingerprint recomputed)."""
    name = "single-tenant-firing.json" if status == "firing" else "single-tenant-resolved.json"
    alert = copy.deepcopy(load_fixture(name)["alerts"][0])
    alert["labels"]["tenant_id"] = tenant
    if not isolate:
        del alert["labels"]["isolate"]
    alert["annotations"]["summary"] = f"Tenant {tenant} error ratio 61.69%"
    alert["startsAt"] = starts_at
    if status == "firing":
        alert["endsAt"] = GO_ZERO_TIME
    elif ends_at is not None:
        alert["endsAt"] = ends_at
    alert["fingerprint"] = fingerprint(alert["labels"])
    return alert


def webhook_payload(*alerts: dict[str, Any], truncated: int = 0) -> dict[str, Any]:
    """The single-tenant fixture's envelope around `alerts`."""
    body = copy.deepcopy(load_fixture("single-tenant-firing.json"))
    body["alerts"] = list(alerts)
    body["status"] = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    tenants = sorted({a["labels"].get("tenant_id", "") for a in alerts})
    if len(tenants) == 1:
        body["groupLabels"] = {"alertname": "TenantErrorRateHigh", "tenant_id": tenants[0]}
        body["commonLabels"] = dict(alerts[0]["labels"])
    else:
        body["groupLabels"] = {"alertname": "TenantErrorRateHigh"}
        body["commonLabels"] = {
            k: v for k, v in alerts[0]["labels"].items() if k not in ("tenant_id",)
        }
    body["groupKey"] = (
        "{}:" + "{" + ", ".join(f'{k}="{v}"' for k, v in body["groupLabels"].items()) + "}"
    )
    body["truncatedAlerts"] = truncated
    return body


def firing(
    tenant: str, *, starts_at: str = FIXTURE_STARTS_AT, isolate: bool = True
) -> dict[str, Any]:
    return webhook_payload(isolating_alert(tenant, starts_at=starts_at, isolate=isolate))


def resolved(
    tenant: str, *, starts_at: str = FIXTURE_STARTS_AT, ends_at: str | None = None
) -> dict[str, Any]:
    return webhook_payload(
        isolating_alert(tenant, status="resolved", starts_at=starts_at, ends_at=ends_at)
    )


def table_counts(sql: Callable[..., list[tuple[Any, ...]]]) -> dict[str, int]:
    return {t: sql(f"SELECT count(*) FROM {t}")[0][0] for t in COUNTED_TABLES}


def audit_rows(
    sql: Callable[..., list[tuple[Any, ...]]], action: str, tenant: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(actor, details) of the audit rows with `action` (and `tenant`), oldest first."""
    if tenant is None:
        return [
            (a, d)
            for a, d in sql(
                "SELECT actor, details FROM audit_log WHERE action = %s ORDER BY id", action
            )
        ]
    return [
        (a, d)
        for a, d in sql(
            "SELECT actor, details FROM audit_log WHERE action = %s AND tenant_id = %s ORDER BY id",
            action,
            tenant,
        )
    ]


async def poll(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    *,
    within: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `probe` until `until(result)`; fail with the last result after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        last = await probe()
        if until(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


async def get_breaker(client: Any, tenant: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/tenants/{tenant}/breaker", headers=API_HEADERS)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def post_webhook(client: Any, body: Any, *, expect: int = 200) -> dict[str, Any]:
    resp = await client.post("/v1/alertmanager", json=body, headers=WEBHOOK_HEADERS)
    assert resp.status == expect, await resp.text()
    return await resp.json()


def iso_to_utc(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def seconds_between(a: str, b: str) -> float:
    return (iso_to_utc(b) - iso_to_utc(a)) / timedelta(seconds=1)


# --- a real server process -----------------------------------------------------------------


@dataclass
class ServerProcess:
    """`python -m receiver serve` on 127.0.0.1:port, its log in a file."""

    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve"],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        last: object = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                async with session.get(f"{self.url}/readyz") as resp:
                    last = (resp.status, await resp.text())
                    if resp.status == 200:
                        return
            except aiohttp.ClientError as exc:
                last = exc
            await asyncio.sleep(0.1)
        raise AssertionError(f"server not ready after {within}s: {last!r}\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


def server_env(database_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_") and k != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=database_url,
        RECEIVER_HOST="127.0.0.1",
        RECEIVER_PORT=str(port),
        RECEIVER_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def server_processes(
    tmp_path: Path, database_url: str, **defaults: str
) -> Iterator[Callable[..., ServerProcess]]:
    """`start(name, **env)` runs a `python -m receiver serve` on a free port (env over
    `defaults`), logging to tmp_path/name.log; every one started is stopped on the way out."""
    started: list[ServerProcess] = []

    def start(name: str, **env: str) -> ServerProcess:
        port = embedded_pg.free_port()
        server = ServerProcess(
            env=server_env(database_url, port, **{**defaults, **env}),
            log_path=tmp_path / f"{name}.log",
            port=port,
        )
        started.append(server.start())
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
