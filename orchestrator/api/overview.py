"""The status page's overview document (pure: topology, status document, reports and ``now`` in).

Data centres with their members, each cluster's targets and yearly error budget, and the
last drill runs with RTO/RPO against their targets. The error budget is
``(1 - availability_percent / 100)`` of a 365-day year; it counts as used the duration of
every failover and switchover in the cluster's recorded history that started within the
last 365 days (from its first to its last step: an upper bound on the write outage, which
drills measure exactly). Nothing else (e.g. an outage no operation followed) is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.topology import Topology

YEAR_S = 365 * 86400.0


def error_budget(availability_percent: float, history: Sequence[dict[str, Any]], now: float) -> dict[str, Any]:
    """Budget, used and remaining seconds for the 365 days before ``now``; ``history``: operation documents."""
    budget = (1 - availability_percent / 100) * YEAR_S
    used = sum(float(op.get("duration_s") or 0.0) for op in history
               if op.get("kind") in ("failover", "switchover") and float(op.get("started_at") or 0) >= now - YEAR_S)
    return {"availability_percent": availability_percent, "budget_s": round(budget, 3), "used_s": round(used, 3),
            "remaining_s": round(budget - used, 3), "used_percent": round(100 * used / budget, 3) if budget else None,
            "operations": sum(1 for op in history if op.get("kind") in ("failover", "switchover")
                              and float(op.get("started_at") or 0) >= now - YEAR_S)}


def overview(topology: Topology, status: dict[str, Any] | None, runs: Sequence[dict[str, Any]], now: float,
             *, runs_shown: int = 10) -> dict[str, Any]:
    """What the status page shows beside the live status: layout, targets, error budget, drills."""
    states = {c["cluster"]: c for c in (status or {}).get("clusters", [])}
    datacenters = [{"region": region.name, "datacenter": dc.name,
                    "controller": dc.name in topology.controller_datacenters}
                   for region in topology.regions for dc in region.datacenters]
    clusters = []
    for cluster in topology.clusters:
        targets = cluster.targets
        history = states.get(cluster.name, {}).get("history", [])
        clusters.append({
            "cluster": cluster.name,
            "members": [{"member": m.name, "datacenter": m.datacenter} for m in cluster.members],
            "targets": targets.model_dump(mode="json"),
            "error_budget": error_budget(targets.availability_percent, history, now),
        })
    return {"topology": topology.name, "leader": (status or {}).get("leader"), "datacenters": datacenters,
            "clusters": clusters, "runs": list(runs[:runs_shown])}
