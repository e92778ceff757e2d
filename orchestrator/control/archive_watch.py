"""The leader's watch of WAL archiving on each cluster's primary, for one term (no I/O here).

The controller reads ``pg_stat_archiver`` on the primary's probe connection every 10 s and hands
the reading to :meth:`ArchiveWatch.observe`, which passes it to /metrics and emits
``archive-failed`` once per failure streak (:func:`~orchestrator.decisions.archiving.new_failure_streak`).
A reading of another member (a new primary) starts afresh; a new term starts a new watch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.decisions.archiving import STALL_SECONDS, ArchiverStats, failing, new_failure_streak

Emit = Callable[..., Any]
Note = Callable[[str, str, ArchiverStats | None], None]


class ArchiveWatch:
    def __init__(self, emit: Emit, note: Note) -> None:
        self._emit = emit
        self._note = note
        self._last: dict[str, tuple[str, ArchiverStats]] = {}   # cluster -> (primary, its last reading)

    def observe(self, cluster: str, primary: str, stats: ArchiverStats | None, stall_s: float = STALL_SECONDS
                ) -> bool:
        """Record ``primary``'s reading (None: could not read it); True when it emitted ``archive-failed``
        (archiving fails, or a completed segment has waited over ``stall_s``)."""
        self._note(cluster, primary, stats)
        if stats is None:
            return False
        before = self._last.get(cluster)
        previous = before[1] if before is not None and before[0] == primary else None
        self._last[cluster] = (primary, stats)
        if not new_failure_streak(previous, stats, stall_s):
            return False
        if failing(stats):
            error = (f"{stats.failed_count} failed attempt(s) since the statistics reset, the last on segment "
                     f"{stats.last_failed_wal}")
        else:
            error = (f"{stats.ready_count} segment(s) waiting to be archived, the oldest for "
                     f"{stats.oldest_ready_age_s or 0:.0f} s: archive_command hangs or the store does not answer "
                     f"(last archived {stats.last_archived_wal})")
        self._emit("archive-failed", cluster=cluster, member=primary, error=error)
        return True
