"""The watchdog process's loop, on a data directory with no postmaster (no servers needed)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from orchestrator.agent import watchdog
from orchestrator.waiting import poll


def test_a_watchdog_whose_agent_goes_away_after_its_deadline_exits(tmp_path: Path) -> None:
    """Its deadline passed (nothing to fence here), then its agent died: nothing is left to enforce,
    so it must exit rather than outlive the agent forever."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as pipe:
        loop = threading.Thread(target=watchdog.run, args=(tmp_path, time.monotonic() - 1, pipe), daemon=True)
        loop.start()
        os.close(write_end)  # the agent is gone
        assert poll(lambda: not loop.is_alive(), timeout=5, interval=0.02), "the watchdog outlived its agent"


def test_a_watchdog_told_to_stop_exits_without_fencing(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as pipe:
        loop = threading.Thread(target=watchdog.run, args=(tmp_path, time.monotonic() + 60, pipe), daemon=True)
        loop.start()
        os.write(write_end, b"stop\n")
        assert poll(lambda: not loop.is_alive(), timeout=5, interval=0.02)
        os.close(write_end)
