"""The ceiling for breaker reads: a hello-world aiohttp server on the same interpreter.

It answers GET /v1/tenants/{tenant_id}/breaker with the JSON the receiver returns for a
closed tenant, built and serialised per request the way a minimal JSON handler does, and
nothing else: no middlewares, no authentication check, no access log.

    python -m bench.hello --port 8081
"""

from __future__ import annotations

import argparse
import os
import time

import orjson
from aiohttp import web

_STARTED = time.monotonic()


async def breaker(request: web.Request) -> web.Response:
    body = {
        "tenant_id": request.match_info["tenant_id"],
        "state": "closed",
        "allow": True,
        "admit_ratio": 1.0,
        "opened_at": None,
        "half_open_at": None,
        "next_change_at": None,
        "trips": 0,
        "streak": 0,
        "probe_successes": 0,
        "probe_failures": 0,
        "alert_firing": False,
        "changed_at": None,
        # The receiver's view age, computed per answer as the receiver does.
        "view_age_ms": int((time.monotonic() - _STARTED) * 1000) % 5000,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hello")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if os.environ.get("BENCH_UVLOOP") == "1":  # the same event loop as the receiver's
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.router.add_get("/v1/tenants/{tenant_id}/breaker", breaker)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
