"""Starting and stopping local processes by PID: the lab's, the drills', the tests'.

Everything dr-orchestrator starts on this machine goes through :func:`spawn` and is stopped
by :func:`stop` with its PID; nothing is ever killed by name. A killed process that is
not our child lingers as a zombie until PID 1 reaps it (about 1.5 s here), so "running"
means present in ``/proc`` and not a zombie, and :func:`wait_gone` waits for the PID to
vanish when a restart needs the old lock files released.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.errors import LabError


def _state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may contain spaces; the state follows it.
    return raw.rsplit(")", 1)[1].split()[0]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (a zombie child of ours is reaped)."""
    state = _state(pid)
    if state == "Z":
        _reap(pid)
        return False
    return state is not None


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists at all (not even as a zombie)."""
    _reap(pid)
    return _state(pid) is None


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        time.sleep(0.02)
    return False


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    cwd: Path,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` detached, in its own session, output appended to ``log``; return its PID.

    The process is not our child (a shell starts it in the background and exits), so it
    outlives the caller and is reaped by PID 1 like a daemon. With ``user`` it runs as
    that unprivileged user (postgres refuses root).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    launcher = 'setsid "$@" </dev/null >>"$LAUNCH_LOG" 2>&1 & echo $!'
    proc = subprocess.run(
        ["/bin/sh", "-c", launcher, "sh", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**(env if env is not None else os.environ), "LAUNCH_LOG": str(log)},
        check=True,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
    )
    return int(proc.stdout.strip())


def stop(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Send ``sig`` to ``pid`` and wait until it stops running; SIGKILL after ``timeout``.

    :raises LabError: the process survived SIGKILL.
    """
    if not is_running(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not is_running(pid):
            return
        time.sleep(0.02)
    raise LabError(f"process {pid} survived SIGKILL; inspect it with ps -p {pid}")


def pids_mentioning(text: str) -> list[int]:
    """PIDs of running processes whose command line contains ``text`` (e.g. a lab directory)."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if is_running(pid)]


def port_in_use(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((address, port)) == 0


def read_pid(path: Path) -> int | None:
    """The PID on the first line of a pid file (ours or PostgreSQL's postmaster.pid)."""
    try:
        first = path.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() else None
