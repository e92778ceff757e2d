"""The pure WAL-archiving rules: archive age and the once-per-streak ``archive-failed`` event."""

from __future__ import annotations

from itertools import groupby

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.decisions.archiving import ArchiverStats, archive_age_seconds, failing, new_failure_streak, stalled


def stats(archived_at: float | None, failed_at: float | None, failed: int = 0) -> ArchiverStats:
    return ArchiverStats(archived_count=0 if archived_at is None else 5, last_archived_at=archived_at,
                         last_archived_wal=None if archived_at is None else "000000010000000000000005",
                         failed_count=failed, last_failed_at=failed_at,
                         last_failed_wal=None if failed_at is None else "000000010000000000000006")


def test_archive_age() -> None:
    assert archive_age_seconds(stats(1000.0, None), now=1042.5) == 42.5
    assert archive_age_seconds(stats(None, None), now=1042.5) is None
    assert archive_age_seconds(stats(1000.0, None), now=990.0) == 0.0   # clocks a little apart


def test_failing_when_the_last_attempt_failed() -> None:
    assert not failing(stats(1000.0, None))
    assert failing(stats(1000.0, 1001.0, failed=1))
    assert not failing(stats(1002.0, 1001.0, failed=1))   # archived again since
    assert failing(stats(None, 1001.0, failed=1))


def test_archive_failed_once_per_streak() -> None:
    readings = [stats(1000.0, None), stats(1000.0, 1001.0, 1), stats(1000.0, 1005.0, 2),
                stats(1010.0, 1005.0, 2), stats(1010.0, 1011.0, 3), stats(1010.0, 1020.0, 4)]
    emitted = [new_failure_streak(prev, cur) for prev, cur in zip([None, *readings], readings, strict=False)]
    assert emitted == [False, True, False, False, True, False]


def test_a_new_leader_announces_a_running_streak() -> None:
    assert new_failure_streak(None, stats(1000.0, 1001.0, 1))
    assert not new_failure_streak(None, stats(1002.0, 1001.0, 1))


times = st.none() | st.floats(min_value=0, max_value=1e9, allow_nan=False)


@given(st.lists(st.tuples(times, times), min_size=1, max_size=20))
def test_one_event_per_streak(pairs: list[tuple[float | None, float | None]]) -> None:
    readings = [stats(a, f, 1 if f is not None else 0) for a, f in pairs]
    events = sum(new_failure_streak(prev, cur) for prev, cur in zip([None, *readings], readings, strict=False))
    failing_runs = sum(1 for is_failing, _ in groupby(readings, key=failing) if is_failing)
    assert events == failing_runs


def waiting(ready: int, oldest: float | None, archived_at: float = 1000.0) -> ArchiverStats:
    return ArchiverStats(archived_count=5, last_archived_at=archived_at, last_archived_wal="000000010000000000000005",
                         failed_count=0, last_failed_at=None, last_failed_wal=None, ready_count=ready,
                         oldest_ready_age_s=oldest)


def test_a_hanging_archive_command_is_a_stall_without_any_failure() -> None:
    assert not stalled(waiting(0, None)) and not stalled(waiting(3, 29.0))
    assert stalled(waiting(3, 31.0)) and not failing(waiting(3, 31.0))
    assert stalled(waiting(3, 5.0), stall_s=4.0)


def test_a_stall_is_one_streak_until_nothing_old_waits() -> None:
    readings = [waiting(1, 0.5), waiting(10, 12.0), waiting(40, 45.0), waiting(60, 70.0),   # store down
                waiting(1, 0.1, archived_at=1080.0),                                        # caught up
                waiting(5, 35.0, archived_at=1080.0)]                                       # down again
    emitted = [new_failure_streak(prev, cur) for prev, cur in zip([None, *readings], readings, strict=False)]
    assert emitted == [False, False, True, False, False, True]
