"""Process helpers against real short-lived processes: stop by PID, zombies, escalation, scans."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import LabError
from orchestrator.processes import is_gone, is_running, pids_mentioning, read_pid, spawn, stop, stop_all, wait_gone
from orchestrator.waiting import poll

IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
              "time.sleep(60)"


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for pid in pids_mentioning(str(tmp_path)):   # a failed test leaves nothing behind
        stop(pid, sig=signal.SIGKILL)


def _sleeper(workdir: Path, name: str = "sleeper", code: str = "import time; time.sleep(60)") -> int:
    # The work directory is in the command line, so pids_mentioning finds it.
    return spawn([sys.executable, "-c", code, str(workdir / name)], log=workdir / f"{name}.log", cwd=workdir)


def test_spawned_process_runs_detached_and_stops_by_pid(workdir: Path) -> None:
    pid = _sleeper(workdir)
    assert is_running(pid) and not is_gone(pid)
    assert pids_mentioning(str(workdir / "sleeper")) == [pid]
    stop(pid)
    assert not is_running(pid)
    assert wait_gone(pid, timeout=10)   # PID 1 reaps it: then it is gone, not only stopped
    assert is_gone(pid) and pids_mentioning(str(workdir)) == []


def test_stop_escalates_to_sigkill_after_the_timeout(workdir: Path) -> None:
    pid = _sleeper(workdir, "stubborn", IGNORE_TERM)
    assert poll(lambda: "ready" in (workdir / "stubborn.log").read_text(), timeout=10, interval=0.02)
    stop(pid, timeout=0.3)
    assert not is_running(pid)


def test_stop_all_stops_side_by_side_and_skips_what_is_not_running(workdir: Path) -> None:
    pids = [_sleeper(workdir, f"s{n}") for n in range(3)]
    stop(pids[0])
    stop_all([*pids, 2**22 + 1])   # above pid_max's default: never a process
    assert not any(is_running(pid) for pid in pids)


def test_zombie_child_is_not_running_and_is_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # exited but unreaped: a zombie until is_running() (or is_gone()) collects it
    assert poll(lambda: not is_running(child.pid), timeout=10, interval=0.01)
    assert is_gone(child.pid)
    child.returncode = 0   # reaped above, not by Popen: keep its __del__ quiet


def test_stop_of_a_missing_pid_does_nothing() -> None:
    stop(2**22 + 1)
    assert wait_gone(2**22 + 1, timeout=0.1)


def test_stop_raises_when_sigkill_cannot_stop_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.processes._signal", lambda pids, sig: list(pids))
    monkeypatch.setattr("orchestrator.processes.is_running", lambda pid: True)
    monkeypatch.setattr("orchestrator.processes._KILL_WAIT_S", 0.05)
    with pytest.raises(LabError, match=r"process\(es\) 4242 survived SIGKILL; inspect them with ps -p 4242"):
        stop(4242, timeout=0.05)


def test_read_pid(tmp_path: Path) -> None:
    (tmp_path / "a.pid").write_text("123\n/data\n")
    (tmp_path / "b.pid").write_text("\n")
    assert read_pid(tmp_path / "a.pid") == 123
    assert read_pid(tmp_path / "b.pid") is None
    assert read_pid(tmp_path / "missing.pid") is None
