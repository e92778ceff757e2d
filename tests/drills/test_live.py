"""The game day's live panel: journals tailed line by line, running totals, the panel's text."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.drills.live import JournalTail, LiveCounts, LiveView

T0 = 1_750_000_000.0


def _rec(i: int, at: float, outcome: Outcome = Outcome.ACK) -> JournalRecord:
    return JournalRecord(id=f"00000000-0000-0000-0000-{i:012d}", src=1, dst=2, amount=1, start=at - 0.004, end=at,
                         outcome=outcome, error=None if outcome is Outcome.ACK else "connection refused")


def _line(record: JournalRecord) -> bytes:
    return (record.model_dump_json() + "\n").encode()


def test_tail_reads_only_complete_lines_and_files_that_appear_later(tmp_path: Path) -> None:
    first, second = tmp_path / "j-1.jsonl", tmp_path / "j-2.jsonl"
    tail = JournalTail(lambda: sorted(tmp_path.glob("j-*.jsonl")))
    assert tail.read() == []
    whole, cut = _line(_rec(1, T0)), _line(_rec(2, T0 + 1))
    first.write_bytes(whole + cut[:10])                  # a writer mid-line
    assert [r.id for r in tail.read()] == [_rec(1, T0).id]
    with first.open("ab") as handle:
        handle.write(cut[10:])
    second.write_bytes(_line(_rec(3, T0 + 2, Outcome.FAIL)))
    assert [r.id for r in tail.read()] == [_rec(2, T0).id, _rec(3, T0).id]
    assert tail.read() == []                              # nothing read twice


def test_counts_rate_and_budget_burn() -> None:
    counts = LiveCounts(availability_percent=99.0, rate_window_s=5.0)
    assert counts.burn() is None and counts.rate(T0) == 0.0
    counts.add([_rec(i, T0 + i * 0.1) for i in range(100)])     # 100 acks over 10 s
    counts.add([_rec(1000, T0 + 9.95, Outcome.FAIL)])
    assert (counts.acks, counts.errors, counts.attempts) == (100, 1, 101)
    assert counts.rate(T0 + 10.0) == pytest.approx(50 / 5.0)     # the 50 acks of the last 5 s
    assert counts.burn() == pytest.approx((1 / 101) / 0.01)      # 1% errors allowed by 99%


def test_view_shows_window_throughput_errors_faults_and_burn(tmp_path: Path) -> None:
    journal = tmp_path / "j-1.jsonl"
    journal.write_bytes(b"".join(_line(_rec(i, T0 + i * 0.01)) for i in range(400))
                        + _line(_rec(999, T0 + 4.0, Outcome.INDETERMINATE)))
    out = io.StringIO()
    console = Console(file=out, width=120, record=True, force_terminal=False)
    with LiveView(console, duration_s=120, availability_percent=99.99, clock=lambda: T0 + 4.0) as view:
        view.load_started(lambda: [journal], T0)
        view.fault_injected("primary-crash", T0 + 3.0)
        view.progress("injecting primary-crash: kill-primary")
    text = console.export_text()
    assert view.counts.acks == 400 and view.counts.errors == 1
    assert "4 / 120 s" in text and "acknowledged  400" in text and "1 (0.249%)" in text
    assert "80.0 transfers/s" in text                                 # 400 acks in the last 5 s
    assert "faults        1: +3s primary-crash" in text
    assert "24.9x the 99.99% objective allows" in text
    assert "injecting primary-crash: kill-primary" in text
