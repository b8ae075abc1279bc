"""What-if replay (DESIGN.md "What-if replay"): the recorded inputs of a window, replayed
twice through the domain, with the settings in force and with proposed ones, compared.

Reads only: one read-only snapshot (receiver/db/replay.py), then the pure replay
(receiver/domain/replay.py). A role with SELECT alone can run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db import replay as replay_rows
from receiver.db.transaction import in_transaction
from receiver.domain.replay import History, Progress, Rules, replay
from receiver.domain.replay_figures import Figures
from receiver.errors import InvalidInput, NotFound
from receiver.service.breakers import SUPPRESSED_RETRY

# The settings a replay can change (the others decide nothing it replays). Names as in
# receiver/settings.py: RECEIVER_ + the upper-cased name in the environment.
REPLAYED_SETTINGS = (
    "max_isolated_percent",
    "breaker_open_seconds",
    "breaker_max_open_seconds",
    "half_open_probation_seconds",
    "half_open_probes",
    "probe_failure_ratio",
    "correlation_window_seconds",
)


class EmptyWindow(NotFound):
    """Nothing was recorded in the window: there is nothing to replay."""


@dataclass(frozen=True)
class Comparison:
    since: datetime
    until: datetime
    inputs: int  # recorded inputs in the window (deliveries, outcomes, overrides)
    baseline: Figures
    proposed: Figures


def rules_of(config: ServiceConfig) -> Rules:
    return Rules(
        policy=config.breaker,
        max_isolated_percent=config.max_isolated_percent,
        correlation_window=config.correlation_window,
        suppressed_retry=SUPPRESSED_RETRY,
    )


async def load_history(*, sessions: async_sessionmaker[AsyncSession], until: datetime) -> History:
    async def work(session: AsyncSession) -> History:
        await replay_rows.begin_snapshot(session)
        return await replay_rows.load_history(session, until=until)

    return await in_transaction(sessions, work, what="replay read")


async def what_if(
    *,
    sessions: async_sessionmaker[AsyncSession],
    baseline: ServiceConfig,
    proposed: ServiceConfig,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    progress: Progress | None = None,
) -> Comparison:
    """Replay [since, until] (default: from the first recorded input to `now`) with the
    `baseline` settings and with the `proposed` ones (changed from `since` on)."""
    end = until or now
    history = await load_history(sessions=sessions, until=end)
    return compare(history, baseline=baseline, proposed=proposed, since=since, until=end,
                   progress=progress)  # fmt: skip


def compare(
    history: History,
    *,
    baseline: ServiceConfig,
    proposed: ServiceConfig,
    since: datetime | None,
    until: datetime,
    progress: Progress | None = None,
) -> Comparison:
    starts = [i.at for i in history.inputs]
    start = since if since is not None else min(starts, default=until)
    if start > until:
        raise InvalidInput(f"--since {start.isoformat()} is after --until {until.isoformat()}")
    count = history.decisions_between(start, until)
    if count == 0:
        raise EmptyWindow(
            f"nothing was recorded between {start.isoformat()} and {until.isoformat()}: "
            "no alert changes, probe outcomes or overrides to replay"
        )
    total = 2 * sum(i.at <= until for i in history.inputs)

    def part(offset: int) -> Progress | None:
        if progress is None:
            return None
        report = progress
        return lambda done, _: report(offset + done, total)

    rules = rules_of(baseline)
    base = replay(history, rules=rules, since=start, until=until, progress=part(0))
    other = replay(
        history,
        rules=rules_of(proposed),
        warmup=rules,
        since=start,
        until=until,
        progress=part(total // 2),
    )
    return Comparison(since=start, until=until, inputs=count, baseline=base, proposed=other)
