"""``drctl``: the command line. The only module that prints and exits.

Every command resolves its topology and lab directory the same way (flags, then the
``DRCTL_TOPOLOGY`` / ``DRCTL_LAB_DIR`` environment, then ``topology/lab.yaml`` and
``.lab``), calls into the package, and turns an :class:`OrchestratorError` into one red
line and a non-zero exit: 2 for bad input, 1 for everything else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator import operator, statusview
from orchestrator.audit import AuditLog
from orchestrator.errors import InvalidInput, OrchestratorError
from orchestrator.events import EventLog
from orchestrator.lab import STATE_FILE, Lab, recorded_topology
from orchestrator.topology import Topology, load_topology
from orchestrator.topology import warnings as topology_warnings

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.api.auth import TokenFile
    from orchestrator.api.client import ApiClient
    from orchestrator.backup.service import BackupService
    from orchestrator.coordination import Coordinator
    from orchestrator.pgserver import InstanceLayout
    from orchestrator.postgres import Endpoint

app = typer.Typer(add_completion=False, no_args_is_help=True, help="dr-orchestrator: PostgreSQL DR control.")
lab_app = typer.Typer(no_args_is_help=True, help="The local lab: real PostgreSQL + ZooKeeper on this machine.")
app.add_typer(lab_app, name="lab")

console = Console()
err_console = Console(stderr=True)

class _ApiTarget:
    """``drctl --api URL``: status, switchover, failover, abort, pause/resume and drills go through the REST API."""

    url: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None


_API = _ApiTarget()


@app.callback()
def _global_options(
    api: Annotated[str | None, typer.Option(
        "--api", envvar="DRCTL_API", help="A controller's REST API (https://HOST:PORT): run status, switchover, "
                                          "failover, abort, pause/resume and drill commands through it. The token "
                                          "comes from DRCTL_API_TOKEN or --api-token-file, never the command line.")
    ] = None,
    api_token_file: Annotated[Path | None, typer.Option(
        "--api-token-file", help="File holding the API token (or DRCTL_API_TOKEN_FILE).")] = None,
    api_ca: Annotated[Path | None, typer.Option(
        "--api-ca", envvar="DRCTL_API_CA", help="PEM certificate that signs the API's (the lab's: <lab>/api/cert.pem)."
    )] = None,
) -> None:
    _API.url, _API.token_file, _API.ca_file = api, api_token_file, api_ca


def _api_client() -> ApiClient:
    from orchestrator.api.client import ApiClient, load_token

    assert _API.url is not None
    return ApiClient(_API.url, load_token(_API.token_file), ca_file=_API.ca_file)


def _topology_unless_api(topology: Path | None, lab_dir: Path | None) -> Topology | None:
    return None if _API.url is not None else _topology(topology, lab_dir)


TopologyOpt = Annotated[
    Path | None, typer.Option("--topology", "-t", help="Topology YAML (default: topology/lab.yaml).")
]
DEFAULT_TOPOLOGY = Path("topology/lab.yaml")
LabDirOpt = Annotated[Path | None, typer.Option("--lab-dir", help="Lab state directory (default: .lab).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout (keys: README.md).")]


def _lab_dir(lab_dir: Path | None) -> Path:
    root = (lab_dir or Path(os.environ.get("DRCTL_LAB_DIR", ".lab"))).resolve()
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"--lab-dir: {root} is a file, not a lab directory; pass a directory (it is created "
                           "if missing)")
    return root


def _recorded_topology(root: Path) -> Topology | None:
    """The lab's recorded topology; a damaged lab.json is one line, not a traceback."""
    try:
        return recorded_topology(root)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{root / STATE_FILE}: unreadable lab state ({type(exc).__name__}); stop the lab's "
                           "processes by hand and remove the lab directory, or pass another --lab-dir") from None


def _topology(topology: Path | None, lab_dir: Path | None = None) -> Topology:
    """An explicit file wins; otherwise the lab's recorded topology; otherwise the default file."""
    if topology is None and "DRCTL_TOPOLOGY" not in os.environ:
        recorded = _recorded_topology(_lab_dir(lab_dir))
        if recorded is not None:
            return recorded
    if topology is None and "DRCTL_TOPOLOGY" not in os.environ and not DEFAULT_TOPOLOGY.exists():
        raise InvalidInput(f"--topology: no {DEFAULT_TOPOLOGY} in {Path.cwd()} and no lab recorded one; pass "
                           "--topology FILE, set DRCTL_TOPOLOGY, or run from the repository root")
    return load_topology(topology or Path(os.environ.get("DRCTL_TOPOLOGY", str(DEFAULT_TOPOLOGY))))


def _lab(topology: Path | None, lab_dir: Path | None, *, controllers: bool = True, agents: bool | None = None,
         isolated: bool = False) -> Lab:
    return Lab(_topology(topology, lab_dir), _lab_dir(lab_dir), controllers=controllers, agents=agents,
               isolated=isolated)


@lab_app.command("up")
def lab_up(
    topology: TopologyOpt = None,
    lab_dir: LabDirOpt = None,
    controllers: Annotated[bool, typer.Option(help="Start one controller per data centre.")] = True,
    agents: Annotated[bool | None, typer.Option(
        "--agents/--no-agents", help="Start one self-fencing node agent per PostgreSQL member (default: "
                                     "with the controllers; a lab without them fails over only a primary "
                                     "whose port refuses connections).")] = None,
    isolated: Annotated[bool, typer.Option(
        help="Each data centre in its own network namespace (root only), so link faults can cut them "
             "silently (drills partition-datacenter, one-way-cut, ...).")] = False,
) -> None:
    """Bring the topology to life (idempotent)."""
    if isolated and os.geteuid() != 0:
        raise InvalidInput("--isolated: network namespaces need root; run drctl as root or drop --isolated")
    lab = _lab(topology, lab_dir, controllers=controllers, agents=agents, isolated=isolated)
    if _recorded_topology(lab.root) is None:
        if not lab.isolated:   # an isolated lab's namespaces are new: nothing else listens there
            _check_ports_free(lab.topology)
        try:
            lab.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"--lab-dir: cannot create {lab.root} ({exc.strerror}); pass a directory you can "
                               "write to") from None
    _print_warnings(lab.topology)
    started = time.monotonic()
    with console.status("bringing the lab up ..."):
        lab.up()
    console.print(f"lab up in {time.monotonic() - started:.1f}s at {lab.root}")
    _print_status(lab)


def _check_ports_free(topo: Topology) -> None:
    """Before a new lab is built: no other process holds one of its ports (else half a lab starts, then fails)."""
    from orchestrator.processes import port_in_use

    for key, port in topo.port_plan().items():
        address = topo.port_address(key)
        if port_in_use(address, port):
            raise InvalidInput(f"ports: {address}:{port} ({key}) is already in use by another process; stop it or "
                               "move the lab with ports.base in the topology")


@lab_app.command("down")
def lab_down(
    lab_dir: LabDirOpt = None,
    keep_data: Annotated[bool, typer.Option(help="Stop processes but keep data directories.")] = False,
) -> None:
    """Stop every lab process by its PID and remove the lab directory."""
    root = _lab_dir(lab_dir)
    topo = _recorded_topology(root)
    if topo is None:
        from orchestrator.network import namespaces

        if (root / namespaces.STATE_FILE).exists():   # a lab that crashed while building its network
            namespaces.destroy(root)
            console.print(f"removed the lab network recorded in {root / namespaces.STATE_FILE}")
            return
        console.print(f"no lab at {root}; nothing to stop")
        return
    started = time.monotonic()
    Lab(topo, root).down(keep_data=keep_data)
    console.print(f"lab down in {time.monotonic() - started:.1f}s")


@lab_app.command("haproxy")
def lab_haproxy(
    lab_dir: LabDirOpt = None,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the lab's HAProxy instead.")] = False,
) -> None:
    """Run HAProxy in front of the lab: per cluster a read-write port (checks /primary) and a read-only
    port (checks /replica) on the agents' health endpoints. 'drctl lab down' stops it too."""
    from orchestrator import haproxy

    root = _lab_dir(lab_dir)
    topo = _recorded_topology(root)
    if topo is None:
        raise InvalidInput(f"no lab at {root}; run 'drctl lab up' first or pass --lab-dir")
    if stop:
        haproxy.stop(root)
        console.print("haproxy stopped")
        return
    if topo.health is None:
        raise InvalidInput("health: the lab's topology has no health section; add 'health: {}' to it, then "
                           "'drctl lab down' and 'drctl lab up'")
    pid = haproxy.start(topo, root)
    plan = topo.port_plan()
    console.print(f"haproxy pid {pid}, configuration {haproxy.config_file(root)}")
    for cluster in topo.clusters:
        for kind, label in (("rw", "read-write (/primary)"), ("ro", "read-only (/replica)")):
            key = f"haproxy:{cluster.name}:{kind}"
            console.print(f"  {cluster.name} {label}: {topo.port_address(key)}:{plan[key]}")


@lab_app.command("status")
def lab_status(lab_dir: LabDirOpt = None, as_json: JsonOpt = False) -> None:
    """Members by cluster (role, replication, lag, data centre, port, pid), ZooKeeper and controllers.

    Exits 1 when the lab is not healthy, with --json too.
    """
    root = _lab_dir(lab_dir)
    topo = _recorded_topology(root)
    if topo is None:
        raise InvalidInput(f"no lab at {root}; run 'drctl lab up' first or pass --lab-dir")
    if not _print_status(Lab(topo, root), as_json=as_json):
        raise typer.Exit(1)


def _print_status(lab: Lab, *, as_json: bool = False) -> bool:
    status = lab.status()
    if as_json:
        _print_json(statusview.lab_status_json(lab.topology.name, lab.root, status))
    else:
        console.print(statusview.lab_status_view(console, lab.topology.name, lab.root, status))
    return status.healthy


def _print_json(document: object) -> None:
    """The whole of stdout for --json: one JSON document, never wrapped or styled."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@app.command("connstr")
def connstr(cluster: str, topology: TopologyOpt = None, lab_dir: LabDirOpt = None) -> None:
    """Print the libpq multi-host connection string that always finds the primary."""
    lab = _lab(topology, lab_dir)
    try:
        target = lab.topology.cluster(cluster)
    except KeyError as exc:
        raise InvalidInput(f"cluster: {exc.args[0]}") from None
    print(lab.app_connection_string(target))


@app.command("validate")
def validate(topology: Annotated[Path, typer.Argument(help="Topology YAML to check.")]) -> None:
    """Check a topology file; print a one-line error naming the field and the fix."""
    topo = load_topology(topology)
    console.print(f"{topology}: valid topology {topo.name!r} with {len(topo.clusters)} cluster(s)")
    _print_warnings(topo)


def _print_warnings(topo: Topology) -> None:
    """Valid but unsafe layouts (topology.warnings), one line each, on stderr."""
    for warning in topology_warnings(topo):
        err_console.print(f"warning: {warning}", markup=False)


controller_app = typer.Typer(no_args_is_help=True, help="Controllers: one per data centre; the leader acts.")
app.add_typer(controller_app, name="controller")


@controller_app.command("run")
def controller_run(
    dc: Annotated[str, typer.Option("--dc", help="The data centre this controller runs in.")],
    lab_dir: LabDirOpt = None,
    zk_hosts: Annotated[str | None, typer.Option("--zk-hosts", help="Override the ZooKeeper servers.")] = None,
) -> None:
    """Run one controller until SIGTERM; logs one JSON line per event to stdout."""
    import signal

    from orchestrator.controller import Controller
    from orchestrator.lab import load_credentials

    root = _lab_dir(lab_dir)
    topo = _topology(None, lab_dir)
    if dc not in topo.controller_datacenters:
        raise InvalidInput(f"--dc: no controller runs in {dc!r}; use one of {', '.join(topo.controller_datacenters)}")
    drills = Path(__file__).resolve().parent.parent / "drills"
    rejoiner = _Rejoiner(topo, root)
    controller = Controller(topo, dc, root, load_credentials(root), rejoin=rejoiner, cancel_rejoin=rejoiner.cancel,
                            drills_dir=drills if drills.is_dir() else None, zk_hosts=zk_hosts, serve_api=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: controller.stop_event.set())
    controller.run()


agent_app = typer.Typer(no_args_is_help=True, help="Node agents: one beside each PostgreSQL member; self-fencing.")
app.add_typer(agent_app, name="agent")


@agent_app.command("run")
def agent_run(
    member: Annotated[str, typer.Option("--member", help="The PostgreSQL member this agent runs beside.")],
    cluster: Annotated[str | None, typer.Option("--cluster", help="Its cluster (default: the one holding it).")
                       ] = None,
    lab_dir: LabDirOpt = None,
    zk_hosts: Annotated[str | None, typer.Option("--zk-hosts", help="Override the ZooKeeper servers.")] = None,
) -> None:
    """Run one node agent until SIGTERM; logs one JSON line per event to stdout."""
    from orchestrator.agent.main import agent_config, run_agent

    root = _lab_dir(lab_dir)
    run_agent(agent_config(root, member, cluster=cluster, zk_hosts=zk_hosts), sys.stdout, lab_root=root)


def _exec_prefixes(topo: Topology, root: Path) -> dict[str, list[str]] | None:
    """In an isolated lab: how the playbooks run server commands inside each host's namespace."""
    from orchestrator.network import namespaces

    network = namespaces.load(root)
    return None if network is None else namespaces.host_exec_prefixes(topo, network)


class _Rejoiner:
    """Rejoin through the Ansible playbook; :meth:`cancel` stops runs in flight at shutdown."""

    def __init__(self, topo: Topology, root: Path) -> None:
        from orchestrator.lab import load_credentials
        from orchestrator.playbooks import PlaybookRunner

        self._topo = topo
        self._runner = PlaybookRunner(topo, root / "ansible", exec_prefixes=_exec_prefixes(topo, root))
        self._creds = load_credentials(root)

    def __call__(self, layout: InstanceLayout, upstream: Endpoint, cancelled: Callable[[], bool]) -> None:
        from orchestrator.playbooks import member_host, rejoin_extravars

        self._runner.run("rejoin.yml", limit=member_host(self._topo, layout.member),
                         extravars=rejoin_extravars(layout, upstream, self._creds), cancel=cancelled)

    def cancel(self) -> None:
        self._runner.cancel()


def _who() -> str:
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"


def _coordinator(topo: Topology) -> Coordinator:
    from orchestrator.coordination import Coordinator

    # kazoo logs every refused connection attempt; a one-shot command reports the outcome in one line.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)

    coord = Coordinator(topo.zookeeper_hosts(), topo.name, identity=f"drctl:{os.getpid()}")
    coord.start(timeout=5)
    return coord


def _cluster(topo: Topology, name: str) -> str:
    return operator.cluster_name(topo, name)


@app.command("status")
def status(
    cluster: Annotated[str | None, typer.Argument(help="Cluster name (default: every cluster).")] = None,
    lab_dir: LabDirOpt = None,
    topology: TopologyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The cluster state the leader keeps in ZooKeeper: primary, epoch, members, operations."""
    if _API.url is not None:
        document = _api_client().get("/api/v1/status", cluster=cluster)
        if as_json:
            _print_json(document)
        else:
            console.print(statusview.status_document_view(console, document))
        return
    topo = _topology(topology, lab_dir)
    if cluster is not None:
        operator.cluster_name(topo, cluster)   # a bad name fails before connecting
    coord = _coordinator(topo)
    try:
        read = operator.read_status(coord, topo, cluster)
    finally:
        coord.stop()
    if as_json:
        _print_json(read.document())
        return
    for index, state in enumerate(read.states):
        if index:
            console.print()
        console.print(statusview.cluster_state_view(console, state, read.leader, agents=read.agents[state.cluster]))


def _request(topo: Topology | None, cluster: str, request: dict[str, object], timeout: float) -> dict[str, object]:
    if _API.url is not None:
        answer: dict[str, object] = _api_client().post(
            f"/api/v1/clusters/{cluster}/{request['kind']}",
            {k: v for k, v in request.items() if k not in ("kind", "by")}, timeout=timeout)
        return answer
    assert topo is not None
    operator.check_request(topo, cluster, request)   # bad input fails before connecting
    coord = _coordinator(topo)
    try:
        return operator.run_request(coord, topo, cluster, request, timeout)
    finally:
        coord.stop()


@app.command("switchover")
def switchover(
    cluster: str,
    to: Annotated[str, typer.Option("--to", help="The standby to promote.")],
    lab_dir: LabDirOpt = None,
    topology: TopologyOpt = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the leader.")] = 60.0,
) -> None:
    """Planned switchover: stop the primary cleanly, promote TO once it has every WAL record."""
    result = _request(_topology_unless_api(topology, lab_dir), cluster, {"kind": "switchover", "to": to}, timeout)
    console.print(f"switchover done in {result['seconds']}s: primary is now {result['primary']}")


@app.command("failover")
def failover(
    cluster: str,
    to: Annotated[str, typer.Option("--to", help="The member to promote.")],
    accept_data_loss: Annotated[bool, typer.Option(
        help="Allow promoting a member whose zero loss is not proven (asynchronous, lagging, or too few "
             "quorum members seen).")] = False,
    lab_dir: LabDirOpt = None,
    topology: TopologyOpt = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the leader.")] = 60.0,
) -> None:
    """Operator failover (ignores pause and the anti-flap period); reports the WAL at risk.

    Refused unless zero loss is proven for TO, or --accept-data-loss is given.
    """
    request = {"kind": "failover", "to": to, "accept_data_loss": accept_data_loss}
    result = _request(_topology_unless_api(topology, lab_dir), cluster, request, timeout)
    console.print(f"failover done in {result['seconds']}s: primary is now {result['primary']}")
    if result.get("proven"):
        console.print(f"zero loss proven: {result.get('proof')}", markup=False)
    else:
        at_risk = result.get("wal_at_risk_bytes")
        risk = "unknown" if at_risk is None else f"{at_risk} bytes"
        console.print(f"zero loss NOT proven ({result.get('proof')}); WAL at risk: {risk}", markup=False)


dr_app = typer.Typer(no_args_is_help=True, help="Disaster recovery without coordination (break-glass).")
app.add_typer(dr_app, name="dr")


@dr_app.command("promote")
def dr_promote(
    cluster: Annotated[str, typer.Option("--cluster", help="The cluster.")],
    to: Annotated[str, typer.Option("--to", help="The member to promote (the DR standby).")],
    confirm_fenced: Annotated[list[str], typer.Option(
        "--confirm-fenced", help="The lost region, confirmed fenced (stopped, or cut from clients); repeat for "
                                 "each region holding members other than the target's.")],
    accept_data_loss: Annotated[bool, typer.Option(
        help="Accept losing what the target had not received.")] = False,
    lab_dir: LabDirOpt = None,
    topology: TopologyOpt = None,
) -> None:
    """Break-glass: promote TO without ZooKeeper, when no ZooKeeper majority survives anywhere.

    Refused while a majority serves (use drctl failover). Records what it did (lab
    break-glass/CLUSTER.json, the audit trail, an event); when ZooKeeper returns, the leader
    adopts TO as primary and fences the returning side's old primary.
    """
    from orchestrator import breakglass

    lab = _lab(topology, lab_dir)
    events = lab.root / "break-glass" / "events.log"
    events.parent.mkdir(parents=True, exist_ok=True)
    who = f"{os.environ.get('USER') or 'operator'}@{socket.gethostname()}"
    with events.open("a") as stream:
        log = EventLog(stream, tool="drctl dr promote")
        record = breakglass.promote(lab, cluster, to, accept_data_loss=accept_data_loss,
                                    confirm_fenced=confirm_fenced, by=who, emit=log.emit)
    console.print(f"break-glass: {to} promoted (timeline {record.timeline}) without ZooKeeper; record "
                  f"{record.id} in {breakglass.record_path(lab.root, cluster)}. When ZooKeeper is back, the "
                  f"leader adopts {to} and fences the old primary; restart {to}'s agent after that.", markup=False)


@app.command("abort")
def abort(
    cluster: str,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history and the event log.")] = "",
    lab_dir: LabDirOpt = None,
    topology: TopologyOpt = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the leader.")] = 60.0,
) -> None:
    """End CLUSTER's stuck operation before promotion: a switchover rolls back, a failover is dropped."""
    by = _who()
    result = _request(_topology_unless_api(topology, lab_dir), cluster, {"kind": "abort", "by": by, "reason": reason},
                      timeout)
    console.print(f"{cluster}: {result['detail']}")


@app.command("pause")
def pause(cluster: str, lab_dir: LabDirOpt = None, topology: TopologyOpt = None) -> None:
    """Maintenance: no automatic failover of CLUSTER until resumed."""
    _set_paused(cluster, True, topology, lab_dir)
    console.print(f"{cluster}: automatic failover paused")


@app.command("resume")
def resume(cluster: str, lab_dir: LabDirOpt = None, topology: TopologyOpt = None) -> None:
    """End maintenance: automatic failover of CLUSTER again."""
    _set_paused(cluster, False, topology, lab_dir)
    console.print(f"{cluster}: automatic failover resumed")


def _set_paused(cluster: str, paused: bool, topology: Path | None, lab_dir: Path | None) -> None:
    if _API.url is not None:
        _api_client().post(f"/api/v1/clusters/{cluster}/{'pause' if paused else 'resume'}", {})
        return
    topo = _topology(topology, lab_dir)
    operator.cluster_name(topo, cluster)
    coord = _coordinator(topo)
    try:
        operator.set_paused(coord, topo, cluster, paused)
    finally:
        coord.stop()


drill_app = typer.Typer(no_args_is_help=True, help="Drills: inject a fault under load, measure RTO/RPO, report.")
app.add_typer(drill_app, name="drill")
DrillsDirOpt = Annotated[Path, typer.Option("--drills-dir", help="Directory of drill files.")]
ReportsDirOpt = Annotated[Path, typer.Option("--reports-dir", help="Where reports are written.")]


@drill_app.command("run")
def drill_run(
    name: str,
    lab_dir: LabDirOpt = None,
    drills_dir: DrillsDirOpt = Path("drills"),
    reports_dir: ReportsDirOpt = Path("reports"),
    route: Annotated[str | None, typer.Option(
        "--route", help="How the clients reach the primary: libpq (multi-host) or haproxy (the lab's "
                        "read-write port, started if needed); default: the drill file's route.")] = None,
) -> None:
    """Run drill NAME against the lab; exit 1 when a target or an invariant fails.

    With --api: the leader starts it as a child process; follow it with 'drill history' / 'drill show'.
    """
    from orchestrator.drills.report import summarize
    from orchestrator.drills.runner import DrillRunner

    if _API.url is not None:
        started = _api_client().post(f"/api/v1/drills/{name}/runs", {})
        console.print(f"drill {started['drill']} started by the leader {started['started_by']} (pid "
                      f"{started['pid']}); see 'drctl --api URL drill history' and 'drill show {name}'")
        return
    root = _lab_dir(lab_dir)
    topo = _recorded_topology(root)
    if topo is None:
        raise InvalidInput(f"no lab at {root}; run 'drctl lab up' first or pass --lab-dir")
    from orchestrator.drills.spec import Route

    if route is not None and route not in {r.value for r in Route}:
        raise InvalidInput(f"--route: {route!r} is unknown; use libpq or haproxy")
    runner = DrillRunner(Lab(topo, root), drills_dir, reports_dir,
                         progress=lambda text: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}"),
                         route=Route(route) if route is not None else None)
    runner.load(name)  # a bad drill file fails here, before anything runs
    audit = AuditLog(root / "audit")
    who = _who()
    audit.append(who=who, action="drill-start", outcome="started", source="drctl", drill=name)
    try:
        report, path = runner.run(name)
    except BaseException as exc:
        audit.append(who=who, action="drill-end", outcome="error", source="drctl", drill=name, error=str(exc))
        raise
    audit.append(who=who, action="drill-end", outcome="passed" if report.verdict.passed else "failed",
                 source="drctl", drill=name, run=path.name, rto_seconds=report.measurement.outage.rto_seconds,
                 lost=report.measurement.loss.lost)
    for line in summarize(report):
        console.print(line, highlight=False)
    console.print(f"report: {path / 'report.html'}")
    if not report.verdict.passed:
        raise typer.Exit(1)


@drill_app.command("list")
def drill_list(drills_dir: DrillsDirOpt = Path("drills"), topology: TopologyOpt = None,
               lab_dir: LabDirOpt = None) -> None:
    """The drill files, validated against the topology."""
    from orchestrator.drills.spec import list_drills, load_drill

    table = Table()
    for column in ("drill", "fault", "schedule", "description"):
        table.add_column(column)
    if _API.url is not None:
        for row in _api_client().get("/api/v1/drills"):
            if "error" in row:
                table.add_row(Text(row["drill"]), Text("invalid", style="red"), "", Text(row["error"]))
            else:
                table.add_row(Text(row["drill"]), Text(row["fault"]), Text(row["schedule"] or "-"),
                              Text(row["description"][:80]))
        console.print(table)
        return
    topo = _topology(topology, lab_dir)
    for path in list_drills(drills_dir):
        try:
            spec = load_drill(path, topo)
        except InvalidInput as exc:
            table.add_row(Text(path.stem), Text("invalid", style="red"), "", Text(str(exc)))
            continue
        table.add_row(Text(spec.name), Text(str(spec.fault.kind)), Text(spec.schedule or "-"),
                      Text(spec.description[:80]))
    console.print(table)


@drill_app.command("history")
def drill_history(reports_dir: ReportsDirOpt = Path("reports")) -> None:
    """Past runs, newest first, with their verdicts."""
    from orchestrator.drills.report import list_reports

    table = Table()
    for column in ("run", "drill", "verdict", "RTO (s)", "lost"):
        table.add_column(column)
    if _API.url is not None:
        for run in _api_client().get("/api/v1/runs"):
            if "error" in run:
                table.add_row(Text(run["run"]), "?", Text(f"unreadable: {run['error']}", style="red"), "", "")
            else:
                table.add_row(run["run"], run["drill"], "[green]PASS[/green]" if run["passed"] else "[red]FAIL[/red]",
                              f"{run['rto_seconds']:.3f}", str(run["lost"]))
        console.print(table)
        return
    for entry in list_reports(reports_dir):
        report = entry.report
        if report is None:
            table.add_row(Text(entry.run_id), "?", Text(f"unreadable: {entry.error}", style="red"), "", "")
            continue
        table.add_row(entry.run_id, report.drill, "[green]PASS[/green]" if report.verdict.passed else "[red]FAIL[/red]",
                      f"{report.measurement.outage.rto_seconds:.3f}", str(report.measurement.loss.lost))
    console.print(table)
    _print_other_reports(reports_dir)


def _print_other_reports(reports_dir: Path) -> None:
    """The stored game days, capacity runs and availability projections, newest first, with their pages."""
    from orchestrator.drills.gameday_report import CAPACITY_HTML, CAPACITY_JSON, GAMEDAY_HTML, GAMEDAY_JSON, list_runs
    from orchestrator.slo.page import PROJECTION_HTML, list_projections

    for path in list_runs(reports_dir, GAMEDAY_JSON):
        console.print(f"game day {path.name}: {path / GAMEDAY_HTML}", highlight=False, soft_wrap=True)
    for path in list_runs(reports_dir, CAPACITY_JSON):
        console.print(f"capacity {path.name}: {path / CAPACITY_HTML}", highlight=False, soft_wrap=True)
    for path in list_projections(reports_dir):
        console.print(f"projection {path.name}: {path / PROJECTION_HTML}", highlight=False, soft_wrap=True)


@drill_app.command("show")
def drill_show(run: str, reports_dir: ReportsDirOpt = Path("reports")) -> None:
    """One run's summary (RUN: a run id, a unique prefix, a drill name or 'latest')."""
    from orchestrator.drills.report import find_run, load_report, summarize

    if _API.url is not None:
        shown = _api_client().get(f"/api/v1/runs/{run}")
        for line in shown["summary"]:
            console.print(line, highlight=False)
        console.print(f"report: {_API.url.rstrip('/')}/api/v1/runs/{shown['run']}/report.html")
        return
    path = find_run(reports_dir, run)
    for line in summarize(load_report(path)):
        console.print(line, highlight=False)
    console.print(f"report: {path / 'report.html'}")


def _duration(value: str, option: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = value.strip().lower()
    scale = units.get(text[-1:])
    try:
        seconds = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise InvalidInput(f"{option}: {value!r} is not a duration; give e.g. 120, 90s, 30m or 1h")
    return seconds


def _running_lab(lab_dir: Path | None) -> Lab:
    root = _lab_dir(lab_dir)
    topo = _recorded_topology(root)
    if topo is None:
        raise InvalidInput(f"no lab at {root}; run 'drctl lab up' first or pass --lab-dir")
    return Lab(topo, root)


def _progress(text: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(text)}", highlight=False)


@drill_app.command("gameday")
def drill_gameday(
    duration: Annotated[str, typer.Option(help="The window of sustained load: 120, 90s, 30m, 1h.")] = "30m",
    faults: Annotated[str, typer.Option(help="Drill names whose faults to inject, comma-separated, in order.")
                      ] = "primary-crash,planned-switchover",
    seed: Annotated[int, typer.Option(help="Seeds the fault times: the same seed, the same schedule.")] = 0,
    users: Annotated[int, typer.Option(min=1, max=1000, help="Locust users for the whole window.")] = 10,
    user_rate: Annotated[float, typer.Option(min=0, help="Transfers per second per user; 0: as fast as it can.")
                         ] = 0.0,
    recovery: Annotated[float, typer.Option(min=1, help="Seconds each fault keeps free after it to recover.")
                        ] = 30.0,
    workers: Annotated[int, typer.Option(min=0, max=64, help="Distributed Locust: worker processes under one "
                                                              "master (0: one process).")] = 0,
    capacity_fraction: Annotated[float | None, typer.Option(
        min=0.01, max=1.0, help="Offer this fraction of the newest 'drctl load capacity' run (replaces --users "
                                "and --user-rate).")] = None,
    live: Annotated[bool | None, typer.Option(
        "--live/--no-live", help="A live panel of throughput, errors, faults and budget burn (default: on a "
                                 "terminal).")] = None,
    lab_dir: LabDirOpt = None,
    drills_dir: DrillsDirOpt = Path("drills"),
    reports_dir: ReportsDirOpt = Path("reports"),
) -> None:
    """Sustained load with several drills' faults at seeded random times; every invariant over the window.

    Exit 1 when a check fails. Writes <reports-dir>/<UTC>-gameday-<cluster>/ (gameday.json, gameday.html).
    """
    from orchestrator.drills.gameday import schedule
    from orchestrator.drills.gameday_report import write_gameday
    from orchestrator.drills.gameday_runner import GameDayRunner

    seconds = _duration(duration, "--duration")
    names = [n.strip() for n in faults.split(",") if n.strip()]
    try:
        schedule(names, duration_s=seconds, seed=seed, recovery_s=recovery)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    lab = _running_lab(lab_dir)
    runner = GameDayRunner(lab, drills_dir, progress=_progress)
    specs = runner.load(names)
    if capacity_fraction is not None:
        from orchestrator.drills.gameday_report import capacity_paced

        users, user_rate, basis = capacity_paced(reports_dir, specs[0].cluster, capacity_fraction)
        console.print(f"load: {capacity_fraction:.0%} of {basis['sustainable_throughput']:.1f} transfers/s "
                      f"(capacity run {basis['capacity_run']}): {users} users at {user_rate:.2f}/s each",
                      highlight=False)
    view: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if live if live is not None else console.is_terminal:
        from orchestrator.drills.live import LiveView

        target = lab.topology.cluster(specs[0].cluster).targets.availability_percent
        live_view = LiveView(console, duration_s=seconds, availability_percent=target)
        runner = GameDayRunner(lab, drills_dir, progress=live_view.progress, watcher=live_view)
        view = live_view
    with view:
        result = runner.run(names, duration_s=seconds, seed=seed, users=users, user_rate=user_rate,
                            recovery_s=recovery, workers=workers)
    path = write_gameday(result, reports_dir)
    for line in result.lines():
        console.print(line, highlight=False)
    console.print(f"report: {path / 'gameday.html'}")
    if not result.passed:
        raise typer.Exit(1)


@drill_app.command("soak")
def drill_soak(
    rounds: Annotated[int, typer.Option(min=1, max=100000, help="How many faults, one per round.")] = 20,
    seed: Annotated[int, typer.Option(help="Seeds the faults, their parameters and times: same seed, same run.")
                    ] = 0,
    faults: Annotated[str | None, typer.Option(help="Fault kinds to draw from, comma-separated (default: the "
                                                    "whole catalogue).")] = None,
    cluster: Annotated[str | None, typer.Option(help="The cluster (default: the topology's first).")] = None,
    users: Annotated[int, typer.Option(min=1, max=1000, help="Locust users throughout.")] = 5,
    user_rate: Annotated[float, typer.Option(min=0, help="Transfers per second per user; 0: as fast as it can.")
                         ] = 20.0,
    lab_dir: LabDirOpt = None,
    drills_dir: DrillsDirOpt = Path("drills"),
    reports_dir: ReportsDirOpt = Path("reports"),
) -> None:
    """Random faults from the catalogue, round after round, under one continuous bank load.

    Each round: full redundancy, the fault, recovery; then every invariant (no acknowledged transfer
    lost, money conserved, never two writers, zero loss proven, no false failover under a stall).
    Exit 1 when a round broke one. Writes <reports-dir>/<UTC>-soak-<cluster>/ (soak.json, soak.html,
    and the journal of each round that broke an invariant).
    """
    from orchestrator.drills.soak import kinds_of, plan
    from orchestrator.drills.soak_report import JOURNALS, SOAK_HTML, run_dir_for, write_soak
    from orchestrator.drills.soak_runner import SoakRunner

    try:
        kinds = kinds_of(faults)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    lab = _running_lab(lab_dir)
    names = [c.name for c in lab.topology.clusters]
    if cluster is not None and cluster not in names:
        raise InvalidInput(f"--cluster: unknown cluster {cluster!r}; use one of {', '.join(names)}")
    target = lab.topology.cluster(cluster or names[0])
    schedule = plan(lab.topology, target, rounds=rounds, seed=seed, kinds=kinds)
    run_dir = run_dir_for(time.time(), target.name, reports_dir)
    result = SoakRunner(lab, drills_dir, progress=_progress).run(
        schedule, target, seed=seed, kinds=kinds, users=users, user_rate=user_rate, journals_dir=run_dir / JOURNALS)
    write_soak(result, run_dir)
    for line in result.lines():
        console.print(line, highlight=False)
    console.print(f"report: {run_dir / SOAK_HTML}")
    if not result.passed:
        raise typer.Exit(1)


load_app = typer.Typer(no_args_is_help=True, help="Load: find the cluster's capacity within its objectives.")
app.add_typer(load_app, name="load")


@load_app.command("capacity")
def load_capacity(
    cluster: str,
    step_users: Annotated[int, typer.Option(min=1, help="Users added per step.")] = 5,
    max_users: Annotated[int, typer.Option(min=1, help="Stop after the step with this many users.")] = 60,
    step_seconds: Annotated[float, typer.Option(min=3, help="Length of each step.")] = 15.0,
    p99_ms: Annotated[float | None, typer.Option(
        help="p99 latency objective in ms (default: the cluster's slo.write_latency_p99_ms).")] = None,
    lab_dir: LabDirOpt = None,
    reports_dir: ReportsDirOpt = Path("reports"),
) -> None:
    """Ramp the bank workload in steps until p99 latency or the error rate breaks its objective.

    Writes <reports-dir>/<UTC>-capacity-<cluster>/ (capacity.json, capacity.html with the plot).
    """
    from orchestrator.drills.capacity import run_capacity
    from orchestrator.drills.gameday_report import write_capacity

    lab = _running_lab(lab_dir)
    cl = lab.topology.cluster(_cluster(lab.topology, cluster))
    cl.require_drills_allowed()
    if p99_ms is not None and p99_ms <= 0:
        raise InvalidInput(f"--p99-ms: {p99_ms:g} must be positive")
    started = time.time()
    result = run_capacity(lab.app_connection_string(cl), cl.name, step_users=step_users, max_users=max_users,
                          step_seconds=step_seconds, p99_objective_ms=p99_ms or cl.slo.write_latency_p99_ms,
                          max_error_percent=cl.slo.max_error_percent, progress=_progress)
    path = write_capacity(result, reports_dir, at=started)
    for line in result.lines():
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"report: {path / 'capacity.html'}")


slo_app = typer.Typer(no_args_is_help=True, help="Service-level objectives: the availability projection.")
app.add_typer(slo_app, name="slo")


@slo_app.command("project")
def slo_project(
    cluster: str,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and reports give the same projection.")] = 0,
    years: Annotated[int, typer.Option(min=1, max=10_000_000, help="Simulated years.")] = 100_000,
    output: Annotated[str, typer.Option("--format", help="text, json or html (prints the page's path).")] = "text",
    min_drills: Annotated[int, typer.Option(min=1, help="Fewer drills of a kind: weak evidence.")] = 5,
    max_age_days: Annotated[float, typer.Option(min=0, help="Newest drill older than this: weak evidence.")] = 90,
    reports_dir: ReportsDirOpt = Path("reports"),
    topology: TopologyOpt = None,
    lab_dir: LabDirOpt = None,
) -> None:
    """Project CLUSTER's yearly availability from its SLO rates and every stored drill's measured RTO.

    Writes <reports-dir>/<UTC>-slo-<cluster>/projection.json and projection.html.
    """
    from orchestrator.drills.report import list_reports
    from orchestrator.slo.evidence import sources
    from orchestrator.slo.page import summary_lines, write_projection
    from orchestrator.slo.projection import project

    if output not in ("text", "json", "html"):
        raise InvalidInput(f"--format: {output!r} is not a format; use text, json or html")
    topo = _topology(topology, lab_dir)
    cl = topo.cluster(_cluster(topo, cluster))
    now = time.time()
    reports = [e.report for e in list_reports(reports_dir) if e.report is not None]
    projection = project(cl.name, sources(reports, cl, now=now), target_percent=cl.targets.availability_percent,
                         seed=seed, years=years, min_drills=min_drills, max_age_days=max_age_days)
    slo = {"availability": f"{cl.targets.availability_percent:g}%", "RTO target": f"{cl.targets.rto_seconds:g} s",
           "RPO target": f"{cl.targets.rpo_seconds:g} s",
           "p99 write latency": f"{cl.slo.write_latency_p99_ms:g} ms",
           **{f"{k.value} incidents per year": f"{v:g}" for k, v in cl.slo.incidents_per_year.items()},
           "planned switchovers per year": f"{cl.slo.switchovers_per_year:g}"}
    path = write_projection(projection, reports_dir, generated_at=now, slo=slo)
    if output == "json":
        _print_json(projection.model_dump(mode="json"))
        return
    if output == "text":
        for line in summary_lines(projection):
            console.print(line, highlight=False)
    console.print(f"report: {path / 'projection.html'}")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks against peers on this machine.")
app.add_typer(bench_app, name="bench")


@bench_app.command("failover")
def bench_failover(
    quick: Annotated[bool, typer.Option(help="2 rounds per system instead of 10.")] = False,
    rounds: Annotated[int | None, typer.Option(help="Rounds per system (overrides --quick).")] = None,
    system: Annotated[list[str] | None, typer.Option("--system", help="Only these systems (repeatable).")] = None,
    reports_dir: ReportsDirOpt = Path("reports"),
    workdir: Annotated[Path, typer.Option(help="Where the systems' data live during the run.")] = Path(".bench"),
    port_base: Annotated[int, typer.Option(help="First of the 500 ports the systems listen on.")] = 24000,
) -> None:
    """kill -9 of the primary node under the same load: dr-orchestrator vs Patroni vs pg_auto_failover."""
    from orchestrator.bench import suite
    from orchestrator.bench.report import summary_lines

    run = suite.run(reports_dir, workdir.resolve(), rounds=rounds, quick=quick, only=tuple(system or ()),
                    port_base=port_base,
                    progress=lambda text: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}"))
    for line in summary_lines(run.result):
        console.print(line, highlight=False)
    console.print(f"report: {run.path / 'bench.md'}")
    failed = [r for r in run.result.rounds if not r.ok or r.lost]
    if failed:
        raise typer.Exit(1)


# ---- backups and restore (orchestrator.backup) ----------------------------------------------

backup_app = typer.Typer(no_args_is_help=True, help="Base backups and WAL archive in the cluster's S3 store "
                         "(the topology's backup: section).")
app.add_typer(backup_app, name="backup")
store_app = typer.Typer(no_args_is_help=True, help="The lab's own S3 store (SeaweedFS on loopback, by PID).")
backup_app.add_typer(store_app, name="store")
ScratchOpt = Annotated[Path | None, typer.Option("--scratch", help="Restore into this directory instead of the "
                                                 "member's data directory (not archived, on --port).")]
PortOpt = Annotated[int | None, typer.Option("--port", min=1024, max=65535, help="Port of a scratch restore "
                                             "(default: the first port past the topology's range).")]


def _backup_service(cluster: str, topology: Path | None, lab_dir: Path | None) -> BackupService:
    from orchestrator.backup.service import BackupService
    from orchestrator.lab import load_credentials

    root = _lab_dir(lab_dir)
    topo = _topology(topology, lab_dir)
    return BackupService(topo, _cluster(topo, cluster), root, load_credentials(root))


@store_app.command("up")
def backup_store_up(topology: TopologyOpt = None, lab_dir: LabDirOpt = None) -> None:
    """Start the lab's S3 store for the topology's loopback backup endpoint (idempotent)."""
    from orchestrator.backup.service import lab_store

    root = _lab_dir(lab_dir)
    store = lab_store(_topology(topology, lab_dir), root)
    if store is None:
        raise InvalidInput("clusters.*.backup: no cluster backs up to a loopback endpoint with credentials_file under "
                           "s3/; see topology/lab-backup.yaml")
    started = time.monotonic()
    pid = store.start()
    console.print(f"S3 store up at {store.endpoint} (pid {pid}) in {time.monotonic() - started:.1f}s; keys in "
                  f"{store.credentials_file}, CA {store.ca_file}")


@store_app.command("down")
def backup_store_down(topology: TopologyOpt = None, lab_dir: LabDirOpt = None) -> None:
    """Stop the lab's S3 store by its PID (its data stay in the lab directory)."""
    from orchestrator.backup.service import lab_store

    store = lab_store(_topology(topology, lab_dir), _lab_dir(lab_dir))
    if store is None or store.pid() is None:
        console.print("no S3 store runs; nothing to stop")
        return
    store.stop()
    console.print("S3 store down")


@backup_app.command("setup")
def backup_setup(cluster: str, topology: TopologyOpt = None, lab_dir: LabDirOpt = None) -> None:
    """Check the store, create the bucket if missing, write the members' engine configuration, create the stanza."""
    service = _backup_service(cluster, topology, lab_dir)
    created = service.setup()
    console.print(f"{cluster}: archiving to {service.spec.endpoint}/{service.spec.bucket}{service.repo}"
                  f"{' (bucket created)' if created else ''}")


@backup_app.command("run")
def backup_run(
    cluster: str,
    kind: Annotated[str, typer.Option("--type", help="full, diff or incr.")] = "full",
    verify: Annotated[bool, typer.Option("--verify", help="Then prove it as 'backup verify' does (the leader's "
                                         "scheduled backups do).")] = False,
    topology: TopologyOpt = None,
    lab_dir: LabDirOpt = None,
) -> None:
    """Take a base backup of CLUSTER's primary into the store; expire those past retention."""
    service = _backup_service(cluster, topology, lab_dir)
    audit = AuditLog(service.root / "audit")
    try:
        backup, seconds = service.run(kind)
    except BaseException as exc:
        audit.append(who=_who(), action="backup", outcome="error", source="drctl", cluster=cluster, type=kind,
                     error=str(exc))
        raise
    audit.append(who=_who(), action="backup", outcome="ok", source="drctl", cluster=cluster, type=kind,
                 label=backup.label, seconds=round(seconds, 3), size=backup.size)
    console.print(f"{cluster}: backup {backup.label} ({backup.kind}) in {seconds:.1f}s: {backup.size / 1e6:.1f} MB "
                  f"({backup.size / 1e6 / max(seconds, 1e-3):.1f} MB/s), {backup.stored / 1e6:.1f} MB stored, "
                  f"WAL {backup.wal_start}..{backup.wal_stop}")
    if verify:
        _verify_backup(service, cluster, backup.label, None, None)


@backup_app.command("list")
def backup_list(cluster: str, topology: TopologyOpt = None, lab_dir: LabDirOpt = None, as_json: JsonOpt = False
                ) -> None:
    """Each backup: type, time, size, WAL range, and whether a restore of it was verified."""
    rows = _backup_service(cluster, topology, lab_dir).listing()
    if as_json:
        _print_json([{"label": r.backup.label, "type": r.backup.kind, "started": r.backup.started,
                      "stopped": r.backup.stopped, "size": r.backup.size, "stored": r.backup.stored,
                      "wal_start": r.backup.wal_start, "wal_stop": r.backup.wal_stop,
                      "lsn_start": r.backup.lsn_start, "lsn_stop": r.backup.lsn_stop, "verified": r.verified,
                      "failed": r.failed}
                     for r in rows])
        return
    table = Table()
    for column in ("backup", "type", "finished (UTC)", "size MB", "stored MB", "WAL", "verified restore"):
        table.add_column(column, no_wrap=column in ("backup", "finished (UTC)"), overflow="fold")
    for row in rows:
        b = row.backup
        verified = (Text(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(row.verified['verified_at']))} in "
                         f"{row.verified['restore_seconds'] + row.verified['recovery_seconds']:.1f}s", style="green")
                    if row.verified else
                    Text(f"unproven: verification failed "
                         f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(row.failed['failed_at']))}: "
                         f"{row.failed['error']}", style="red") if row.failed else Text("unproven", style="yellow"))
        table.add_row(b.label, b.kind, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(b.stopped)),
                      f"{b.size / 1e6:.1f}", f"{b.stored / 1e6:.1f}", f"{b.wal_start}..{b.wal_stop}", verified)
    console.print(table)


@backup_app.command("verify")
def backup_verify(
    cluster: str,
    label: Annotated[str | None, typer.Option("--set", help="The backup to verify (default: the newest).")] = None,
    scratch: ScratchOpt = None,
    port: PortOpt = None,
    topology: TopologyOpt = None,
    lab_dir: LabDirOpt = None,
) -> None:
    """Restore a backup into a scratch directory, start and check it, record the verified restore, remove it."""
    _verify_backup(_backup_service(cluster, topology, lab_dir), cluster, label, scratch, port)


def _verify_backup(service: BackupService, cluster: str, label: str | None, scratch: Path | None,
                   port: int | None) -> None:
    import shutil
    import tempfile

    where = scratch or Path(tempfile.mkdtemp(prefix="drctl-verify-", dir=service.root))
    try:
        record = service.verify(label, scratch=where, port=port)
    except OrchestratorError as exc:
        from orchestrator.alerts.dispatcher import alert_now

        alert_now(service.topology.alerts, service.root, "backup-unproven",
                  {"cluster": cluster, "label": label or "newest", "error": str(exc)},
                  audit=AuditLog(service.root / "audit"), who=_who())
        raise
    finally:
        if scratch is None:
            shutil.rmtree(where, ignore_errors=True)
    checks = record["checks"]
    console.print(f"{cluster}: backup {record['label']} restored and checked: copy {record['restore_seconds']}s "
                  f"({record['mb_per_s']} MB/s), recovery {record['recovery_seconds']}s; pgbackrest verify, "
                  f"pg_amcheck ok; WAL replayed to {checks.get('wal_reached', '-')} (archive's newest "
                  f"{checks.get('wal_last_archived', '-')})"
                  + (f"; bank conserved ({checks['bank_transfers']} transfers)" if "bank_total" in checks else ""))


@backup_app.command("replicate")
def backup_replicate(cluster: str, topology: TopologyOpt = None, lab_dir: LabDirOpt = None) -> None:
    """Copy CLUSTER's backups and WAL archive that the replica store (backup.replica) lacks to it."""
    service = _backup_service(cluster, topology, lab_dir)
    report = service.replicate()
    console.print(f"{cluster}: {report.copied} object(s) copied to the replica ({report.copied_bytes / 1e6:.1f} MB, "
                  f"{report.mb_per_s:.1f} MB/s), {report.in_sync} already there, in {report.seconds:.1f}s")


@app.command("restore")
def restore(
    cluster: str,
    to: Annotated[str, typer.Option("--to", help="The member to restore as (its server must be stopped).")],
    target_time: Annotated[str | None, typer.Option("--target-time", help="Recover to this ISO 8601 time (with a "
                                                    "zone); default: the end of the archive.")] = None,
    target_lsn: Annotated[str | None, typer.Option("--target-lsn", help="Recover to this LSN.")] = None,
    scratch: ScratchOpt = None,
    port: PortOpt = None,
    topology: TopologyOpt = None,
    lab_dir: LabDirOpt = None,
) -> None:
    """Build a data directory from the best base backup plus WAL, start it, recover to the target, promote it."""
    from orchestrator.backup.restore import Target, parse_time

    target = Target(time=parse_time(target_time) if target_time else None, lsn=target_lsn)
    service = _backup_service(cluster, topology, lab_dir)
    runner = None
    if scratch is None:    # a member's own data directory, on its host: through the playbook
        from orchestrator.playbooks import PlaybookRunner

        runner = PlaybookRunner(service.topology, service.root / "ansible",
                                exec_prefixes=_exec_prefixes(service.topology, service.root))
    report = service.restore(to, target, scratch=scratch, port=port, runner=runner)
    console.print(f"{cluster}: restored backup {report.backup} as {to} ({report.via}) to the {report.target} in "
                  f"{report.total_seconds:.1f}s: copy {report.restore_seconds:.1f}s "
                  f"({report.restored_bytes / 1e6:.1f} MB, {report.mb_per_s:.1f} MB/s), recovery "
                  f"{report.recovery_seconds:.1f}s; running on port {report.port} (pid {report.pid}), data "
                  f"{report.data_dir}")


# ---- the REST API's tokens, and the audit trail ------------------------------------------------

api_app = typer.Typer(no_args_is_help=True, help="The controllers' REST API (the topology's api: section).")
app.add_typer(api_app, name="api")
token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens: stored as SHA-256 in api.tokens_file (0600).")
api_app.add_typer(token_app, name="token")


def _token_file(topology: Path | None, lab_dir: Path | None) -> TokenFile:
    from orchestrator.api.server import tokens_file

    return tokens_file(_topology(topology, lab_dir), _lab_dir(lab_dir))


@token_app.command("add")
def api_token_add(
    name: Annotated[str, typer.Option("--name", help="Who the token is for (unique).")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")],
    topology: TopologyOpt = None,
    lab_dir: LabDirOpt = None,
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from orchestrator.api.auth import parse_role

    parsed = parse_role(role)
    tokens = _token_file(topology, lab_dir)
    token = tokens.add(name, parsed)
    AuditLog(_lab_dir(lab_dir) / "audit").append(who=_who(), action="token-add", outcome="ok", source="drctl",
                                                 name=name, role=parsed.value)
    err_console.print(f"token for {name} ({parsed.value}) added to {tokens.path}; it is shown once:")
    print(token)


@token_app.command("list")
def api_token_list(topology: TopologyOpt = None, lab_dir: LabDirOpt = None) -> None:
    """Token names, roles and creation times (never the tokens)."""
    table = Table()
    for column in ("name", "role", "created (UTC)"):
        table.add_column(column)
    for entry in _token_file(topology, lab_dir).listing():
        created = entry["created_at"]
        table.add_row(str(entry["name"]), str(entry["role"]),
                      time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created)) if created else "?")
    console.print(table)


@token_app.command("remove")
def api_token_remove(
    name: Annotated[str, typer.Option("--name", help="The token to revoke.")],
    topology: TopologyOpt = None,
    lab_dir: LabDirOpt = None,
) -> None:
    """Revoke a token at once (the controllers re-read the file)."""
    _token_file(topology, lab_dir).remove(name)
    AuditLog(_lab_dir(lab_dir) / "audit").append(who=_who(), action="token-remove", outcome="ok", source="drctl",
                                                 name=name)
    console.print(f"token {name} removed")


@app.command("audit")
def audit(
    since: Annotated[str | None, typer.Option("--since", help="Only entries at or after this ISO 8601 time (with "
                                                              "a zone, e.g. 2026-12-02T10:00Z) or this many hours "
                                                              "ago (e.g. 2h).")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check the whole chain; name the first broken entry "
                                                           "and exit 1.")] = False,
    lab_dir: LabDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit trail: who did what, when, from where, with what outcome (<lab>/audit/audit-DAY.jsonl)."""
    from orchestrator import audit as trail

    directory = _lab_dir(lab_dir) / "audit"
    if verify:
        checked = trail.verify(directory)
        if checked.broken is not None:
            err_console.print(f"[red]audit chain broken[/red] at {escape(str(checked.broken))} (after "
                              f"{checked.entries} good entries)", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        console.print(f"audit chain intact: {checked.entries} entries in {len(trail.log_files(directory))} "
                      f"file(s) under {directory}")
        return
    entries = list(trail.read_entries(directory, since=_since(since)))
    if as_json:
        for entry in entries:
            sys.stdout.write(json.dumps(entry) + "\n")
        return
    table = Table()
    for column in ("time (UTC)", "who", "action", "from", "outcome", "details"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        details = entry.get("details") or {}
        brief = ", ".join(f"{k}={v}" for k, v in details.items() if k in ("cluster", "request", "to", "drill",
                                                                        "member", "operation", "error", "name"))
        table.add_row(str(entry.get("time")), Text(str(entry.get("who"))), Text(str(entry.get("action"))),
                      Text(str(entry.get("from"))), Text(str(entry.get("outcome"))), Text(brief[:200]))
    console.print(table)


def _since(value: str | None) -> float | None:
    import datetime
    import re

    if value is None:
        return None
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value)
    if relative:
        return time.time() - float(relative[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[relative[2]]
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidInput(f"--since: {value!r} is neither an ISO 8601 time with a zone (2026-12-02T10:00Z) nor an "
                           "age like 30m, 2h or 1d")
    return parsed.timestamp()


def main() -> None:
    try:
        app()  # standalone: click prints usage errors (bad flags) itself and exits 2
    except OrchestratorError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, InvalidInput) else 1)


if __name__ == "__main__":
    main()
