"""Fault injection against the lab: what a drill's ``fault:`` does, by PID, never by name.

Each injector returns a :class:`Injected` record (when, what, which PIDs) for the report.
Faults hit the *current* state: "the primary" is whoever ZooKeeper records as primary
now, "the leader" is the controller holding the election now.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.coordination import Coordinator
from orchestrator.drills.spec import (
    LINK_FAULTS,
    PRIMARY_DATACENTER,
    ZOOKEEPER_LEADER,
    ArchiveOutage,
    ControllerLeaderCrash,
    DatacenterOutage,
    Fault,
    KillPrimary,
    RegionLoss,
    StallLeaderController,
    StallPrimary,
    StallZooKeeper,
    Switchover,
    TotalLossRestore,
    ZooKeeperServerLoss,
)
from orchestrator.errors import CoordinationUnavailable, OrchestratorError
from orchestrator.lab import Lab
from orchestrator.topology import Cluster
from orchestrator.waiting import poll


@dataclass(frozen=True)
class Injected:
    """A fault as injected. A timed fault (a stall, a cut link) is healed by its injector before
    it returns, and ``healed_at`` records when: the fault window on the report's timeline."""

    at: float
    description: str
    pids: tuple[int, ...] = ()
    datacenter: str | None = None
    healed_at: float | None = None


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def current_primary(coord: Coordinator, cluster: Cluster) -> str:
    state, _ = coord.read_state(cluster.name)
    if state is None:
        raise OrchestratorError(f"{cluster.name}: no state in ZooKeeper; is a controller running?")
    return state.primary


def inject(lab: Lab, coord: Coordinator, cluster: Cluster, fault: Fault) -> Injected:
    """Inject ``fault`` now.

    :raises OrchestratorError: the target of the fault cannot be found (nothing was done).
    """
    if isinstance(fault, LINK_FAULTS):   # silent cuts in an isolated lab, healed before returning
        from orchestrator.drills.partitions import inject_link_fault

        return inject_link_fault(lab, coord, cluster, fault)
    if isinstance(fault, KillPrimary):
        primary = current_primary(coord, cluster)
        pid = lab.layout(cluster, cluster.member(primary)).postmaster_pid()
        if pid is None:
            raise OrchestratorError(f"primary {primary} has no running postmaster; nothing to kill")
        at = time.time()
        _kill([pid])
        dc = cluster.member(primary).datacenter
        return Injected(at, f"kill -9 of {primary}'s postmaster (pid {pid})", (pid,), dc)
    if isinstance(fault, DatacenterOutage):
        dc = fault.datacenter
        if dc == PRIMARY_DATACENTER:
            dc = cluster.member(current_primary(coord, cluster)).datacenter
        pids = [pid for m in cluster.members if m.datacenter == dc
                if (pid := lab.layout(cluster, m).postmaster_pid()) is not None]
        members = [m.name for m in cluster.members if m.datacenter == dc]
        controller = lab.controller_pid(dc)
        zk = next((s.pid() for s in lab.zookeeper() if s.datacenter == dc), None)
        # The members' agents go with their data centre (each one's watchdog finds its agent gone
        # and its postmaster already dead, and exits).
        agents = [lab.agent_pid(cluster.name, m) for m in members] if lab.with_agents else []
        pids += [p for p in (controller, zk, *agents) if p is not None]
        at = time.time()
        _kill(pids)
        return Injected(at, f"outage of {dc}: kill -9 of {', '.join(members)}"
                            f"{' and their agents' if agents else ''}, its controller and its "
                            f"ZooKeeper server", tuple(pids), dc)
    if isinstance(fault, RegionLoss):
        return _region_loss(lab, coord, cluster, fault)
    if isinstance(fault, StallPrimary | StallLeaderController | StallZooKeeper):
        from orchestrator.drills.stalls import inject_stall  # it builds on this module

        return inject_stall(lab, coord, cluster, fault)
    if isinstance(fault, ControllerLeaderCrash):
        leader = coord.leader_identity()
        if leader is None:
            raise OrchestratorError("no controller leads; nothing to crash")
        dc = leader.split(":")[0]
        pid = lab.controller_pid(dc)
        if pid is None:
            raise OrchestratorError(f"leader {leader} has no controller pid in the lab")
        at = time.time()
        _kill([pid])
        return Injected(at, f"kill -9 of the leading controller {leader} (pid {pid})", (pid,), dc)
    if isinstance(fault, ZooKeeperServerLoss):
        servers = lab.zookeeper()
        if fault.datacenter == ZOOKEEPER_LEADER:
            server = next((s for s in servers if s.mode() == "leader"), None)
        else:
            server = next((s for s in servers if s.datacenter == fault.datacenter), None)
        pid = server.pid() if server is not None else None
        if server is None or pid is None:
            raise OrchestratorError(f"no running ZooKeeper server for {fault.datacenter!r}")
        at = time.time()
        _kill([pid])
        return Injected(at, f"kill -9 of ZooKeeper server {server.myid} in {server.datacenter} (pid {pid})",
                        (pid,), server.datacenter)
    if isinstance(fault, Switchover):
        at = time.time()
        request_id = coord.submit_request(cluster.name, {"kind": "switchover", "to": fault.to})
        result = coord.wait_result(cluster.name, request_id, timeout=60)
        if result is None or not result.get("ok"):
            why = "no leader answered" if result is None else result.get("error")
            raise OrchestratorError(f"switchover to {fault.to} failed: {why}")
        return Injected(at, f"planned switchover to {fault.to} ({result.get('seconds')} s)")
    if isinstance(fault, ArchiveOutage | TotalLossRestore):
        from orchestrator.drills import backup_faults

        if isinstance(fault, ArchiveOutage):
            return backup_faults.archive_outage(lab, coord, cluster, fault)
        return backup_faults.total_loss_restore(lab, coord, cluster, fault)
    raise OrchestratorError(f"unknown fault {fault!r}")


def _region_loss(lab: Lab, coord: Coordinator, cluster: Cluster, fault: RegionLoss) -> Injected:
    """kill -9 of every process of the region at once; then, in manual mode, the operator's failover."""
    topo = lab.topology
    region = fault.region
    if region == PRIMARY_DATACENTER:
        region = topo.region_of(cluster.member(current_primary(coord, cluster)).datacenter)
    dcs = set(topo.datacenters_of(region))
    pids: list[int] = []
    members: list[str] = []
    for each in topo.clusters:
        for member in each.members:
            if member.datacenter not in dcs:
                continue
            members.append(member.name)
            pid = lab.layout(each, member).postmaster_pid()
            agent = lab.agent_pid(each.name, member.name) if lab.with_agents else None
            pids += [p for p in (pid, agent) if p is not None]
    pids += [p for dc in sorted(dcs) if (p := lab.controller_pid(dc)) is not None]
    pids += [p for s in lab.zookeeper() if s.datacenter in dcs if (p := s.pid()) is not None]
    at = time.time()
    _kill(pids)
    what = (f"loss of region {region} ({', '.join(sorted(dcs))}): kill -9 of {', '.join(members)}, their agents, "
            f"controllers and ZooKeeper servers")
    if fault.promote is None:
        return Injected(at, what + "; dr_failover automatic promotes the DR standby", tuple(pids), sorted(dcs)[0])
    # The operator's command, as soon as a leader in the surviving region answers it.
    result = _operator_failover(coord, cluster, fault.promote, timeout=60)
    if result is None or not result.get("ok"):
        why = "no leader answered" if result is None else result.get("error")
        raise OrchestratorError(f"failover to {fault.promote} after the loss of {region} failed: {why}")
    return Injected(at, what + f"; operator failover to {fault.promote} --accept-data-loss "
                              f"({result.get('seconds')} s, DR lag at loss {result.get('data_loss_window_s')} s)",
                    tuple(pids), sorted(dcs)[0])


def _operator_failover(coord: Coordinator, cluster: Cluster, target: str, *, timeout: float
                       ) -> dict[str, Any] | None:
    """``drctl failover --to TARGET --accept-data-loss`` from the drill, riding out the moments its
    ZooKeeper session spends reconnecting after the server it used went down with the region; when
    the leader holds a failover it started as the region went down, ``drctl abort`` first."""
    deadline = time.monotonic() + timeout
    request: dict[str, object] = {"kind": "failover", "to": target, "accept_data_loss": True}
    request_id: str | None = None

    def submitted() -> bool:
        nonlocal request_id
        try:
            request_id = coord.submit_request(cluster.name, request)
        except CoordinationUnavailable:
            return False
        return True

    def answer() -> dict[str, Any] | None:
        if not poll(submitted, timeout=max(0.1, deadline - time.monotonic()), interval=0.05) or request_id is None:
            raise OrchestratorError(f"could not submit {request['kind']} for {target}: ZooKeeper unreachable for "
                                    f"{timeout:.0f}s")
        while True:
            try:
                return coord.wait_result(cluster.name, request_id, timeout=max(0.1, deadline - time.monotonic()))
            except CoordinationUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)   # the session reconnects within its timeout; then the watch is set again

    result = answer()
    if result is not None and not result.get("ok") and " is in progress" in str(result.get("error")):
        # The region did not die in one instant: the leader saw the primary go first and started an
        # automatic failover to a member that died a moment later, and holds it (zero loss not provable).
        # The operator's runbook: end the held failover (drctl abort), then fail over to the DR site.
        request = {"kind": "abort", "by": "drill region-loss", "reason": "its target was lost with the region"}
        aborted = answer()
        if aborted is None or not aborted.get("ok"):
            return aborted
        request = {"kind": "failover", "to": target, "accept_data_loss": True}
        result = answer()
    return result
