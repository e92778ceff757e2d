"""Break-glass promotion without ZooKeeper: ``drctl dr promote`` (the adapter; the rules are
:mod:`orchestrator.decisions.breakglass`).

Used only when no ZooKeeper majority survives anywhere, so no controller can lead. In order:
count the ZooKeeper servers that serve (``srvr``: leader/follower/standalone), probe the target,
refuse on any rule (nothing done); stop the target's node agent by PID (without a ZooKeeper lease
it would fence the primary it is about to become; its graceful stop also stops its watchdog);
promote the target and clear its synchronous list (its quorum partners are in the lost region);
then write the record — a local file ``<lab>/break-glass/<cluster>.json`` that every controller of
the lab reads at each round, one audit entry, one event — which the first leader adopts when
ZooKeeper returns (its epoch wins; the returning side's primary is fenced).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import decisions as d
from orchestrator import postgres as pg
from orchestrator.audit import AuditLog
from orchestrator.errors import InvalidInput
from orchestrator.lab import Lab
from orchestrator.processes import stop
from orchestrator.state import BreakGlassRecord

SERVING = ("leader", "follower", "standalone")


def record_path(root: Path, cluster: str) -> Path:
    return root / "break-glass" / f"{cluster}.json"


def read_record(root: Path, cluster: str) -> BreakGlassRecord | None:
    """The cluster's break-glass record, or None (no file; an unreadable one is None too, and the
    promote command never leaves one half-written: it writes a temporary file and renames it)."""
    try:
        return BreakGlassRecord.model_validate_json(record_path(root, cluster).read_text())
    except (OSError, ValueError):
        return None


def reader(root: Path) -> Callable[[str], BreakGlassRecord | None]:
    return lambda cluster: read_record(root, cluster)


def zookeeper_serving(lab: Lab) -> tuple[int, int]:
    """(servers that serve clients now, servers in the ensemble)."""
    servers = lab.zookeeper()
    return sum(1 for s in servers if s.mode() in SERVING), len(servers)


def promote(lab: Lab, cluster_name: str, target: str, *, accept_data_loss: bool, confirm_fenced: list[str],
            by: str, emit: Callable[..., None] | None = None) -> BreakGlassRecord:
    """Promote ``target`` without ZooKeeper; return the record written.

    :raises InvalidInput: a rule refused it (one line naming the option and the fix); nothing done.
    :raises DatabaseUnavailable: the promotion failed (the record is not written).
    """
    topo = lab.topology
    try:
        cluster = topo.cluster(cluster_name)
    except KeyError as exc:
        raise InvalidInput(f"--cluster: {exc.args[0]}") from None
    policy = d.Policy.from_topology(topo, cluster)
    serving, servers = zookeeper_serving(lab)
    status = None
    if target in policy.members:
        prober = pg.Prober(lab.credentials, timeout=2)
        try:
            status = prober.probe(lab.layout(cluster, cluster.member(target)).endpoint)
        finally:
            prober.close()
    why = d.refusal(policy, target, accept_data_loss=accept_data_loss, confirm_fenced=confirm_fenced,
                    serving=serving, servers=servers, status=status)
    if why is not None:
        raise InvalidInput(why)
    layout = lab.layout(cluster, cluster.member(target))
    agent = lab.agent_pid(cluster.name, target)
    if agent is not None:
        stop(agent)
    timeline = pg.promote(layout.endpoint, lab.credentials)
    pg.set_synchronous_names(layout.endpoint, lab.credentials, "")
    record = d.new_record(policy, target, confirm_fenced=confirm_fenced, at=time.time(), by=by,
                          known_generation=0, timeline=timeline)
    path = record_path(lab.root, cluster.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(record.model_dump_json(indent=2) + "\n")
    os.replace(scratch, path)
    AuditLog(lab.root / "audit").append(who=by, action="break-glass-promote", outcome="ok", source="drctl dr promote",
                                        details=json.loads(record.model_dump_json()))
    if emit is not None:
        emit("break-glass-promoted", cluster=cluster.name, member=target, timeline=timeline, record=record.id,
             lost_region=record.lost_region, zookeeper_serving=f"{serving}/{servers}", agent_stopped=agent)
    return record
