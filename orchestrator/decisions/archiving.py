"""WAL archiving as the leader sees it on the primary (``pg_stat_archiver``): pure.

The adapter (:func:`orchestrator.postgres.archiver_stats`) reads one row; here:

* :func:`archive_age_seconds` - seconds since the last segment was archived: the metric
  ``drctl_backup_archive_lag_seconds``. With ``archive_timeout`` set (60 s in the lab), a
  primary that archives keeps it under that bound plus the time one ``archive_command`` takes.
* :func:`failing` - the last attempt failed (``last_failed_time`` newer than ``last_archived_time``).
* :func:`stalled` - completed segments have waited longer than ``stall_s`` (default 30 s):
  ``archive_command`` hangs rather than fails. pgBackRest retries an unreachable store for
  40-80 s per command (measured), so a store outage shorter than that shows no failure at
  all in ``pg_stat_archiver``, only segments piling up in ``pg_wal``.
* :func:`new_failure_streak` - the rule for the ``archive-failed`` event: once when archiving
  starts failing or stalls, not again until it has recovered (archived since, nothing old waiting).
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
    ready_count: int = 0                     # completed segments waiting in pg_wal/archive_status (.ready)
    oldest_ready_age_s: float | None = None  # how long the oldest of them has waited (server clock)


STALL_SECONDS = 30.0


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


def stalled(stats: ArchiverStats, stall_s: float = STALL_SECONDS) -> bool:
    """True when a completed segment has waited for the archiver longer than ``stall_s``."""
    return stats.oldest_ready_age_s is not None and stats.oldest_ready_age_s > stall_s


def in_trouble(stats: ArchiverStats, stall_s: float = STALL_SECONDS) -> bool:
    return failing(stats) or stalled(stats, stall_s)


def new_failure_streak(previous: ArchiverStats | None, current: ArchiverStats, stall_s: float = STALL_SECONDS
                       ) -> bool:
    """True when ``current`` starts a failure streak (failing or stalled): emit ``archive-failed`` once for it.

    ``previous`` is this leader's last reading of the same primary (None: first reading, so a
    new leader announces a streak that is already running, once). A streak ends when a segment
    is archived after the last failure and no segment has waited longer than ``stall_s``.
    """
    return in_trouble(current, stall_s) and (previous is None or not in_trouble(previous, stall_s))
