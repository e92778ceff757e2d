"""Drill files: the model of ``drills/*.yaml`` and its checks against the topology.

A drill names a cluster, a load profile, the steady state to verify before the fault, one
fault, when to inject it and how long to observe, when to give up, how to roll back, target
overrides and an optional cron schedule. ``drctl drill list/run``, the drill runner and the
scheduling controller call :func:`load_drill`: a malformed file, or one naming something the
topology lacks (a typo'd member, an unknown data centre), is rejected with one line naming
the field path and the fix, before anything runs. Validation does no I/O but reading the file.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.decisions import Policy, switchover_refusal
from orchestrator.errors import DrillFileError
from orchestrator.topology import NAME_PATTERN, Cluster, Targets, Topology, read_yaml

_NAME_RE = re.compile(NAME_PATTERN)
PRIMARY_DATACENTER = "primary"   # datacenter-outage: whichever data centre holds the primary
ZOOKEEPER_LEADER = "leader"      # zookeeper-server-loss: whichever server leads the ensemble


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoadProfile(_Model):
    """The Locust bank-transfer workload."""

    users: int = Field(10, ge=1, le=1000)
    spawn_rate: float = Field(10.0, gt=0)        # users started per second
    duration_s: float = Field(gt=0, le=86400)    # total load time, fault included
    accounts: int = Field(100, ge=2)
    user_rate: float | None = Field(None, gt=0)  # transfers per second per user; None: as fast as it can
    # Distributed Locust: a master spreading the users over this many worker processes (0: one process).
    workers: int = Field(0, ge=0, le=64)
    # Offer this fraction of the cluster's newest measured capacity (drctl load capacity) instead of
    # users/user_rate: the users the capacity run sustained it with, each paced to its share.
    capacity_fraction: float | None = Field(None, gt=0, le=1)


class SteadyState(_Model):
    """What must hold just before the fault, or the drill does not inject it."""

    all_members_streaming: bool = True
    max_lag_bytes: int = Field(8 * 1024 * 1024, ge=0)
    min_acks_per_second: float = Field(1.0, ge=0)


class FaultKind(StrEnum):
    KILL_PRIMARY = "kill-primary"
    DATACENTER_OUTAGE = "datacenter-outage"
    CONTROLLER_LEADER_CRASH = "controller-leader-crash"
    ZOOKEEPER_SERVER_LOSS = "zookeeper-server-loss"
    SWITCHOVER = "switchover"
    REGION_LOSS = "region-loss"
    # Stalls (orchestrator.drills.stalls): SIGSTOP for duration_s, then SIGCONT.
    STALL_PRIMARY = "stall-primary"
    STALL_LEADER_CONTROLLER = "stall-leader-controller"
    STALL_ZOOKEEPER = "stall-zookeeper"
    # Link faults: an isolated lab only (drctl lab up --isolated; orchestrator.drills.partitions).
    PARTITION_DATACENTER = "partition-datacenter"
    PARTITION_PRIMARY_FROM_CONTROLLERS = "partition-primary-from-controllers"
    ISOLATE_ZOOKEEPER_MINORITY = "isolate-zookeeper-minority"
    ONE_WAY_CUT = "one-way-cut"
    FLAKY_LINK = "flaky-link"
    ARCHIVE_OUTAGE = "archive-outage"            # orchestrator/drills/backup_faults.py
    TOTAL_LOSS_RESTORE = "total-loss-restore"    # orchestrator/drills/backup_faults.py


class KillPrimary(_Model):
    """``kill -9`` of the current primary's postmaster."""

    kind: Literal[FaultKind.KILL_PRIMARY]


class DatacenterOutage(_Model):
    """Everything in one data centre at once: its database members, controller and ZooKeeper server."""

    kind: Literal[FaultKind.DATACENTER_OUTAGE]
    datacenter: str = PRIMARY_DATACENTER


class ControllerLeaderCrash(_Model):
    """``kill -9`` of the leading controller: another must take over, the primary must stay."""

    kind: Literal[FaultKind.CONTROLLER_LEADER_CRASH]


class ZooKeeperServerLoss(_Model):
    """``kill -9`` of one ZooKeeper server: the ensemble's leader or the one in a data centre."""

    kind: Literal[FaultKind.ZOOKEEPER_SERVER_LOSS]
    datacenter: str = ZOOKEEPER_LEADER


class RegionLoss(_Model):
    """Every process of one region at once: members, agents, controllers, ZooKeeper servers.

    ``promote``: the DR standby the drill promotes as the operator would (``drctl failover --to
    M --accept-data-loss``) once the region is down; omitted, the cluster's ``dr_failover:
    automatic`` must promote it. Judged against ``targets.region_rto_seconds`` / ``region_rpo_seconds``.
    """

    kind: Literal[FaultKind.REGION_LOSS]
    region: str = PRIMARY_DATACENTER   # "primary": the region holding the primary now
    promote: str | None = None


class Switchover(_Model):
    """A planned, zero-loss handover of the primary role to member ``to``."""

    kind: Literal[FaultKind.SWITCHOVER]
    to: str


# ---- stalls: a frozen process is silent to its peers, yet its kernel still answers TCP --------


class StallPrimary(_Model):
    """SIGSTOP of every process of the primary's PostgreSQL instance (postmaster and children) for
    ``duration_s``, then SIGCONT: a VM freeze. Shorter than the stall tolerance, no failover may follow."""

    kind: Literal[FaultKind.STALL_PRIMARY]
    duration_s: float = Field(gt=0, le=600)


class StallLeaderController(_Model):
    """SIGSTOP of the leading controller for ``duration_s``: past its ZooKeeper session another leads,
    and the woken one must change nothing."""

    kind: Literal[FaultKind.STALL_LEADER_CONTROLLER]
    duration_s: float = Field(gt=0, le=600)


class StallZooKeeper(_Model):
    """SIGSTOP of one ZooKeeper server (the ensemble's leader, or the one in a data centre)."""

    kind: Literal[FaultKind.STALL_ZOOKEEPER]
    duration_s: float = Field(gt=0, le=600)
    datacenter: str = ZOOKEEPER_LEADER


Stall = StallPrimary | StallLeaderController | StallZooKeeper


# ---- link faults (an isolated lab only: orchestrator.drills.partitions injects them) ----------

ZOOKEEPER_FOLLOWER = "follower"   # isolate-zookeeper-minority: any one server that does not lead


class ClientLink(StrEnum):
    """partition-datacenter: whether the clients (and this machine's runner) lose the data centre too."""

    CUT = "cut"
    KEEP = "keep"


class PartitionDatacenter(_Model):
    """One data centre (its hosts and its controller) silently cut from every other one for
    ``duration_s``, then healed; ``clients: cut`` cuts the clients and the drill's load off it too."""

    kind: Literal[FaultKind.PARTITION_DATACENTER]
    datacenter: str = PRIMARY_DATACENTER
    clients: ClientLink = ClientLink.CUT
    duration_s: float = Field(gt=0, le=600)


class PartitionPrimaryFromControllers(_Model):
    """Every controller loses the primary's PostgreSQL port for ``duration_s``; its standbys still
    stream from it, its agent still holds its lease: nothing may fail over."""

    kind: Literal[FaultKind.PARTITION_PRIMARY_FROM_CONTROLLERS]
    duration_s: float = Field(gt=0, le=600)


class IsolateZooKeeperMinority(_Model):
    """One ZooKeeper server (``leader``, ``follower`` or the one in a data centre) cut from its peers
    and from every client outside its data centre for ``duration_s``, then healed."""

    kind: Literal[FaultKind.ISOLATE_ZOOKEEPER_MINORITY]
    datacenter: str = ZOOKEEPER_FOLLOWER
    duration_s: float = Field(gt=0, le=600)


class OneWayCut(_Model):
    """Frames from ``source`` to ``target`` (data centres, or ``primary``) dropped; the other way works."""

    kind: Literal[FaultKind.ONE_WAY_CUT]
    source: str = PRIMARY_DATACENTER
    target: str
    duration_s: float = Field(gt=0, le=600)


class FlakyLink(_Model):
    """The link between two data centres cut for ``down_ms``, up for ``up_ms``, over and over."""

    kind: Literal[FaultKind.FLAKY_LINK]
    between: tuple[str, str]
    down_ms: int = Field(300, ge=10, le=60_000)
    up_ms: int = Field(300, ge=10, le=60_000)
    duration_s: float = Field(gt=0, le=600)


LINK_FAULTS = (PartitionDatacenter, PartitionPrimaryFromControllers, IsolateZooKeeperMinority, OneWayCut, FlakyLink)
LinkFault = PartitionDatacenter | PartitionPrimaryFromControllers | IsolateZooKeeperMinority | OneWayCut | FlakyLink


def _link_fault_contradictions(fault: LinkFault, topo: Topology) -> list[str]:
    dcs = [dc.name for dc in topo.datacenters]
    named: list[tuple[str, str]] = []
    if isinstance(fault, PartitionDatacenter):
        named.append(("fault.datacenter", fault.datacenter))
    elif isinstance(fault, OneWayCut):
        named += [("fault.source", fault.source), ("fault.target", fault.target)]
        if fault.source == fault.target:
            return [f"fault.target: the same data centre as fault.source ({fault.source!r}); cut a link between two"]
    elif isinstance(fault, FlakyLink):
        named += [("fault.between", fault.between[0]), ("fault.between", fault.between[1])]
        if fault.between[0] == fault.between[1]:
            return [f"fault.between: twice {fault.between[0]!r}; name two different data centres"]
    elif isinstance(fault, IsolateZooKeeperMinority):
        zk = topo.zookeeper_datacenters
        if len(zk) < 3:
            return ["fault: isolate-zookeeper-minority needs an ensemble of at least three servers "
                    "(zookeeper.datacenters)"]
        if fault.datacenter not in (ZOOKEEPER_LEADER, ZOOKEEPER_FOLLOWER, *zk):
            return [f"fault.datacenter: no ZooKeeper server in {fault.datacenter!r}; use one of {', '.join(zk)}, "
                    f"{ZOOKEEPER_LEADER!r} or {ZOOKEEPER_FOLLOWER!r}"]
    return [f"{field}: unknown data centre {name!r}; use one of {', '.join(dcs)} or {PRIMARY_DATACENTER!r}"
            for field, name in named if name not in (PRIMARY_DATACENTER, *dcs)]


class ArchiveOutage(_Model):
    """The cluster's S3 store stopped (by PID) for ``duration_s`` under load, then started again.

    Judged on: every WAL segment from the fault to the end of catch-up in the archive, the
    primary's pg_wal peak within ``backup.max_pg_wal_mb``, the leader's ``archive-failed``
    alert, and archiving caught up within ``catch_up_timeout_s`` of the store's return.
    """

    kind: Literal[FaultKind.ARCHIVE_OUTAGE]
    duration_s: float = Field(60.0, gt=0, le=3600)
    catch_up_timeout_s: float = Field(300.0, gt=0, le=3600)


class TotalLossRestore(_Model):
    """Every database member lost at once (kill -9, data directories removed); the primary ZooKeeper
    records is rebuilt from the object store (``drctl restore``'s path: ``playbooks/restore.yml``,
    to the end of the archive, promoted); the controllers rejoin the others from it (re-clone)."""

    kind: Literal[FaultKind.TOTAL_LOSS_RESTORE]


Fault = Annotated[
    KillPrimary | DatacenterOutage | ControllerLeaderCrash | ZooKeeperServerLoss | Switchover | RegionLoss
    | StallPrimary | StallLeaderController | StallZooKeeper
    | PartitionDatacenter | PartitionPrimaryFromControllers | IsolateZooKeeperMinority | OneWayCut | FlakyLink
    | ArchiveOutage | TotalLossRestore,
    Field(discriminator="kind"),
]


class Abort(_Model):
    """Give up (stop the load, roll back, mark the drill aborted) without recovery by ``rto_factor`` x RTO."""

    rto_factor: float = Field(10.0, gt=1)


class Rollback(_Model):
    """After the drill, return the lab to its healthy topology."""

    rejoin: bool = True            # rejoin the old primary as a standby (pg_rewind or re-clone)
    restart_faulted: bool = True   # restart whatever the fault stopped
    # Switch the primary back to where it was before the drill (a planned, lossless
    # switchover), so the next drill starts from the usual layout.
    switch_back: bool = False


class TargetOverrides(_Model):
    """Unset fields take the cluster's targets from the topology."""

    rto_seconds: float | None = Field(None, gt=0)
    rpo_seconds: float | None = Field(None, ge=0)
    availability_percent: float | None = Field(None, gt=0, lt=100)


class Route(StrEnum):
    """How the drill's clients reach the primary: libpq multi-host, or HAProxy's read-write port."""

    LIBPQ = "libpq"
    HAPROXY = "haproxy"


class DrillSpec(_Model):
    name: str
    description: str = Field(min_length=1)
    cluster: str
    load: LoadProfile
    steady_state: SteadyState = SteadyState()
    fault: Fault
    fault_at_s: float = Field(gt=0)   # seconds into the load
    observe_s: float = Field(gt=0)    # the observation window after the fault
    abort: Abort = Abort()
    rollback: Rollback = Rollback()
    targets: TargetOverrides = TargetOverrides()
    schedule: str | None = None       # cron, five fields, UTC; run by the leading controller
    # libpq: the multi-host connection string (target_session_attrs=read-write); haproxy: the lab's
    # HAProxy read-write port, routed by the agents' /primary checks (drctl lab haproxy; started if needed).
    route: Route = Route.LIBPQ

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a valid name: use lower-case letters, digits and '-', starting with a letter"
            )
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and (len(value.split()) != 5 or not croniter.is_valid(value)):
            raise ValueError(
                f"{value!r} is not a valid cron expression: give five fields, minute hour day month weekday "
                "(e.g. '0 3 * * 1' for Mondays at 03:00 UTC)"
            )
        return value

    @model_validator(mode="after")
    def _timing(self) -> DrillSpec:
        load = self.load
        if self.fault_at_s >= load.duration_s:
            raise ValueError(
                f"fault_at_s: {self.fault_at_s:g} s is beyond the load's duration_s {load.duration_s:g} s; "
                "inject the fault while the load runs"
            )
        if self.fault_at_s + self.observe_s > load.duration_s:
            raise ValueError(
                f"observe_s: the window ends {self.fault_at_s + self.observe_s:g} s into the load but the load stops "
                f"at {load.duration_s:g} s; raise load.duration_s or shorten observe_s"
            )
        if load.users / load.spawn_rate > self.fault_at_s:
            raise ValueError(
                f"load.spawn_rate: {load.users} users at {load.spawn_rate:g}/s are not all running by the fault at "
                f"{self.fault_at_s:g} s; raise spawn_rate or fault_at_s"
            )
        return self

    # ---- derived values the runner and the scheduler use --------------------------------

    def effective_targets(self, cluster: Cluster) -> Targets:
        """The cluster's targets with this drill's overrides applied."""
        overrides = self.targets.model_dump(exclude_none=True)
        base = cluster.targets
        if isinstance(self.fault, RegionLoss):  # a region lost is judged by the region targets
            base = base.model_copy(update={"rto_seconds": base.region_rto_seconds,
                                           "rpo_seconds": base.region_rpo_seconds})
        return base.model_copy(update=overrides)

    def abort_after_s(self, targets: Targets) -> float:
        """Seconds after the fault without recovery before the runner aborts."""
        return self.abort.rto_factor * targets.rto_seconds

    def expects_new_primary(self, primary_datacenter: str) -> bool:
        """Whether the fault must move the primary (for :func:`~orchestrator.drills.measure.measure`)."""
        fault = self.fault
        if isinstance(fault, KillPrimary | Switchover | RegionLoss | TotalLossRestore):
            return True   # a restored primary writes on a new timeline: recovery is its first write
        if isinstance(fault, DatacenterOutage | PartitionDatacenter):
            return fault.datacenter in (PRIMARY_DATACENTER, primary_datacenter)
        return False

    def next_run(self, after: datetime) -> datetime | None:
        """The first scheduled time strictly after ``after`` (pass an aware UTC datetime), or None."""
        if self.schedule is None:
            return None
        nxt: datetime = croniter(self.schedule, after).get_next(datetime)
        return nxt


# ---- cross-checks against the topology ---------------------------------------------------


def _contradictions(spec: DrillSpec, topo: Topology) -> list[str]:
    """One message per thing the drill names that the topology lacks, each with the field path and fix."""
    clusters = [c.name for c in topo.clusters]
    if spec.cluster not in clusters:
        return [f"cluster: unknown cluster {spec.cluster!r}; use one of {', '.join(clusters)}"]
    if spec.route is Route.HAPROXY and topo.health is None:
        return ["route: haproxy needs the topology's health section (the agents' /primary checks); add "
                "'health: {}' to the topology or use route: libpq"]
    cluster = topo.cluster(spec.cluster)
    members = [m.name for m in cluster.members]
    dcs = [dc.name for dc in topo.datacenters]
    fault = spec.fault
    problems = []
    if isinstance(fault, DatacenterOutage) and fault.datacenter not in (PRIMARY_DATACENTER, *dcs):
        problems.append(
            f"fault.datacenter: unknown data centre {fault.datacenter!r}; "
            f"use one of {', '.join(dcs)} or {PRIMARY_DATACENTER!r}"
        )
    if isinstance(fault, ZooKeeperServerLoss | StallZooKeeper):
        zk = topo.zookeeper_datacenters
        if fault.datacenter not in (ZOOKEEPER_LEADER, *zk):
            problems.append(
                f"fault.datacenter: no ZooKeeper server in {fault.datacenter!r}; "
                f"use one of {', '.join(zk)} or {ZOOKEEPER_LEADER!r}"
            )
    if isinstance(fault, RegionLoss):
        problems.extend(_region_loss_contradictions(fault, topo, cluster))
    if isinstance(fault, LINK_FAULTS):
        problems.extend(_link_fault_contradictions(fault, topo))
    if isinstance(fault, ArchiveOutage | TotalLossRestore):
        problems.extend(_backup_fault_contradictions(spec, cluster))
    if isinstance(fault, ControllerLeaderCrash | StallLeaderController) and len(topo.controller_datacenters) < 2:
        problems.append(
            f"fault: {fault.kind} needs a second controller to take over; "
            "run controllers in at least two data centres (controller.datacenters)"
        )
    if isinstance(fault, Switchover):
        if fault.to not in members:
            problems.append(
                f"fault.to: unknown member {fault.to!r} of cluster {cluster.name!r}; use one of {', '.join(members)}"
            )
        elif (why := switchover_refusal(Policy.from_topology(topo, cluster), None, fault.to)) is not None:
            # Whether it is the primary right now is checked when the drill runs, before its load.
            problems.append(f"fault.to: {why}")
    targets = spec.effective_targets(cluster)
    if targets.rpo_seconds == 0 and cluster.replication.quorum == 0:
        problems.append(
            f"targets.rpo_seconds: 0 needs synchronous replication but cluster {cluster.name!r} has quorum 0; "
            "accept a positive RPO"
        )
    if isinstance(fault, StallPrimary | StallLeaderController | StallZooKeeper) and fault.duration_s >= spec.observe_s:
        problems.append(
            f"fault.duration_s: a {fault.duration_s:g} s stall outlasts the {spec.observe_s:g} s observation window; "
            "shorten the stall or raise observe_s (and load.duration_s) to watch what follows the heal"
        )
    if spec.observe_s < targets.rto_seconds:
        problems.append(
            f"observe_s: {spec.observe_s:g} s is shorter than the {targets.rto_seconds:g} s RTO target; "
            "observe at least as long as the target"
        )
    return problems


def _region_loss_contradictions(fault: RegionLoss, topo: Topology, cluster: Cluster) -> list[str]:
    regions = [r.name for r in topo.regions]
    if fault.region not in (PRIMARY_DATACENTER, *regions):
        return [f"fault.region: unknown region {fault.region!r}; use one of {', '.join(regions)} "
                f"or {PRIMARY_DATACENTER!r}"]
    members = [m.name for m in cluster.members]
    if fault.promote is not None and fault.promote not in members:
        return [f"fault.promote: unknown member {fault.promote!r} of cluster {cluster.name!r}; "
                f"use one of {', '.join(members)}"]
    if fault.promote is None and cluster.replication.dr_failover.value == "manual":
        return [f"fault.promote: cluster {cluster.name!r} has replication.dr_failover manual, so nothing promotes "
                "by itself; name the DR standby the drill promotes (as drctl failover --to M --accept-data-loss), "
                "or set dr_failover: automatic"]
    return []


def _backup_fault_contradictions(spec: DrillSpec, cluster: Cluster) -> list[str]:
    """archive-outage and total-loss-restore need a backup section on the lab's own store."""
    backup = cluster.backup
    if backup is None:
        return [f"fault: {spec.fault.kind} needs cluster {cluster.name!r} to have a backup section; "
                "see topology/lab-backup.yaml"]
    if not (backup.host.startswith("127.") and backup.credentials_file.startswith("s3/")):
        return [f"fault: {spec.fault.kind} stops or reads the lab's own S3 store; clusters.{cluster.name}.backup "
                "must point at it (a loopback endpoint, credentials_file under s3/)"]
    if isinstance(spec.fault, ArchiveOutage) and spec.fault_at_s + spec.fault.duration_s > spec.load.duration_s:
        return [f"fault.duration_s: the outage ends {spec.fault_at_s + spec.fault.duration_s:g} s into the load, "
                f"after it stops at {spec.load.duration_s:g} s; raise load.duration_s (catch-up is judged under load)"]
    return []


# ---- loading ------------------------------------------------------------------------------

_KINDS = ", ".join(k.value for k in FaultKind)


def _format_error(source: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    # A discriminated union puts the tag in the path (fault.switchover.to): drop it.
    loc = [str(part) for part in first["loc"] if str(part) not in FaultKind._value2member_map_]
    message = str(first["msg"]).removeprefix("Value error, ")
    kind = first["type"]
    if kind == "union_tag_invalid":
        loc.append("kind")
        tag = (first.get("ctx") or {}).get("tag")
        message = f"unknown fault kind {tag!r}; use one of {_KINDS}"
    elif kind == "union_tag_not_found":
        loc.append("kind")
        message = f"required field is missing; add one of {_KINDS}"
    elif kind == "extra_forbidden":
        message = "unknown field; remove it or check its spelling"
    elif kind == "missing":
        message = "required field is missing; add it"
    if not loc and re.match(r"^[a-z_.]+: ", message):
        loc_text, message = message.split(": ", 1)   # a model validator names its own field
        loc = [loc_text]
    more = len(exc.errors()) - 1
    return f"{source}: " + (f"{'.'.join(loc)}: " if loc else "") + message + (
        f" (and {more} more error(s))" if more else ""
    )


def parse_drill(data: Any, topology: Topology, *, source: str = "drill") -> DrillSpec:
    """Validate already-parsed YAML against the model and the topology.

    :raises DrillFileError: one line naming the field path and the fix.
    """
    if not isinstance(data, dict):
        raise DrillFileError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        spec = DrillSpec.model_validate(data)
    except ValidationError as exc:
        raise DrillFileError(_format_error(source, exc)) from None
    problems = _contradictions(spec, topology)
    if problems:
        more = len(problems) - 1
        raise DrillFileError(f"{source}: {problems[0]}" + (f" (and {more} more error(s))" if more else ""))
    return spec


def load_drill(path: str | Path, topology: Topology) -> DrillSpec:
    """Read a drill file and check it against ``topology``; its ``name`` must match the file name.

    :raises DrillFileError: unreadable, not YAML, malformed, or naming what the topology lacks.
    """
    path = Path(path)
    spec = parse_drill(read_yaml(path, "drill", DrillFileError), topology, source=str(path))
    if spec.name != path.stem:
        raise DrillFileError(
            f"{path}: name: {spec.name!r} differs from the file name {path.name!r}; make them the same"
        )
    return spec


def list_drills(directory: str | Path) -> list[Path]:
    """The drill files in ``directory`` (``*.yaml``, ``*.yml``), sorted; none if it does not exist.

    Files are not validated: load each with :func:`load_drill` so one bad file does not hide the rest.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def find_drill(directory: str | Path, name: str) -> Path:
    """The file of drill ``name`` in ``directory``.

    :raises DrillFileError: no such drill; the message lists the drills there are.
    """
    for path in list_drills(directory):
        if path.stem == name:
            return path
    known = ", ".join(p.stem for p in list_drills(directory)) or "none"
    raise DrillFileError(f"no drill {name!r} in {directory}; drills are: {known}")
