"""Runs `python -m receiver serve` unchanged, with two knobs for experiments only:

    BENCH_REUSE_PORT=1  listen with SO_REUSEPORT, so that several processes share the
                        port and the kernel spreads connections over them (BENCH_WORKERS)
    BENCH_UVLOOP=1      run on uvloop's event loop instead of asyncio's

Neither is a setting of the receiver; bench/README.md says what they gave.
"""

from __future__ import annotations

import functools
import os
import sys


def main() -> int:
    from aiohttp import web

    if os.environ.get("BENCH_REUSE_PORT") == "1":
        # receiver.cli calls web.run_app(...) through the module: this reaches it.
        web.run_app = functools.partial(web.run_app, reuse_port=True)  # type: ignore[assignment]
    if os.environ.get("BENCH_UVLOOP") == "1":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from receiver import cli

    return cli.main(["serve"])


if __name__ == "__main__":
    sys.exit(main())
