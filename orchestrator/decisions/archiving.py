"""WAL archiving as the leader sees it on the primary (``pg_stat_archiver``): pure.

The adapter (:func:`orchestrator.postgres.archiver_stats`) reads one row; here:

* :func:`archive_age_seconds` - seconds since the last segment was archived: the metric
  ``drctl_backup_archive_lag_seconds``. With ``archive_timeout`` set (60 s in the lab), a
  primary that archives keeps it under that bound plus the time one ``archive_command`` takes.
* :func:`failing` - the last attempt failed (``last_failed_time`` newer than ``last_archived_time``).
* :func:`new_failure_streak` - the rule for the ``archive-failed`` event: once when archiving
  starts failing, not again until a segment has been archived since.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchiverStats:
    """One ``pg_stat_archiver`` row; times are UNIX seconds, None: never happened since the stats reset."""

    archived_count: int
    last_archived_at: float | None
    last_archived_wal: str | None
    failed_count: int
    last_failed_at: float | None
    last_failed_wal: str | None


def archive_age_seconds(stats: ArchiverStats, now: float) -> float | None:
    """Seconds since the last archived segment (never negative); None: nothing archived yet."""
    if stats.last_archived_at is None:
        return None
    return max(now - stats.last_archived_at, 0.0)


def failing(stats: ArchiverStats) -> bool:
    """True when the most recent archiving attempt failed."""
    if stats.last_failed_at is None:
        return False
    return stats.last_archived_at is None or stats.last_failed_at > stats.last_archived_at


def new_failure_streak(previous: ArchiverStats | None, current: ArchiverStats) -> bool:
    """True when ``current`` starts a failure streak: emit ``archive-failed`` once for it.

    ``previous`` is this leader's last reading of the same primary (None: first reading, so a
    new leader announces a streak that is already running, once). A streak ends when a segment
    is archived after the last failure.
    """
    return failing(current) and (previous is None or not failing(previous))
