"""Starting and stopping local processes by PID: the lab's, the drills', the tests', the bench's.

Everything dr-orchestrator starts on this machine goes through :func:`spawn` and is stopped
by :func:`stop` (or :func:`stop_all`) with its PID; nothing is ever killed by name. A
killed process that is not our child lingers as a zombie until PID 1 reaps it (about
1.5 s here), so "running" means present and not a zombie (psutil's ``status()``), and
:func:`wait_gone` waits for the PID to vanish when a restart needs the old lock files
released. :func:`pids_mentioning` finds what still works in a directory, by command line.

Public API: :func:`spawn`, :func:`stop`, :func:`stop_all`, :func:`is_running`,
:func:`is_gone`, :func:`wait_gone`, :func:`pids_mentioning`, :func:`port_in_use`,
:func:`read_pid`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import psutil

from orchestrator.errors import LabError
from orchestrator.waiting import poll

# How often a stop checks whether its process has exited, and how long SIGKILL may take.
_STOP_POLL_S = 0.02
_KILL_WAIT_S = 5.0


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _reap(proc: psutil.Process) -> None:
    """Collect a zombie child of ours (a no-op for anyone else's process)."""
    with contextlib.suppress(psutil.TimeoutExpired, psutil.NoSuchProcess, ChildProcessError):
        proc.wait(timeout=0)


def is_running(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (a zombie child of ours is reaped)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return True
        _reap(proc)
    except psutil.NoSuchProcess:   # ZombieProcess is one too
        pass
    return False


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists at all (not even as a zombie)."""
    proc = _process(pid)
    if proc is not None:
        _reap(proc)
    return not psutil.pid_exists(pid)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until ``pid`` no longer exists (reaped, by us or by PID 1); False after ``timeout``."""
    proc = _process(pid)
    if proc is None:
        return True
    try:
        proc.wait(timeout=timeout)
    except psutil.TimeoutExpired:
        return False
    return True


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    cwd: Path,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    netns: str | None = None,
) -> int:
    """Start ``argv`` detached, in its own session, output appended to ``log``; return its PID.

    The process is not our child (a shell starts it in the background and exits), so it
    outlives the caller and is reaped by PID 1 like a daemon. With ``user`` it runs as
    that unprivileged user (postgres refuses root), which also owns the log it creates.
    With ``netns`` it runs inside that network namespace (``ip netns exec``, then ``setpriv``
    for ``user``: neither forks, so the PID is still the command's).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if netns is not None:
        from orchestrator.network.namespaces import exec_prefix

        argv = [*exec_prefix(netns, user), *argv]
        user = None   # ip netns exec needs root; setpriv drops to the user
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


def _signal(pids: Iterable[int], sig: int) -> list[int]:
    """Send ``sig`` to each running PID; return those it was sent to."""
    sent = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if is_running(pid):
                psutil.Process(pid).send_signal(sig)
                sent.append(pid)
    return sent


def _wait_stopped(pids: list[int], timeout: float) -> list[int]:
    """The PIDs still running (not even a zombie) after waiting up to ``timeout``."""
    remaining = pids

    def all_stopped() -> bool:
        nonlocal remaining
        remaining = [pid for pid in remaining if is_running(pid)]
        return not remaining

    poll(all_stopped, timeout=timeout, interval=_STOP_POLL_S)
    return remaining


def stop_all(pids: Iterable[int], *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Send ``sig`` to every PID, wait until none runs; SIGKILL the survivors after ``timeout``.

    The processes stop side by side, so the wait is the slowest one's, not their sum.

    :raises LabError: a process survived SIGKILL.
    """
    survivors = _wait_stopped(_signal(pids, sig), timeout)
    if survivors:
        survivors = _wait_stopped(_signal(survivors, signal.SIGKILL), _KILL_WAIT_S)
    if survivors:
        listed = ",".join(map(str, survivors))
        raise LabError(f"process(es) {listed} survived SIGKILL; inspect them with ps -p {listed}")


def stop(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Send ``sig`` to ``pid`` and wait until it stops running; SIGKILL after ``timeout``.

    :raises LabError: the process survived SIGKILL.
    """
    stop_all([pid], sig=sig, timeout=timeout)


def pids_mentioning(text: str) -> list[int]:
    """PIDs of running processes whose command line contains ``text`` (e.g. a lab directory)."""
    found = []
    for proc in psutil.process_iter(["cmdline"], ad_value=None):
        cmdline: list[str] | None = proc.info["cmdline"]   # None: gone, or a zombie
        # psutil splits a command line that was rewritten in place (a PostgreSQL backend's) on
        # spaces; joining them back finds a path with spaces too.
        if proc.pid != os.getpid() and cmdline and text in " ".join(cmdline):
            found.append(proc.pid)
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
