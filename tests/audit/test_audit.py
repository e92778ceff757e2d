"""The audit chain: any single-byte change, deletion, reorder or insertion is caught by verify."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.audit import GENESIS, AuditLog, log_files, read_entries, verify

DAY = 86400.0


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def write_log(directory: Path, gaps: list[float]) -> list[dict[str, object]]:
    """One entry per gap (seconds after the previous one), so a log may span several days."""
    clock = Clock(1_780_000_000.0)
    log = AuditLog(directory, clock=clock)
    entries = []
    for index, gap in enumerate(gaps):
        clock.now += gap
        entries.append(log.append(who=f"user-{index}", action="switchover", outcome="ok", source="127.0.0.1",
                                  cluster="payments", to="dc2-a", note="é ünïcode"))
    return entries


def all_lines(directory: Path) -> list[tuple[Path, int]]:
    """(file, index) of every line, oldest first."""
    return [(path, i) for path in log_files(directory) for i in range(len(path.read_bytes().splitlines()))]


gaps = st.lists(st.sampled_from([1.0, 3600.0, DAY, 2 * DAY]), min_size=2, max_size=8)


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="drctl-audit-") as path:
        yield Path(path) / "audit"


def test_an_untouched_log_verifies_and_chains_across_days(tmp: Path) -> None:
    entries = write_log(tmp, [1.0, DAY, 1.0, 2 * DAY])
    assert len(log_files(tmp)) == 3
    assert verify(tmp).broken is None and verify(tmp).entries == 4
    assert entries[0]["prev"] == GENESIS
    assert [e["prev"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    days = [path.read_text().splitlines() for path in log_files(tmp)]
    assert [len(lines) for lines in days] == [1, 2, 1]
    # The first entry of a day chains to the last entry of the day before.
    assert json.loads(days[1][0])["prev"] == entries[0]["hash"]
    assert json.loads(days[2][0])["prev"] == entries[2]["hash"]
    assert [e["who"] for e in read_entries(tmp, since=float(entries[2]["ts"]))] == ["user-2", "user-3"]


def test_an_empty_directory_verifies(tmp: Path) -> None:
    assert verify(tmp) == verify(tmp) and verify(tmp).broken is None and verify(tmp).entries == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gaps=gaps, data=st.data())
def test_any_single_byte_change_is_detected(gaps: list[float], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        write_log(directory, gaps)
        path = data.draw(st.sampled_from(log_files(directory)))
        raw = bytearray(path.read_bytes())
        offset = data.draw(st.integers(0, len(raw) - 1))
        new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[offset]))
        raw[offset] = new
        path.write_bytes(bytes(raw))
        broken = verify(directory).broken
        assert broken is not None and broken.file == path   # caught in the file that was changed


@settings(max_examples=30, deadline=None)
@given(gaps=gaps, data=st.data())
def test_deleting_any_line_is_detected(gaps: list[float], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        write_log(directory, gaps)
        path, index = data.draw(st.sampled_from(all_lines(directory)))
        lines = path.read_bytes().splitlines(keepends=True)
        del lines[index]
        path.write_bytes(b"".join(lines))
        assert verify(directory).broken is not None


@settings(max_examples=30, deadline=None)
@given(gaps=gaps, data=st.data())
def test_reordering_two_lines_is_detected(gaps: list[float], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        write_log(directory, gaps)
        files = [p for p in log_files(directory) if len(p.read_bytes().splitlines()) >= 2] or log_files(directory)
        path = data.draw(st.sampled_from(files))
        lines = path.read_bytes().splitlines(keepends=True)
        if len(lines) < 2:   # one line per day: swap two days' lines instead
            other = data.draw(st.sampled_from([p for p in log_files(directory) if p != path]))
            a, b = path.read_bytes(), other.read_bytes()
            path.write_bytes(b)
            other.write_bytes(a)
        else:
            i, j = data.draw(st.lists(st.integers(0, len(lines) - 1), min_size=2, max_size=2, unique=True))
            lines[i], lines[j] = lines[j], lines[i]
            path.write_bytes(b"".join(lines))
        assert verify(directory).broken is not None


@settings(max_examples=30, deadline=None)
@given(gaps=gaps, data=st.data())
def test_inserting_a_line_is_detected(gaps: list[float], data: st.DataObject) -> None:
    """A copy of any entry, or a forged one with a correct hash, anywhere (the end included)."""
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as other:
        directory = Path(d)
        write_log(directory, gaps)
        forged = write_log(Path(other), [*gaps, 1.0])[-1]   # chains correctly onto this log's last entry
        copies = [line for p in log_files(directory) for line in p.read_bytes().splitlines(keepends=True)]
        line = data.draw(st.sampled_from([*copies, (json.dumps(forged, sort_keys=True, separators=(",", ":"))
                                                    + "\n").encode()]))
        path, index = data.draw(st.sampled_from([*all_lines(directory), (log_files(directory)[-1], -1)]))
        lines = path.read_bytes().splitlines(keepends=True)
        lines.insert(len(lines) if index < 0 else index, line)
        path.write_bytes(b"".join(lines))
        assert verify(directory).broken is not None


def test_verify_names_the_first_broken_entry(tmp: Path) -> None:
    write_log(tmp, [1.0, 1.0, 1.0, 1.0])
    path = log_files(tmp)[0]
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"outcome":"ok"', '"outcome":"no"')
    path.write_text("".join(lines))
    broken = verify(tmp).broken
    assert broken is not None and broken.file == path and broken.line == 2 and "hash" in broken.reason


def test_appends_continue_the_chain_after_a_new_log_object(tmp: Path) -> None:
    write_log(tmp, [1.0, 1.0])
    AuditLog(tmp).append(who="x", action="y", outcome="ok")
    assert verify(tmp).broken is None and verify(tmp).entries == 3


def test_the_controllers_actions_reach_the_audit_trail_whatever_their_fields(tmp: Path) -> None:
    import io

    from orchestrator.audit import AutomaticActions
    from orchestrator.events import EventLog

    log = EventLog(io.StringIO(), controller="dc3:abc")
    sink = AutomaticActions(AuditLog(tmp), "dc3:abc", log)
    log.subscribe(sink)
    log.emit("probe", cluster="payments")   # not an action: not audited
    log.emit("aborted", cluster="payments", operation="op1", kind="switchover", source="dc1-a", target="dc2-a",
             by="alice", who="x", outcome="y")
    log.emit("request", cluster="payments", id="req-1", request={"kind": "switchover", "to": "dc1-b"},
             result={"ok": False, "error": "no"})
    log.emit("promoted", cluster="payments", operation="op2", member="dc2-a", timeline=3)
    sink.close()
    entries = list(read_entries(tmp))
    assert [(e["action"], e["outcome"], e["who"], e["from"]) for e in entries] == [
        ("aborted", "ok", "controller dc3:abc", "controller"), ("request", "refused", "controller dc3:abc",
                                                                 "controller"),
        ("promoted", "ok", "controller dc3:abc", "controller")]
    assert entries[0]["details"]["source"] == "dc1-a" and entries[0]["details"]["who"] == "x"
    assert verify(tmp).broken is None
