"""Scheduled drills: which are due, pure."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.schedule import due_drills, next_after


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_due_only_after_its_slot_and_once_per_slot() -> None:
    schedules = {"primary-crash": "0 3 * * *", "planned-switchover": "30 3 * * *"}
    since = ts("2026-11-23 02:00:00")
    assert due_drills(schedules, {}, ts("2026-11-23 02:59:59"), since) == []
    assert due_drills(schedules, {}, ts("2026-11-23 03:00:00"), since) == ["primary-crash"]
    ran = {"primary-crash": ts("2026-11-23 03:00:01")}
    assert due_drills(schedules, ran, ts("2026-11-23 03:10:00"), since) == []
    assert due_drills(schedules, ran, ts("2026-11-23 03:31:00"), since) == ["planned-switchover"]


def test_missed_slots_run_once() -> None:
    last = {"primary-crash": ts("2026-11-20 03:00:00")}
    assert due_drills({"primary-crash": "0 3 * * *"}, last, ts("2026-11-23 12:00:00"), 0) == ["primary-crash"]


@given(st.floats(min_value=1.6e9, max_value=2.0e9))
def test_next_run_is_strictly_later_and_within_a_minute_for_every_minute_cron(after: float) -> None:
    nxt = next_after("* * * * *", after)
    assert after < nxt <= after + 60
