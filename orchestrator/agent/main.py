"""Starting a node agent: ``drctl agent run --member M`` and the argv the lab spawns it with.

``cli.py`` delegates ``drctl agent run`` to :func:`run_agent`; the lab builds each agent's argv
with :func:`agent_command` (``python -m orchestrator.agent.main ...``, which needs no CLI) and
stops it by PID. :func:`agent_config` resolves everything the agent needs from the lab
directory: the recorded topology, the credentials, the member's data directory and socket.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TextIO

from orchestrator.agent.facts import socket_conninfo
from orchestrator.agent.reporting import SelfFencingReports
from orchestrator.agent.rules import fencing_budget
from orchestrator.agent.runtime import Agent, AgentConfig
from orchestrator.errors import InvalidInput, OrchestratorError
from orchestrator.events import EventLog
from orchestrator.lab import load_credentials, recorded_topology
from orchestrator.pgserver import InstanceLayout
from orchestrator.topology import Cluster, Topology


def agent_command(lab_root: Path, member: str, *, cluster: str | None = None, zk_hosts: str | None = None
                  ) -> list[str]:
    """The argv of one agent for the lab at ``lab_root`` (``zk_hosts`` overrides the ensemble)."""
    argv = [sys.executable, "-m", "orchestrator.agent.main", "--lab-dir", str(lab_root), "--member", member]
    if cluster is not None:
        argv += ["--cluster", cluster]
    if zk_hosts is not None:
        argv += ["--zk-hosts", zk_hosts]
    return argv


def agent_pidfile(lab_root: Path, cluster: str, member: str) -> Path:
    return lab_root / "agent" / f"{cluster}-{member}.pid"


def agent_log(lab_root: Path, cluster: str, member: str) -> Path:
    return lab_root / "agent" / f"{cluster}-{member}.log"


def _cluster_of(topology: Topology, member: str, cluster: str | None) -> Cluster:
    if cluster is not None:
        try:
            found = topology.cluster(cluster)
        except (KeyError, ValueError, OrchestratorError):
            names = ", ".join(c.name for c in topology.clusters)
            raise InvalidInput(f"--cluster: unknown cluster {cluster!r}; use one of {names}") from None
        if member not in {m.name for m in found.members}:
            names = ", ".join(m.name for m in found.members)
            raise InvalidInput(f"--member: {member!r} is not a member of {cluster!r}; use one of {names}")
        return found
    owners = [c for c in topology.clusters if member in {m.name for m in c.members}]
    if len(owners) != 1:
        names = ", ".join(f"{c.name}/{m.name}" for c in topology.clusters for m in c.members)
        problem = "is in no cluster" if not owners else "is in several clusters; pass --cluster"
        raise InvalidInput(f"--member: {member!r} {problem}; known members: {names}")
    return owners[0]


def agent_config(lab_root: Path, member: str, *, cluster: str | None = None, zk_hosts: str | None = None
                 ) -> AgentConfig:
    """Everything one agent needs, from the lab's recorded topology and credentials.

    :raises InvalidInput: no lab there, an unknown member or cluster, or a session too short to fence in.
    """
    root = lab_root.resolve()
    topology = recorded_topology(root)
    if topology is None:
        raise InvalidInput(f"--lab-dir: {root} holds no lab; run 'drctl lab up' first or pass the right --lab-dir")
    found = _cluster_of(topology, member, cluster)
    layout = InstanceLayout(topology, found, found.member(member), root)
    creds = load_credentials(root)
    zk = topology.zookeeper
    return AgentConfig(
        cluster=found.name, member=member, namespace=topology.name,
        zk_hosts=zk_hosts or topology.zookeeper_hosts(),
        budget=fencing_budget(zk.agent_session_ms / 1000, zk.tick_time_ms / 1000),
        data_dir=layout.data,
        local_conninfo=socket_conninfo(layout.socket_dir, layout.endpoint.port, creds.superuser,
                                       creds.superuser_password, application_name=f"drctl-agent-{member}"),
        watchdog_log=root / "agent" / f"{found.name}-{member}.watchdog.log",
        fence_record=root / "agent" / f"{found.name}-{member}.fenced.json",
        lock_file=root / "agent" / f"{found.name}-{member}.lock",
        health_address=(None if topology.health is None else
                        (topology.port_address(f"health:{found.name}:{member}"),
                         topology.port_plan()[f"health:{found.name}:{member}"])),
        metrics=topology.health.metrics if topology.health is not None else False,
        topology=topology,
    )


def run_agent(config: AgentConfig, stream: TextIO, *, lab_root: Path | None = None) -> None:
    """Run one agent in this process until SIGTERM/SIGINT; one JSON line per event on ``stream``.

    With ``lab_root`` (and a topology), the fences the agent decides alone are audited there and
    alerted (:mod:`orchestrator.agent.reporting`).
    """
    log = EventLog(stream, cluster=config.cluster, member=config.member)
    reports = None
    if lab_root is not None and config.topology is not None:
        reports = SelfFencingReports(config.topology, config.cluster, config.member, lab_root.resolve(), log)
        log.subscribe(reports)
    agent = Agent(config, log)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop_event.set())
    try:
        agent.run()
    finally:
        if reports is not None:
            reports.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m orchestrator.agent.main``: the lab's entry point (``drctl agent run`` is the same)."""
    parser = argparse.ArgumentParser(prog="drctl agent run", description="Run one node agent until SIGTERM.")
    parser.add_argument("--member", required=True)
    parser.add_argument("--cluster")
    parser.add_argument("--lab-dir", type=Path, default=Path(".lab"))
    parser.add_argument("--zk-hosts", help="override the topology's ZooKeeper servers (tests' fault proxies)")
    args = parser.parse_args(argv)
    try:
        config = agent_config(args.lab_dir, args.member, cluster=args.cluster, zk_hosts=args.zk_hosts)
    except OrchestratorError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2 if isinstance(exc, InvalidInput) else 1
    try:
        run_agent(config, sys.stdout, lab_root=args.lab_dir)
    except OrchestratorError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
