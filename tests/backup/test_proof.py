"""The pure parts of proving a backup: WAL file names, the restored timeline's switch point, WAL continuity."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backup.proof import ProofFailed, recovery_end, segment_name, segment_range, wal_reached

MB = 1024 * 1024


@pytest.mark.parametrize(("timeline", "lsn", "segment", "name"), [
    (1, 0x3000060, 16 * MB, "000000010000000000000003"),         # pg_walfile_name('0/3000060') at 16 MB
    (2, (1 << 32) | 0x5, 16 * MB, "000000020000000100000000"),
    (1, 0x3000060, MB, "000000010000000000000030"),              # the lab's 1 MB segments
    (3, (5 << 32) + 0xFFF * MB, MB, "000000030000000500000FFF"),
], ids=["16mb", "next-xlogid", "1mb", "1mb-last-in-xlogid"])
def test_segment_name_is_pg_walfile_name(timeline: int, lsn: int, segment: int, name: str) -> None:
    assert segment_name(timeline, lsn, segment) == name


@given(st.integers(1, 20), st.integers(0, (1 << 40)), st.sampled_from([MB, 16 * MB, 64 * MB]))
def test_segment_names_order_as_positions_do(timeline: int, lsn: int, segment: int) -> None:
    here, later = segment_name(timeline, lsn, segment), segment_name(timeline, lsn + segment, segment)
    assert here < later and len(here) == 24


HISTORY = "1\t0/9000000\tno recovery target specified\n"


def test_recovery_end_reads_the_last_switch_point() -> None:
    assert recovery_end("1\t0/3000000\tbefore 2026\n\n2\t0/9000A0\tno recovery target specified\n") == (2, 0x9000A0)


def test_recovery_that_reaches_the_newest_archived_segment_proves_continuity() -> None:
    assert wal_reached(HISTORY, "000000010000000000000090", MB) == "000000010000000000000090"
    assert wal_reached(HISTORY, "00000001000000000000008F", MB) == "000000010000000000000090"


@pytest.mark.parametrize(("history", "newest"), [
    (HISTORY, "000000010000000000000091"),      # stopped a segment short: one is missing
    (HISTORY, "000000020000000000000001"),      # the archive has a newer timeline recovery never followed
], ids=["gap", "timeline"])
def test_recovery_that_stops_short_fails_naming_both_segments(history: str, newest: str) -> None:
    with pytest.raises(ProofFailed, match=f"ended in segment 000000010000000000000090, before .*{newest}"):
        wal_reached(history, newest, MB)


def test_a_history_without_a_switch_point_fails() -> None:
    with pytest.raises(ProofFailed, match="no switch point"):
        recovery_end("")


def test_segment_range_crosses_an_xlogid_and_is_empty_backwards() -> None:
    assert segment_range("000000010000000000000FFE", "000000010000000100000001", MB) == [
        "000000010000000000000FFE", "000000010000000000000FFF", "000000010000000100000000",
        "000000010000000100000001"]
    assert segment_range("000000010000000000000005", "000000010000000000000004", MB) == []
