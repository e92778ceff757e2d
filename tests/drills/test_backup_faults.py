"""The archive-outage verdict rows from its measured facts (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.drills.backup_faults import outage_checks
from orchestrator.drills.verdict import CheckName

GOOD: dict[str, Any] = {
    "missing_segments": [], "segments_checked": 40, "first_segment": "00000001000000000000000E",
    "last_segment": "000000010000000000000035", "pg_wal_peak_mb": 160.0, "catch_up_seconds": 4.1,
    "catch_up_timeout_s": 120.0, "alert_at": 1000.0, "alert_after_s": 31.5,
}


def test_a_clean_outage_passes_every_check() -> None:
    checks = {c.name: c for c in outage_checks(GOOD, budget_mb=512)}
    assert all(c.passed for c in checks.values()) and len(checks) == 4
    assert checks[CheckName.PG_WAL_WITHIN_BUDGET].reason == ("pg_wal peaked at 160.0 MB, within the 512 MB budget "
                                                             "(backup.max_pg_wal_mb)")


@pytest.mark.parametrize(("change", "failed", "words"), [
    ({"missing_segments": ["000000010000000000000010"]}, CheckName.NO_WAL_DROPPED,
     "1 of 40 segments are missing from the archive (first 000000010000000000000010)"),
    ({"pg_wal_peak_mb": 600.0}, CheckName.PG_WAL_WITHIN_BUDGET, "over the 512 MB budget"),
    ({"alert_at": None, "alert_after_s": None}, CheckName.ARCHIVE_ALERT, "no archive-failed alert"),
    ({"catch_up_seconds": None}, CheckName.ARCHIVE_CAUGHT_UP, "had not caught up 120 s after"),
], ids=["dropped", "budget", "no-alert", "no-catch-up"])
def test_each_failure_fails_exactly_its_check(change: dict[str, Any], failed: CheckName, words: str) -> None:
    checks = outage_checks({**GOOD, **change}, budget_mb=512)
    assert [c.name for c in checks if not c.passed] == [failed]
    assert words in next(c.reason for c in checks if not c.passed)
