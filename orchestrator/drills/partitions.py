"""Link faults for drills: silent cuts between the isolated lab's network namespaces, then the heal.

:func:`orchestrator.drills.faults.inject` delegates the link fault kinds here
(``partition-datacenter``, ``partition-primary-from-controllers``, ``isolate-zookeeper-minority``,
``one-way-cut``, ``flaky-link``). Each cut is an nftables table in the lab network's ``core``
namespace (:mod:`orchestrator.network.nftables`), held for the fault's ``duration_s`` and then
deleted: the returned :class:`~orchestrator.drills.faults.Injected` records the heal in
``healed_at``, the fault window on the report's timeline. A link fault needs an isolated lab
(``drctl lab up --isolated``): :func:`require_isolated` refuses it, in one line, before a
drill's load starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.coordination import Coordinator
from orchestrator.drills.faults import Injected, current_primary
from orchestrator.drills.measure import TimelineEvent
from orchestrator.drills.spec import (
    LINK_FAULTS,
    PRIMARY_DATACENTER,
    ZOOKEEPER_FOLLOWER,
    ZOOKEEPER_LEADER,
    ClientLink,
    Fault,
    FlakyLink,
    IsolateZooKeeperMinority,
    LinkFault,
    OneWayCut,
    PartitionDatacenter,
    PartitionPrimaryFromControllers,
)
from orchestrator.errors import DrillFileError, OrchestratorError
from orchestrator.lab import Lab
from orchestrator.network import nftables
from orchestrator.network.namespaces import LabNetwork
from orchestrator.topology import Cluster


def _needs_isolation(kind: str) -> str:
    return (f"fault {kind}: a link fault needs an isolated lab (each data centre in its own network namespace); "
            "bring the lab up with 'drctl lab up --isolated'")


def require_isolated(lab: Lab, fault: Fault) -> None:
    """:raises DrillFileError: ``fault`` is a link fault and ``lab`` runs on loopback."""
    if isinstance(fault, LINK_FAULTS) and lab.network is None:
        raise DrillFileError(_needs_isolation(str(fault.kind)))


def fault_window_events(injected: Injected | None) -> list[TimelineEvent]:
    """The heal of a timed fault, for the report's timeline (the fault itself is its start)."""
    if injected is None or injected.healed_at is None:
        return []
    return [TimelineEvent(at=injected.healed_at, name="healed", detail=injected.description)]


def inject_link_fault(lab: Lab, coord: Coordinator, cluster: Cluster, fault: LinkFault) -> Injected:
    """Cut the link(s) ``fault`` names, hold the cut for its ``duration_s``, heal; return the record.

    :raises OrchestratorError: the lab is not isolated, or the fault's target cannot be found
        (nothing was cut).
    """
    network = lab.network
    if network is None:
        raise OrchestratorError(_needs_isolation(str(fault.kind)))

    def resolve(datacenter: str) -> str:
        if datacenter == PRIMARY_DATACENTER:
            return cluster.member(current_primary(coord, cluster)).datacenter
        return datacenter

    if isinstance(fault, FlakyLink):
        a, b = resolve(fault.between[0]), resolve(fault.between[1])
        flaky = nftables.FlakyLink(network, network.ports_of(a), network.ports_of(b),
                                   down_s=fault.down_ms / 1000, up_s=fault.up_ms / 1000)
        at = time.time()
        flaky.start()
        try:
            time.sleep(fault.duration_s)   # the fault's own length, not a wait for a condition
        finally:
            flaky.stop()
        return Injected(at, f"flaky link {a} <-> {b}: cut {fault.down_ms} ms, up {fault.up_ms} ms, {flaky.cycles} "
                            f"cuts in {fault.duration_s:g} s", (), a, time.time())
    table, description, datacenter = _cut(lab, coord, cluster, network, fault, resolve)
    at = time.time()
    try:
        time.sleep(fault.duration_s)   # the fault's own length, not a wait for a condition
    finally:
        nftables.heal(network, table)
    return Injected(at, f"{description} for {fault.duration_s:g} s, then healed", (), datacenter, time.time())


def _cut(lab: Lab, coord: Coordinator, cluster: Cluster, network: LabNetwork, fault: LinkFault,
         resolve: Callable[[str], str]) -> tuple[str, str, str]:
    """Install the cut; return its table, its description and the data centre it hits."""
    if isinstance(fault, PartitionDatacenter):
        dc = resolve(fault.datacenter)
        cut_clients = fault.clients is ClientLink.CUT
        table = nftables.partition(network, dc, cut_clients=cut_clients)
        return table, (f"partition of {dc} from every other data centre"
                       f"{' and from the clients' if cut_clients else ' (clients still reach it)'}"), dc
    if isinstance(fault, PartitionPrimaryFromControllers):
        primary = cluster.member(current_primary(coord, cluster))
        port = lab.topology.member_port(cluster, primary)
        controllers = [ns.port for ns in network.namespaces if ns.kind == "ctl"]
        table = nftables.cut_service(network, [network.namespace_of(primary.datacenter).port], controllers, [port],
                                     label="primary_from_controllers")
        return table, (f"every controller cut from primary {primary.name}'s port {port} (its standbys still "
                       "stream from it)"), primary.datacenter
    if isinstance(fault, IsolateZooKeeperMinority):
        return _isolate_zookeeper(lab, coord, cluster, network, fault)
    if isinstance(fault, OneWayCut):
        source, target = resolve(fault.source), resolve(fault.target)
        if source == target:
            raise OrchestratorError(f"one-way cut: source and target are both {source} now; nothing to cut")
        table = nftables.one_way(network, network.ports_of(source), network.ports_of(target))
        return table, f"one-way cut {source} -> {target} ({target} -> {source} still flows)", source
    raise OrchestratorError(f"unknown link fault {fault!r}")


def _isolate_zookeeper(lab: Lab, coord: Coordinator, cluster: Cluster, network: LabNetwork,
                       fault: IsolateZooKeeperMinority) -> tuple[str, str, str]:
    servers = lab.zookeeper()
    if fault.datacenter == ZOOKEEPER_LEADER:
        chosen = [s for s in servers if s.mode() == "leader"]
    elif fault.datacenter == ZOOKEEPER_FOLLOWER:
        # A follower away from the primary first: isolating the server beside the primary also
        # tests its agent's reconnect, a different drill.
        primary_dc = cluster.member(current_primary(coord, cluster)).datacenter
        chosen = sorted((s for s in servers if s.mode() == "follower"), key=lambda s: s.datacenter == primary_dc)
    else:
        chosen = [s for s in servers if s.datacenter == fault.datacenter]
    if not chosen:
        raise OrchestratorError(f"isolate-zookeeper-minority: no serving ZooKeeper server matches "
                                f"{fault.datacenter!r}; check 'drctl lab status'")
    server = chosen[0]
    plan = lab.topology.port_plan()
    own = [plan[f"zk:{server.datacenter}:{kind}"] for kind in ("client", "peer", "election")]
    peers = [plan[f"zk:{dc}:{kind}"] for dc in lab.topology.zookeeper_datacenters if dc != server.datacenter
             for kind in ("peer", "election")]
    table = nftables.isolate_server(network, network.namespace_of(server.datacenter).port, own, peers,
                                    label="zookeeper_minority")
    return table, (f"ZooKeeper server {server.myid} in {server.datacenter} cut from its peers and from every "
                   "client outside its data centre"), server.datacenter
