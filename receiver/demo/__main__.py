"""`make demo`: one tenant's failure contained, end to end, told as it happens.

    python -m receiver.demo [--tenant tenant-1] [--keep]

Starts PostgreSQL, the receiver, the traffic generator, Alertmanager and Prometheus on
127.0.0.1 (receiver.demo.stack), makes one tenant fail, prints what each piece does and
when, fixes the tenant once its breaker has been open a few seconds, waits for the breaker
to close and the incident to resolve, then stops everything it started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import datetime
from types import FrameType

from receiver.demo.stack import (
    Event,
    Stack,
    StackError,
    StackOptions,
    Story,
    missing_packages,
    run_story,
    tenant_ids,
    wait_for_traffic_in_prometheus,
)

STORY_SECONDS = 210.0  # from the first error to giving up; the story takes about 80 s
RECOVER_AFTER = 8.0


def say(text: str, at: float | None = None) -> None:
    clock = datetime.fromtimestamp(at if at is not None else time.time()).strftime("%H:%M:%S")
    print(f"{clock}  {text}", flush=True)


def intro(options: StackOptions, failing: str) -> str:
    return f"""\
blast-radius demo: one tenant's failure contained, end to end, on 127.0.0.1

  {options.tenants} tenants each send {options.rate:g} RAG queries a second through a gateway that
  asks the receiver for their circuit breaker (receiver.client). tenant-1 is gold, the
  others silver or bronze; the last one is noisy (15 % errors, under the 50 % bar).
  Prometheus scrapes every 2 s and evaluates alert_rules/tenant_errors.rules.yml;
  Alertmanager posts its alerts to the receiver (deploy/*.yml, local addresses).
  Shortened for the demo: the breaker stays open {options.breaker_open_seconds:g} s and the
  half-open probation lasts {options.probation_seconds:g} s (RECEIVER_BREAKER_OPEN_SECONDS and
  RECEIVER_HALF_OPEN_PROBATION_SECONDS; both are 60 s by default).

  The story: {failing} starts failing every query. Watch Prometheus notice, Alertmanager
  deliver, the receiver open {failing}'s breaker and an incident, the gateway shed it while
  the other tenants carry on; then {failing} is fixed, its breaker lets probes through
  (half-open), closes, and the incident resolves itself.
"""


def summary(story: Story) -> list[str]:
    lines = ["", "what happened:"]
    detection = story.detection_seconds
    if detection is not None:
        lines.append(
            f"  detection: errors started -> breaker open in {detection:.1f} s"
            " (budget 45 s, aim 30 s)"
        )
    else:
        lines.append("  the breaker never opened")
    if story.alert_firing_at and story.errors_started and story.opened_at:
        lines.append(
            "  of which Prometheus (scrape, 30 s window, for: 10s) took"
            f" {story.alert_firing_at - story.errors_started:.1f} s, and Alertmanager and the"
            f" receiver {story.opened_at - story.alert_firing_at:.1f} s more"
        )
    if story.closed_at and story.opened_at:
        lines.append(
            f"  isolated for {story.closed_at - story.opened_at:.1f} s; closed: "
            f"{story.closed_reason or '?'}"
        )
    inc = story.incident
    if inc is not None:
        lines.append(
            f"  incident {inc['id']}: {inc['priority']}, {inc['status']}"
            + (f" by {inc.get('resolved_by')}" if inc.get("resolved_by") else "")
        )
    elif story.incidents_source == "sql":
        lines.append("  no incident found (GET /v1/incidents is not served; read the tables)")
    others = sorted({t for t, _, _ in story.others_isolated})
    lines.append(f"  other tenants isolated: {', '.join(others) if others else 'none'}")
    shed = ", ".join(f"{t} {n}" for t, n in sorted(story.shed.items()))
    lines.append(f"  queries shed by the gateway: {shed}")
    return lines


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m receiver.demo", description=__doc__)
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
            tenants = tenant_ids(stack)
            say(f"waiting until Prometheus holds 30 s of traffic from {len(tenants)} tenants")
            wait_for_traffic_in_prometheus(stack, tenants)
            say("all tenants healthy; the story begins")
            print(flush=True)

            def show(event: Event) -> None:
                say(("(could not read) " if event.kind == "warning" else "") + event.text, event.at)

            story = run_story(
                stack,
                failing=args.tenant,
                deadline=time.monotonic() + STORY_SECONDS,
                recover_after=RECOVER_AFTER,
                emit=show,
            )
            for line in summary(story):
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
