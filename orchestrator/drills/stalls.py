"""Stall faults: freeze a process (SIGSTOP) for a while, then thaw it (SIGCONT), by PID.

A stalled process is the nastiest of silent failures: its peers see no refusal and no reset,
its kernel still completes connects and acknowledges every byte, and when it wakes it carries
on from where it was, believing whatever it believed before (a VM freeze, a long GC pause,
a hung storage path). :func:`inject_stall` is what :func:`orchestrator.drills.faults.inject`
delegates the ``stall-*`` kinds to: it stops the target, waits out the stall and always resumes
every process it stopped (in a ``finally``, even when the drill is interrupted), and returns an
:class:`~orchestrator.drills.faults.Injected` with ``healed_at``. :func:`false_failovers` is the
pure judgement the drill report and the soak use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Sequence

import psutil

from orchestrator.coordination import Coordinator
from orchestrator.decisions.detection import stall_tolerance_s
from orchestrator.drills.faults import Injected, current_primary
from orchestrator.drills.measure import Promotion
from orchestrator.drills.spec import (
    ZOOKEEPER_LEADER,
    Stall,
    StallLeaderController,
    StallPrimary,
)
from orchestrator.drills.verdict import Check, CheckName, Verdict
from orchestrator.errors import OrchestratorError
from orchestrator.lab import Lab
from orchestrator.topology import Cluster, Topology
from orchestrator.waiting import poll


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (none if it is gone)."""
    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def freeze(root: int, duration_s: float) -> tuple[float, float, tuple[int, ...]]:
    """SIGSTOP ``root`` and every descendant for ``duration_s``; then SIGCONT every one of them.

    The root is stopped first, so it forks nothing new while its children are listed and
    stopped (a postmaster forks a backend per connection); the listing is repeated until it
    finds no new process. The stall counts from when the last one is stopped: until then its
    children still commit and acknowledge (a backend and its walsender finish a transaction in
    milliseconds), and a client-observed outage measured from the first SIGSTOP would start with
    those acknowledgements. Resumption is in a ``finally``: an interrupted drill leaves nothing
    stopped. Returns (every process stopped at, resumed at, the PIDs stopped).

    :raises OrchestratorError: ``root`` is not running (nothing was stopped).
    """
    stopped: list[int] = []
    try:
        os.kill(root, signal.SIGSTOP)
    except ProcessLookupError:
        raise OrchestratorError(f"pid {root} is not running; nothing to stall") from None
    stopped.append(root)
    try:
        while fresh := [p for p in _tree(root) if p not in stopped]:
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        # kill() returns before the kernel has stopped the process: the stall starts when every one is.
        _until(stopped, frozen=True)
        at = time.time()
        _hold(duration_s)
    finally:
        for pid in reversed(stopped):   # children first: the postmaster wakes to running children
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        _until(stopped, frozen=False)
        healed = time.time()
    return at, healed, tuple(stopped)


def _hold(duration_s: float) -> None:
    """The fault's length (not a synchronisation): the stalled processes stay stopped meanwhile."""
    time.sleep(duration_s)


def _until(pids: list[int], *, frozen: bool, timeout: float = 2.0) -> None:
    """Wait (bounded) until every PID that still exists is stopped (``frozen``) or running again."""
    def settled() -> bool:
        for pid in pids:
            try:
                if (psutil.Process(pid).status() == psutil.STATUS_STOPPED) != frozen:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    poll(settled, timeout=timeout, interval=0.001)


def inject_stall(lab: Lab, coord: Coordinator, cluster: Cluster, fault: Stall) -> Injected:
    """Stall the fault's target now, for ``fault.duration_s``; returns once it is resumed.

    :raises OrchestratorError: the target cannot be found (nothing was stopped).
    """
    if isinstance(fault, StallPrimary):
        primary = current_primary(coord, cluster)
        pid = lab.layout(cluster, cluster.member(primary)).postmaster_pid()
        if pid is None:
            raise OrchestratorError(f"primary {primary} has no running postmaster; nothing to stall")
        what, dc = f"{primary}'s PostgreSQL (postmaster {pid} and its children)", cluster.member(primary).datacenter
    elif isinstance(fault, StallLeaderController):
        leader = coord.leader_identity()
        if leader is None:
            raise OrchestratorError("no controller leads; nothing to stall")
        dc = leader.split(":")[0]
        found = lab.controller_pid(dc)
        if found is None:
            raise OrchestratorError(f"leader {leader} has no controller pid in the lab")
        pid, what = found, f"the leading controller {leader} (pid {found})"
    else:
        servers = lab.zookeeper()
        if fault.datacenter == ZOOKEEPER_LEADER:
            server = next((s for s in servers if s.mode() == "leader"), None)
        else:
            server = next((s for s in servers if s.datacenter == fault.datacenter), None)
        found = server.pid() if server is not None else None
        if server is None or found is None:
            raise OrchestratorError(f"no running ZooKeeper server for {fault.datacenter!r}")
        pid, dc = found, server.datacenter
        what = f"ZooKeeper server {server.myid} in {server.datacenter} (pid {found})"
    at, healed, pids = freeze(pid, fault.duration_s)
    return Injected(at, f"stall of {what} for {fault.duration_s:g} s (SIGSTOP, then SIGCONT)", pids, dc,
                    healed_at=healed)


# ---- false failovers ------------------------------------------------------------------------


def stall_tolerance(topology: Topology, fault: Stall) -> float | None:
    """How long a stall of this kind may last without any failover; None: no bound, never one.

    A stalled primary may be failed over once detection could tell it from a dead one
    (:func:`~orchestrator.decisions.detection.stall_tolerance_s`). A stalled controller or
    ZooKeeper server leaves a healthy primary: no failover is ever due, whatever the length.
    """
    return stall_tolerance_s(topology) if isinstance(fault, StallPrimary) else None


def false_failovers(fault: Stall, tolerance_s: float | None, promotions: Iterable[Promotion]) -> tuple[Promotion, ...]:
    """The failovers a stall must not have caused: every one when the stall was within its tolerance
    (or has none). ``promotions``: the drill's operations (:func:`~orchestrator.drills.measure.promotions`)."""
    failovers = tuple(p for p in promotions if p.kind == "failover")
    if tolerance_s is not None and fault.duration_s >= tolerance_s:
        return ()
    return failovers


def false_failover_check(fault: Stall, tolerance_s: float | None, false: Sequence[Promotion]) -> Check:
    bound = "any length" if tolerance_s is None else f"the {tolerance_s:g} s tolerance"
    if not false:
        if tolerance_s is not None and fault.duration_s >= tolerance_s:
            return Check(name=CheckName.NO_FALSE_FAILOVER, passed=True,
                         reason=f"the {fault.duration_s:g} s stall outlasted {bound}: a failover may follow")
        return Check(name=CheckName.NO_FALSE_FAILOVER, passed=True,
                     reason=f"no failover after a {fault.duration_s:g} s stall (within {bound})")
    first = false[0]
    return Check(name=CheckName.NO_FALSE_FAILOVER, passed=False,
                 reason=f"false failover: {first.source} -> {first.target} after a {fault.duration_s:g} s "
                        f"{fault.kind} within {bound}")


def with_check(verdict: Verdict, check: Check) -> Verdict:
    checks = (*verdict.checks, check)
    return Verdict(passed=all(c.passed for c in checks), checks=checks)
