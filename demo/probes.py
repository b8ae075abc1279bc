"""Asking the running pieces: their readiness and the state each one holds.

`Endpoints` is where the pieces of a stack listen (demo.processes starts them) and the
tokens they take. Everything is on 127.0.0.1, so HTTP goes through urllib without
proxies and without extra dependencies; an HTTP error is a `Reply`, an unreachable
piece raises OSError. The database is read with psycopg, as the receiver wrote it.

    endpoints.receiver_ready()                 # the readiness checks the start waits on
    endpoints.api("GET", "/v1/breakers")       # the receiver's API, with the API token
    endpoints.sql("SELECT ... %s", tenant_id)  # its tables
    wait_for_traffic_in_prometheus(endpoints, tenant_ids(endpoints))
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg


class StackError(RuntimeError):
    """Something did not start or answer in time; the message names the log to read."""


# --- HTTP without dependencies (and without proxies: everything is on 127.0.0.1) -------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or the text when it is not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def http(
    method: str, url: str, *, token: str | None = None, body: Any = None, timeout: float = 3.0
) -> Reply:
    """One request; HTTP errors are replies, an unreachable server raises OSError."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return Reply(status, json.loads(raw))
    except ValueError:
        return Reply(status, raw.decode(errors="replace"))


# --- the pieces -------------------------------------------------------------------------


@dataclass
class Endpoints:
    receiver_url: str
    traffic_url: str
    alertmanager_url: str
    prometheus_url: str
    api_token: str
    database_url: str = ""  # known once PostgreSQL has started

    # Readiness: what the start waits for before it starts the next piece.

    def receiver_ready(self) -> bool:
        """`/readyz`: database, schema and NOTIFY listener all fine."""
        return http("GET", f"{self.receiver_url}/readyz").status == 200

    def alertmanager_ready(self) -> bool:
        return http("GET", f"{self.alertmanager_url}/-/ready").ok

    def prometheus_ready(self) -> bool:
        return http("GET", f"{self.prometheus_url}/-/ready").ok

    def traffic_registered(self) -> bool:
        """The generator serves and has registered every tenant's tier with the receiver."""
        reply = http("GET", f"{self.traffic_url}/healthz")
        return reply.status == 200 and bool(reply.body.get("registered"))

    # State: what the story reads while it happens.

    def api(self, method: str, path: str, body: Any = None) -> Reply:
        return http(method, self.receiver_url + path, token=self.api_token, body=body)

    def traffic(self, method: str, path: str, body: Any = None) -> Reply:
        return http(method, self.traffic_url + path, body=body)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query: the `result` list."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        reply = http("GET", url)
        if reply.status != 200:
            raise StackError(f"Prometheus query {expr!r}: {reply.status} {reply.body}")
        return list(reply.body["data"]["result"])

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        reply = http("GET", f"{self.prometheus_url}/api/v1/alerts")
        return list(reply.body["data"]["alerts"]) if reply.status == 200 else []

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        libpq = self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []


def tenant_ids(endpoints: Endpoints) -> list[str]:
    """The tenants the traffic generator sends for."""
    reply = endpoints.traffic("GET", "/tenants")
    return [t["tenant_id"] for t in reply.body["tenants"]]


def wait_for_traffic_in_prometheus(
    endpoints: Endpoints,
    tenants: list[str],
    *,
    window_seconds: float = 30.0,
    timeout: float = 90.0,
) -> None:
    """Until Prometheus holds a full rate window of every tenant's counters, so that the
    failing tenant's ratio starts from a window of healthy traffic, as in real life."""
    deadline = time.monotonic() + timeout
    expr = f"count_over_time(rag_queries_total[{int(window_seconds)}s])"
    needed = window_seconds / 2.0  # a sample every 2 s (deploy/prometheus.yml)
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, StackError):
            results = endpoints.query(expr)
            counts = {r["metric"].get("tenant_id"): float(r["value"][1]) for r in results}
            if all(counts.get(t, 0) >= needed for t in tenants):
                return
        time.sleep(1.0)
    raise StackError(
        f"Prometheus did not collect {window_seconds:.0f} s of traffic within {timeout:.0f} s"
        " (see the prometheus and traffic logs)"
    )
