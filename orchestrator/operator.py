"""What an operator can do, shared by ``drctl`` (:mod:`orchestrator.cli`) and the REST API (:mod:`orchestrator.api`).

Both read the state the leader keeps in ZooKeeper and hand actions to the leader through
the ZooKeeper request queue (:meth:`Coordinator.submit_request`): whichever controller or
machine a request comes from, only the elected leader runs it, with the same safety checks
(``control/requests.py``). The request is withdrawn when no leader answers in time, and
expires then, so it never runs later. Drills start as ``drctl drill run`` child processes,
the same way scheduled drills do (:func:`spawn_drill`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import statusview
from orchestrator.errors import InvalidInput, OrchestratorError
from orchestrator.processes import spawn
from orchestrator.topology import Topology

if TYPE_CHECKING:
    from orchestrator.coordination import Coordinator
    from orchestrator.decisions import AgentView
    from orchestrator.state import ClusterState

REQUEST_KINDS = ("switchover", "failover", "abort", "drill")


class RequestRefused(OrchestratorError):
    """The leader answered and refused (its one-line reason is the message)."""


class NoLeader(OrchestratorError):
    """No leader answered in time; the request was withdrawn and will not run."""


def cluster_name(topo: Topology, name: str, *, field: str = "cluster") -> str:
    try:
        return topo.cluster(name).name
    except KeyError as exc:
        raise InvalidInput(f"{field}: {exc.args[0]}") from None


def check_request(topo: Topology, cluster: str, request: dict[str, Any], *, to_field: str = "--to") -> str:
    """The cluster's name once ``request`` names a known kind and, for ``to``, a member of it."""
    name = cluster_name(topo, cluster)
    if request.get("kind") not in REQUEST_KINDS:
        raise InvalidInput(f"kind: unknown request {request.get('kind')!r}; use one of {', '.join(REQUEST_KINDS)}")
    target = request.get("to")
    if target is not None and target not in {m.name for m in topo.cluster(name).members}:
        known = ", ".join(m.name for m in topo.cluster(name).members)
        raise InvalidInput(f"{to_field}: {name} has no member {target!r}; use one of {known}")
    return name


def run_request(coord: Coordinator, topo: Topology, cluster: str, request: dict[str, Any], timeout: float, *,
                to_field: str = "--to") -> dict[str, Any]:
    """Submit ``request`` for the leader and wait for its answer.

    :raises InvalidInput: unknown cluster, kind or member (nothing was submitted).
    :raises NoLeader: no answer within ``timeout`` (withdrawn: it will not run).
    :raises RequestRefused: the leader refused it.
    """
    name = check_request(topo, cluster, request, to_field=to_field)
    request_id = coord.submit_request(name, request, ttl=timeout)  # never runs after the caller gave up
    result = coord.wait_result(name, request_id, timeout)
    if result is None:
        raise NoLeader(f"no leader answered within {timeout:.0f}s; the request was withdrawn and will not run")
    if not result.get("ok"):
        raise RequestRefused(f"{request['kind']} refused: {result.get('error')}")
    return result


@dataclass(frozen=True)
class StatusRead:
    topology: str
    leader: str | None
    states: list[ClusterState]
    agents: dict[str, dict[str, AgentView]]

    def document(self) -> dict[str, Any]:
        """``drctl status --json``'s document (README "Status output")."""
        return statusview.status_json(self.topology, self.leader, self.states, self.agents)


def read_status(coord: Coordinator, topo: Topology, cluster: str | None = None) -> StatusRead:
    """The state the leader keeps in ZooKeeper, the leader, and the node agents; every cluster by default.

    :raises OrchestratorError: a cluster has no state yet (no controller ran).
    """
    from orchestrator.control.agents import agent_views
    from orchestrator.state import ClusterState

    names = [cluster_name(topo, cluster)] if cluster is not None else [c.name for c in topo.clusters]
    read = {name: coord.read_state(name)[0] for name in names}
    leader = coord.leader_identity()
    agents = {name: agent_views(coord.agent_registry(name), coord.agent_facts(name)) for name in names}
    missing = [name for name, state in read.items() if state is None]
    if missing:
        raise OrchestratorError(f"{', '.join(missing)}: no state in ZooKeeper yet; is a controller running "
                                "(drctl lab status)?")
    states = [state for state in read.values() if isinstance(state, ClusterState)]
    return StatusRead(topo.name, leader, states, agents)


def set_paused(coord: Coordinator, topo: Topology, cluster: str, paused: bool) -> str:
    name = cluster_name(topo, cluster)
    coord.set_paused(name, paused)
    return name


def drill_command(root: Path, drills_dir: Path, reports_dir: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "drill", "run", name, "--lab-dir", str(root),
            "--drills-dir", str(drills_dir), "--reports-dir", str(reports_dir)]


def spawn_drill(root: Path, drills_dir: Path, name: str) -> int:
    """Start drill ``name`` as a ``drctl drill run`` child (Locust's gevent stays out of the caller); its pid.

    Reports go to ``reports/`` beside the drills directory; the child's output to
    ``<lab>/controller/drill-<name>.log``. Only one drill runs at a time: the child takes the
    drill lock in ZooKeeper and fails at once if another holds it.
    """
    return spawn(drill_command(root, drills_dir, reports_dir(drills_dir), name),
                 log=root / "controller" / f"drill-{name}.log", cwd=drills_dir.parent)


def reports_dir(drills_dir: Path) -> Path:
    return drills_dir.parent / "reports"


def drill_runs(reports: Path) -> list[dict[str, Any]]:
    """Past runs, newest first: run id, drill, verdict, RTO and loss (or why the report is unreadable)."""
    from orchestrator.drills.report import list_reports

    runs: list[dict[str, Any]] = []
    for entry in list_reports(reports):
        report = entry.report
        if report is None:
            runs.append({"run": entry.run_id, "error": entry.error})
            continue
        runs.append({"run": entry.run_id, "drill": report.drill, "passed": report.verdict.passed,
                     "rto_seconds": report.measurement.outage.rto_seconds, "lost": report.measurement.loss.lost})
    return runs


def drill_report(reports: Path, run: str) -> dict[str, Any]:
    """One run's report (``report.json``) with its summary lines; ``run`` as ``drctl drill show`` takes it."""
    from orchestrator.drills.report import find_run, load_report, summarize

    path = find_run(reports, run)
    report = load_report(path)
    return {"run": path.name, "summary": summarize(report), "report": report.model_dump(mode="json")}
