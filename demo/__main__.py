"""`make demo`: one tenant's failure contained, end to end, told as it happens.

    python -m demo [--tenant tenant-1] [--keep]

Starts PostgreSQL, the receiver, the traffic generator, Alertmanager and Prometheus on
127.0.0.1 (demo.processes), makes one tenant fail, prints what each piece does and
when, fixes the tenant once its breaker has been open a few seconds, waits for the breaker
to close and the incident to resolve, replays its own story with the default open period
(`python -m receiver replay --set breaker_open_seconds=60`), then stops everything it
started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from demo.probes import StackError, tenant_ids, wait_for_traffic_in_prometheus
from demo.processes import Stack, StackOptions, missing_packages
from demo.story import Event, intro, replay_story, run_story, say, summary

STORY_SECONDS = 210.0  # from the first error to giving up; the story takes about 80 s
RECOVER_AFTER = 8.0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--tenant", default="tenant-1", help="the tenant that fails")
    parser.add_argument("--keep", action="store_true", help="keep logs and data afterwards")
    args = parser.parse_args(argv)
    # Ctrl-C and a polite kill both stop everything the demo started (even when started
    # from a shell that ignores SIGINT for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    missing = missing_packages()
    if missing:
        print(
            f"missing: apt-get install {' '.join(missing)} (make demo installs them as root)",
            file=sys.stderr,
        )
        return 1
    options = StackOptions()
    began = time.monotonic()
    print(intro(options, args.tenant), flush=True)
    try:
        with Stack(options, keep=args.keep, progress=lambda s: say(f"starting {s}")) as stack:
            say(f"logs: {stack.logs}")
            tenants = tenant_ids(stack.endpoints)
            say(f"waiting until Prometheus holds 30 s of traffic from {len(tenants)} tenants")
            wait_for_traffic_in_prometheus(stack.endpoints, tenants)
            say("all tenants healthy; the story begins")
            print(flush=True)

            def show(event: Event) -> None:
                say(("(could not read) " if event.kind == "warning" else "") + event.text, event.at)

            story = run_story(
                stack.endpoints,
                failing=args.tenant,
                deadline=time.monotonic() + STORY_SECONDS,
                recover_after=RECOVER_AFTER,
                emit=show,
            )
            for line in summary(story):
                print(line, flush=True)
            for line in replay_story(stack.endpoints, options, story):
                print(line, flush=True)
            if not story.finished:
                stack.failed = True
                print(f"\nthe story did not finish in {STORY_SECONDS:.0f} s", file=sys.stderr)
            print(flush=True)
            say("stopping everything")
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started is stopped", file=sys.stderr)
        return 130
    except StackError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    say(f"done in {time.monotonic() - began:.0f} s")
    return 0 if story.finished else 1


if __name__ == "__main__":
    sys.exit(main())
