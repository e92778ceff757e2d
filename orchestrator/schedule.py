"""Which scheduled drills are due: pure, clock passed in.

The leading controller asks :func:`due_drills` every few seconds with each drill file's
cron expression and the last time it started it (kept in ZooKeeper, so a controller
restart or a new leader neither skips nor repeats a run), then starts each due drill as
``drctl drill run NAME`` in a child process; the drill lock keeps it to one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from croniter import croniter


def next_after(cron: str, after: float) -> float:
    """The first time strictly after ``after`` (epoch seconds, UTC) that ``cron`` names."""
    start = datetime.fromtimestamp(after, tz=UTC)
    nxt: datetime = croniter(cron, start).get_next(datetime)
    return nxt.timestamp()


def due_drills(schedules: Mapping[str, str], last_runs: Mapping[str, float], now: float, since: float) -> list[str]:
    """Drills whose next run after their last run (or ``since``, if never run) has come.

    A drill missed several times (the cluster had no leader for a day) runs once, not once
    per missed slot.
    """
    return sorted(name for name, cron in schedules.items()
                  if next_after(cron, last_runs.get(name, since)) <= now)
