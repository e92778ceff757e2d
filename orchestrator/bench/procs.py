"""Processes and ports of the benchmarked systems, through psutil: the bench's only psutil user.

The runner (:mod:`orchestrator.bench.runner`) checks with :func:`wait_ports_free` that a
system's ports are free before it starts, and with :func:`processes_under` that nothing of
it survives its round; the peers' launchers (:mod:`orchestrator.bench.patroni`,
:mod:`orchestrator.bench.pgautofailover`) find a daemon's sub-processes and sockets here.
:mod:`orchestrator.processes` (also psutil) keeps the per-PID basics (alive, gone, pid
files); this module adds what only the bench needs: ports, sockets and survivors.

Why a port can be busy although nobody listens on it: every port of this machine's
ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 here) can be the
local end of some client's connection, and on Linux a client-side socket, also in
TIME_WAIT for 60 s after it closed, refuses a listener's ``bind`` even with
``SO_REUSEADDR``. A server-side TIME_WAIT does not (every peer sets ``SO_REUSEADDR``:
PostgreSQL, Patroni's REST server, ZooKeeper), so "free" means: a ``bind`` with
``SO_REUSEADDR`` succeeds, exactly as the peer's own will.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchestrator.errors import LabError
from orchestrator.processes import read_pid
from orchestrator.waiting import poll

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@dataclass(frozen=True)
class Holder:
    """One socket on a port we need: who holds it and in which TCP state."""

    port: int
    status: str                 # psutil's CONN_* ("LISTEN", "ESTABLISHED", "TIME_WAIT", ...)
    pid: int | None             # None for TIME_WAIT (no process owns it any more)
    name: str | None
    remote: str | None

    def __str__(self) -> str:
        who = f"pid {self.pid} ({self.name})" if self.pid is not None else "no process"
        return f"{self.port}: {self.status} {who}{f' to {self.remote}' if self.remote else ''}"


@dataclass(frozen=True)
class Survivor:
    pid: int
    name: str
    cmdline: str

    def __str__(self) -> str:
        return f"pid {self.pid} {self.name}: {self.cmdline[:160]}"


# ---- processes ---------------------------------------------------------------------------------


def is_running_pid(pid: int | None) -> bool:
    """``pid`` exists and is not a zombie. Unlike :func:`orchestrator.processes.is_running` it never
    reaps: a launcher's ``Popen`` must still collect its own child's exit status."""
    if pid is None:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def running_pid(path: Path) -> int | None:
    """The pid file's PID if that process is alive."""
    pid = read_pid(path)
    return pid if is_running_pid(pid) else None


def descendants(roots: Iterable[int]) -> list[int]:
    """Every live descendant of ``roots`` (PostgreSQL's backends and auxiliary processes)."""
    found: set[int] = set()
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            found.update(c.pid for c in psutil.Process(pid).children(recursive=True) if is_running_pid(c.pid))
    return sorted(found)


def session_members(session: int, *, needle: str | None = None) -> list[int]:
    """Live processes in session ``session`` (whose command line contains ``needle``, if given)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if os.getsid(proc.pid) != session or not is_running_pid(proc.pid):
                continue
        except OSError:
            continue
        if needle is None or needle in " ".join(proc.info["cmdline"] or ()):
            found.append(proc.pid)
    return sorted(found)


def cmdline_contains(pid: int, needle: str) -> bool:
    try:
        return needle in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def processes_under(path: Path) -> list[Survivor]:
    """Live processes working in ``path``: their cwd is under it or their command line names it.

    PostgreSQL's backends run with the data directory as cwd, Patroni and pg_autoctl with
    their node directory, ZooKeeper and our controllers name their files on the command line.
    """
    root = str(path.resolve())
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "cwd", "status"]):
        info = proc.info
        if proc.pid == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(info["cmdline"] or ())
        cwd = info["cwd"] or ""
        if root in cmdline or cwd == root or cwd.startswith(root + os.sep):
            found.append(Survivor(proc.pid, info["name"] or "?", cmdline))
    return found


def kill(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL each PID (ours, found by :func:`processes_under`); return those still alive after."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    poll(lambda: not any(is_running_pid(p) for p in pids), timeout=timeout, interval=0.05)
    return [p for p in pids if is_running_pid(p)]


def local_ports(pid: int, remote_ports: set[int]) -> set[int]:
    """Local ports of ``pid``'s TCP connections to any of ``remote_ports``."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in conns if c.raddr and c.raddr.port in remote_ports}


# ---- ports -------------------------------------------------------------------------------------


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for clients' local ports (``ip_local_port_range``)."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def bindable(address: str, port: int) -> bool:
    """A listener could bind ``address:port`` now (with ``SO_REUSEADDR``, as every peer does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def holders(ports: Iterable[int]) -> list[Holder]:
    """Every TCP socket whose local port is one of ``ports``, with its owner when there is one."""
    wanted = set(ports)
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port in wanted:
            name = None
            if conn.pid is not None:
                with contextlib.suppress(psutil.Error):
                    name = psutil.Process(conn.pid).name()
            remote = f"{conn.raddr.ip}:{conn.raddr.port}" if conn.raddr else None
            found.append(Holder(conn.laddr.port, conn.status, conn.pid, name, remote))
    return sorted(found, key=lambda h: (h.port, h.status))


def wait_ports_free(address: str, ports: Iterable[int], timeout: float) -> tuple[float, list[Holder]]:
    """Wait until every port is bindable; return the seconds waited and who held them at first.

    A client-side TIME_WAIT lasts 60 s, so ``timeout`` should exceed that.

    :raises LabError: a port is still taken after ``timeout``; the message names each holder.
    """
    ports = sorted(set(ports))
    started = time.monotonic()
    first: list[Holder] | None = None
    while busy := [p for p in ports if not bindable(address, p)]:
        if first is None:
            first = holders(busy)
        if time.monotonic() - started > timeout:
            low, high = ephemeral_range()
            held = "; ".join(map(str, holders(busy))) or "no socket listed (another network namespace?)"
            raise LabError(f"ports {busy} on {address} still taken after {timeout:.0f}s ({held}); "
                           f"ports inside the ephemeral range {low}-{high} can be any client's local end: "
                           "pick a --port-base below it or stop the holder")
        time.sleep(0.5)
    return time.monotonic() - started, first or []
