"""The leader's archive watch: metrics get every reading, ``archive-failed`` once per streak and per primary."""

from __future__ import annotations

from typing import Any

from orchestrator.control.archive_watch import ArchiveWatch
from orchestrator.decisions.archiving import ArchiverStats


def stats(archived_at: float, failed_at: float | None, failed: int) -> ArchiverStats:
    return ArchiverStats(archived_count=3, last_archived_at=archived_at, last_archived_wal="000000010000000000000003",
                         failed_count=failed, last_failed_at=failed_at,
                         last_failed_wal=None if failed_at is None else "000000010000000000000004")


def test_one_event_per_streak_and_a_new_primary_starts_afresh() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    noted: list[tuple[str, str, ArchiverStats | None]] = []
    watch = ArchiveWatch(lambda event, **fields: events.append((event, fields)),
                         lambda cluster, member, s: noted.append((cluster, member, s)))
    readings = [("a", stats(10.0, None, 0)), ("a", stats(10.0, 11.0, 1)), ("a", None), ("a", stats(10.0, 15.0, 2)),
                ("b", stats(20.0, 21.0, 1)),          # failed over to b, whose archiving fails too: announced
                ("b", stats(30.0, 21.0, 1)), ("b", stats(30.0, 31.0, 2))]
    emitted = [watch.observe("payments", member, s) for member, s in readings]
    assert emitted == [False, True, False, False, True, False, True]
    assert [(f["member"], f["error"]) for _, f in events] == [
        ("a", "1 failed attempt(s) since the statistics reset, the last on segment 000000010000000000000004"),
        ("b", "1 failed attempt(s) since the statistics reset, the last on segment 000000010000000000000004"),
        ("b", "2 failed attempt(s) since the statistics reset, the last on segment 000000010000000000000004")]
    assert {e for e, _ in events} == {"archive-failed"} and all(f["cluster"] == "payments" for _, f in events)
    assert noted == [("payments", member, s) for member, s in readings]   # None too: /metrics drops the sample


def test_a_stalled_archiver_is_announced_with_its_backlog() -> None:
    events: list[dict[str, Any]] = []
    watch = ArchiveWatch(lambda _event, **fields: events.append(fields), lambda *_: None)
    hung = ArchiverStats(archived_count=3, last_archived_at=10.0, last_archived_wal="000000010000000000000003",
                         failed_count=0, last_failed_at=None, last_failed_wal=None, ready_count=12,
                         oldest_ready_age_s=9.4)
    assert not watch.observe("payments", "a", hung)                 # 9.4 s: under the default 30 s
    assert not watch.observe("payments", "a", stats(10.0, None, 0), stall_s=5.0)
    assert watch.observe("payments", "a", hung, stall_s=5.0)
    assert events == [{"cluster": "payments", "member": "a", "error": "12 segment(s) waiting to be archived, the "
                       "oldest for 9 s: archive_command hangs or the store does not answer (last archived "
                       "000000010000000000000003)"}]
