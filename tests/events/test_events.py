"""The JSON event log: line format, context, odd values, threads, isolation from other loggers."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.events import EventLog


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_one_json_object_per_line_with_ts_event_context_then_fields() -> None:
    out = io.StringIO()
    log = EventLog(out, controller="dc1:ab12cd34")
    before = time.time()
    log.emit("promoted", cluster="payments", member="b", seconds=0.0123)
    after = time.time()
    (line,) = _lines(out)
    # The same text json.dumps gives for the dict in this order (default separators).
    record = json.loads(line)
    assert list(record) == ["ts", "event", "controller", "cluster", "member", "seconds"]
    assert line == json.dumps({**record})
    assert record["event"] == "promoted" and record["controller"] == "dc1:ab12cd34"
    assert before - 1e-6 <= record["ts"] <= after + 1e-6
    assert record["ts"] == round(record["ts"], 6)


def test_a_field_overrides_the_context_and_values_json_cannot_hold_become_strings() -> None:
    out = io.StringIO()
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    EventLog(out, controller="x", cluster="ctx").emit("detected", cluster="payments", at=when, path=Path("/a b"),
                                                        failed=("a", None))
    record = json.loads(_lines(out)[0])
    assert record["cluster"] == "payments"
    assert record["at"] == str(when) and record["path"] == "/a b" and record["failed"] == ["a", None]


def test_percent_signs_in_the_event_are_written_verbatim() -> None:
    out = io.StringIO()
    EventLog(out).emit("100%s done %(x)s", note="50%")
    record = json.loads(_lines(out)[0])
    assert record["event"] == "100%s done %(x)s" and record["note"] == "50%"


def test_lines_from_many_threads_stay_whole() -> None:
    out = io.StringIO()
    log = EventLog(out, controller="c")

    def write(n: int) -> None:
        for i in range(200):
            log.emit("tick", thread=n, i=i, padding="x" * 100)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [json.loads(line) for line in _lines(out)]
    assert len(records) == 1600
    assert {(r["thread"], r["i"]) for r in records} == {(n, i) for n in range(8) for i in range(200)}


def test_two_logs_write_only_to_their_own_stream_and_not_to_the_root_logger(caplog: pytest.LogCaptureFixture
                                                                            ) -> None:
    first, second = io.StringIO(), io.StringIO()
    EventLog(first, controller="one").emit("a")
    EventLog(second, controller="two").emit("b")
    assert [json.loads(x)["event"] for x in _lines(first)] == ["a"]
    assert [json.loads(x)["event"] for x in _lines(second)] == ["b"]
    assert caplog.records == []


def test_every_line_is_flushed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with path.open("w") as stream:
        EventLog(stream, controller="c").emit("started")
        assert json.loads(path.read_text())["event"] == "started"   # read while the file is still open
