"""freeze() on real processes (a shell and its child): every one stopped, every one resumed, even
when the stall is interrupted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestrator.drills import stalls
from orchestrator.errors import OrchestratorError
from orchestrator.processes import spawn, stop_all
from orchestrator.waiting import poll


@pytest.fixture
def family(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A parent shell with one child (as a postmaster has backends): (parent, child)."""
    parent = spawn(["/bin/sh", "-c", "sleep 60 & wait"], log=tmp_path / "family.log", cwd=tmp_path)
    children: list[int] = []
    assert poll(lambda: bool(children.extend(c.pid for c in psutil.Process(parent).children()) or children),
                timeout=10, interval=0.02)
    try:
        yield parent, children[0]
    finally:
        stop_all([children[0], parent])


def _stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def test_a_stall_stops_the_process_and_its_children_then_resumes_them(family: tuple[int, int]) -> None:
    parent, child = family
    result: list[tuple[float, float, tuple[int, ...]]] = []
    thread = threading.Thread(target=lambda: result.append(stalls.freeze(parent, 0.5)))
    thread.start()
    try:
        assert poll(lambda: _stopped(parent) and _stopped(child), timeout=5, interval=0.01)
    finally:
        thread.join(timeout=10)
    at, healed, pids = result[0]
    assert set(pids) == {parent, child} and healed - at >= 0.5
    assert not _stopped(parent) and not _stopped(child)


def test_an_interrupted_stall_still_resumes_every_process(family: tuple[int, int],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    parent, child = family

    def interrupted(_: float) -> None:
        assert _stopped(parent) and _stopped(child)
        raise KeyboardInterrupt

    monkeypatch.setattr(stalls, "_hold", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stalls.freeze(parent, 30)
    assert not _stopped(parent) and not _stopped(child)


def test_a_stall_of_a_process_that_is_gone_is_refused() -> None:
    gone = max(psutil.pids()) + 100000
    with pytest.raises(OrchestratorError, match=f"pid {gone} is not running; nothing to stall"):
        stalls.freeze(gone, 1)
