"""The agent's watchdog: a tiny separate process that stops the postmaster if the agent stalls.

The agent (:mod:`orchestrator.agent.runtime`) spawns it with :class:`Watchdog` and pets it over a
pipe with a monotonic deadline (``CLOCK_MONOTONIC`` is one clock for every process on Linux):
its lease deadline, or sooner if its own decide-and-fence loop stalled. When a deadline passes
unpetted and the member is a primary (no ``standby.signal``; the postmaster alive), the watchdog
stops the postmaster by PID from ``postmaster.pid``: SIGINT (fast shutdown: new connections are
refused and every backend is terminated at once, so acknowledgements stop in milliseconds), then
SIGQUIT (immediate), then SIGKILL if it lingers.

What it covers: the agent frozen (SIGSTOP of its PID, a long GC or swap stall, a deadlock in its
loop) or killed (the pipe closes; the last deadline is still enforced). What it does not: a stall
of the whole host or VM (the watchdog freezes too; on resume it fires at once, but a backend may
run first), the watchdog itself stopped together with the agent (it runs in its own session so a
process-group stop of the agent spares it), or root killing it. A hardware/kernel watchdog
(``/dev/watchdog``) would cover the host; the lab has none.

Standard library only, so it starts fast and shares nothing with the agent that could hang it.
Run as ``python -m orchestrator.agent.watchdog --data-dir D --deadline T``; one JSON line per event.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO


def postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster's PID for ``data_dir``, or None when none runs.

    The PID from ``postmaster.pid`` is trusted only if that process is a ``postgres`` that is
    not a zombie, so a stale file whose PID was reused is never signalled.
    """
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0].strip()
        pid = int(first)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, IndexError, ValueError):
        return None
    name, rest = stat.split("(", 1)[1].rsplit(")", 1)
    if rest.split()[0] == "Z" or not name.startswith("postgres"):
        return None
    return pid


def is_standby(data_dir: Path) -> bool:
    """A member configured as a standby: ``standby.signal`` exists (promotion removes it)."""
    return (data_dir / "standby.signal").exists()


def stop_postmaster(pid: int, *, fast_wait_s: float = 2.0, immediate_wait_s: float = 2.0) -> str:
    """Fast shutdown by PID, then immediate, then SIGKILL; return how it ended.

    Acknowledgements stop with the first signal (the postmaster terminates every backend and
    refuses connections); the waits only bound how long the process may take to exit. A stalled
    postmaster (stopped: SIGSTOP, a debugger) acts on no signal but SIGKILL, so it and its stopped
    children get SIGKILL at once: its port closes, and no backend is left holding shared memory
    for the restart (a stopped process acknowledges nothing while it stays stopped).
    """
    if _state(pid) in ("T", "t"):
        for victim in (pid, *(child for child in _children(pid) if _state(child) in ("T", "t"))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if not _alive(pid):
                return "stopped by SIGKILL (it was stalled)"
            time.sleep(0.01)
        return "survived SIGKILL"
    for sig, wait in ((signal.SIGINT, fast_wait_s), (signal.SIGQUIT, immediate_wait_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return "gone"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return f"stopped by {signal.Signals(sig).name}"
            time.sleep(0.01)
    return "survived SIGKILL"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first, then the parent), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _alive(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state != "Z"


def _children(pid: int) -> list[int]:
    """Every process whose parent is ``pid`` (a postmaster's backends and auxiliary processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and len(fields) > 1 and fields[1] == str(pid):
                found.append(int(entry.name))
    return found


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"at": round(time.time(), 3), "event": event, **fields}), flush=True)


def run(data_dir: Path, deadline: float, pipe: IO[str]) -> None:
    """Serve pets from ``pipe`` (``deadline <monotonic>`` or ``stop``) until told to stop or fenced after EOF."""
    fd = pipe.fileno()
    open_pipe = True
    buffer = ""
    while True:
        now = time.monotonic()
        if now >= deadline:
            pid = postmaster_pid(data_dir)
            if pid is not None and not is_standby(data_dir):
                late = now - deadline
                _emit("fence", pid=pid, late_s=round(late, 3))
                _emit("fenced", pid=pid, how=stop_postmaster(pid))
            if not open_pipe:
                _emit("exit", reason="agent gone; last deadline enforced")
                return
            deadline = float("inf")  # fenced or nothing to fence: wait for the next pet
            continue
        if not open_pipe:
            if deadline == float("inf"):  # fenced (or nothing to fence) before its agent went away
                _emit("exit", reason="agent gone; nothing left to enforce")
                return
            time.sleep(min(0.05, deadline - now))
            continue
        ready, _, _ = select.select([fd], [], [], min(0.05, max(0.0, deadline - now)))
        if not ready:
            continue
        chunk = os.read(fd, 4096).decode()
        if not chunk:
            open_pipe = False
            _emit("agent-gone", deadline_in_s=round(deadline - time.monotonic(), 3))
            continue
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        for line in lines:
            word, _, value = line.partition(" ")
            if word == "stop":
                _emit("exit", reason="stopped by the agent")
                return
            if word == "deadline":
                deadline = float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator.agent.watchdog")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--deadline", required=True, type=float, help="the first monotonic deadline")
    args = parser.parse_args(argv)
    _emit("started", data_dir=str(args.data_dir), in_s=round(args.deadline - time.monotonic(), 3))
    run(args.data_dir, args.deadline, sys.stdin)
    return 0


class Watchdog:
    """The agent's handle on its watchdog process: spawn, pet, stop (by PID, never by name)."""

    def __init__(self, data_dir: Path, first_deadline: float, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")  # noqa: SIM115 - kept open for the child's whole life
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.agent.watchdog", "--data-dir", str(data_dir),
             "--deadline", repr(first_deadline)],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # a stop of the agent's process group must not freeze it
        )
        self._last = first_deadline

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def pet(self, deadline: float) -> None:
        """Move the deadline (only forward); a dead watchdog is the caller's to notice via :meth:`alive`."""
        if deadline <= self._last:
            return
        self._last = deadline
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.write(f"deadline {deadline!r}\n")
            self._proc.stdin.flush()

    def stop(self) -> None:
        """Tell it to exit without fencing, and wait; SIGKILL by PID if it does not."""
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.write("stop\n")
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._log.close()


if __name__ == "__main__":
    sys.exit(main())
