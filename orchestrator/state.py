"""The state the controller reasons about.

Two kinds of state live here:

* :class:`MemberStatus` / :class:`ClusterSnapshot`: what one probe round observed, frozen,
  built by :mod:`orchestrator.postgres` and read by :mod:`orchestrator.decisions`.
* :class:`ClusterState`: what the leader has decided and persisted in ZooKeeper (the
  current primary, its generation, any failover in progress step by step). It is JSON
  in a znode, written only with a compare-and-set under the leader's epoch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Role(StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"
    UNKNOWN = "unknown"


class Health(StrEnum):
    HEALTHY = "healthy"
    UNREACHABLE = "unreachable"


def lsn_to_int(lsn: str | None) -> int | None:
    """PostgreSQL's ``X/Y`` LSN text as a byte position."""
    if lsn is None:
        return None
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class MemberStatus:
    """One member as one probe saw it."""

    name: str
    health: Health
    role: Role = Role.UNKNOWN
    timeline: int | None = None
    # Primary: current write position. Standby: last WAL received (flushed) from upstream.
    wal_lsn: int | None = None
    replay_lsn: int | None = None
    # Standby only: is its walreceiver streaming right now, and from which address:port.
    streaming: bool = False
    upstream: str | None = None
    # Primary only: application_name -> sync_state ('quorum', 'async', ...) of attached standbys.
    replicas: Mapping[str, str] = field(default_factory=dict)
    # Primary only: application_name -> (flush, replay) LSN of every attached standby, whatever
    # its state (catching up included): what the primary knows each one holds.
    attached: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)
    # Primary only: its synchronous_standby_names in effect (None: not read).
    sync_names: str | None = None
    read_only: bool = False
    error: str | None = None
    # Unreachable because its host answered and refused the connection (TCP RST / no socket):
    # no postmaster listens, so the member acknowledges nothing. A timeout proves nothing.
    refused: bool = False

    @property
    def reachable(self) -> bool:
        return self.health is Health.HEALTHY


@dataclass(frozen=True)
class ClusterSnapshot:
    cluster: str
    members: Mapping[str, MemberStatus]
    taken_at: float = field(default_factory=time.time)

    def primaries(self) -> list[str]:
        return sorted(n for n, m in self.members.items() if m.reachable and m.role is Role.PRIMARY)


class OperationKind(StrEnum):
    FAILOVER = "failover"
    SWITCHOVER = "switchover"


class Step(StrEnum):
    """Steps of a failover or switchover, in order; each is idempotent when resumed."""

    INTENT = "intent"
    FENCE = "fence"
    PROMOTE = "promote"
    REPOINT = "repoint"
    DONE = "done"


class Outcome(StrEnum):
    """How an operation ended, as its history entry says."""

    DONE = "done"                  # the target was promoted and the others re-pointed
    ABORTED = "aborted"            # an operator ended it before promotion (drctl abort)
    ROLLED_BACK = "rolled-back"    # a switchover gave up before promotion; the old primary takes writes


class Replan(BaseModel):
    """A failover's target was replaced before it was promoted (it died or became unreachable)."""

    model_config = ConfigDict(frozen=True)

    at: float
    old_target: str
    new_target: str
    reason: str


class StepRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: Step
    at: float
    detail: str = ""


class Operation(BaseModel):
    """A failover or switchover in progress, persisted so a new leader can finish it."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: OperationKind
    source: str
    target: str
    reason: str
    started_at: float
    step: Step = Step.INTENT
    steps: tuple[StepRecord, ...] = ()
    accept_data_loss: bool = False
    epoch: int = 0
    # When the controller first failed to reach the source (automatic failovers only).
    first_failure_at: float | None = None
    # Zero loss: proven (the target holds every acknowledged commit) or not, and why. Only an
    # operator's accept_data_loss ever runs an unproven one; wal_at_risk_bytes is then how far
    # the old primary's last known WAL position was beyond the target's (None: unknown or proven).
    proven: bool = False
    proof: str = ""
    wal_at_risk_bytes: int | None = None
    # A DR failover after a region loss: the region, and the DR lag when it was lost (the
    # data-loss window the policy accepted; None: not measured).
    lost_region: str = ""
    data_loss_window_s: float | None = None
    # The step persisted as started and not yet as finished: a new leader knows it may be
    # half done (PROMOTE: the target may already be primary). None between steps.
    running: Step | None = None
    replans: tuple[Replan, ...] = ()
    outcome: Outcome | None = None
    outcome_detail: str = ""     # who/why for an abort, why for a roll-back

    def advanced(self, step: Step, at: float, detail: str = "") -> Operation:
        return self.model_copy(
            update={"step": step, "steps": (*self.steps, StepRecord(step=step, at=at, detail=detail)),
                    "running": None}
        )

    def starting(self, step: Step) -> Operation:
        """Marked as running ``step`` (persist it before the step's first side effect)."""
        return self.model_copy(update={"running": step})

    def replanned(self, target: str, at: float, reason: str, *, proven: bool, proof: str) -> Operation:
        """The same operation with a new target, its promotion not started, and the new target's proof
        (an operator's accepted loss is not carried over: see decisions.replan)."""
        record = Replan(at=at, old_target=self.target, new_target=target, reason=reason)
        return self.model_copy(update={"target": target, "replans": (*self.replans, record), "running": None,
                                       "proven": proven, "proof": proof, "wal_at_risk_bytes": None})

    def ended(self, outcome: Outcome, detail: str = "") -> Operation:
        return self.model_copy(update={"outcome": outcome, "outcome_detail": detail, "running": None})


class MemberRecord(BaseModel):
    """What the leader last saw of a member, for ``drctl status``."""

    model_config = ConfigDict(frozen=True)

    health: Health
    role: Role
    timeline: int | None = None
    wal_lsn: int | None = None
    streaming: bool = False
    lag_bytes: int | None = None


class DrMemberLag(BaseModel):
    """One DR standby's lag as the leader measured it (see ``decisions.lag``)."""

    model_config = ConfigDict(frozen=True)

    receive_lsn: int | None = None
    replay_lsn: int | None = None
    # Seconds of the primary's WAL it lacks (received and flushed / replayed); None: unknown.
    receive_lag_s: float | None = None
    replay_lag_s: float | None = None
    # False: the leader's WAL history is shorter than the (receive / replay) lag, and the seconds
    # are a lower bound.
    exact: bool = True
    replay_exact: bool = True
    attached: bool = False       # streams (or catches up) from the primary


class DrLagRecord(BaseModel):
    """The cross-region RPO bound's state: the DR standbys' lag, the alert, the hold."""

    model_config = ConfigDict(frozen=True)

    max_seconds: float
    mode: str                             # alert | bounded
    measured_at: float | None = None
    # The cluster's lag: the best DR standby's receive lag (what a region loss would take now).
    lag_seconds: float | None = None
    members: dict[str, DrMemberLag] = Field(default_factory=dict)
    # The alert: over the bound since ``over_changed_at`` (False: at or under resume_below since then).
    over: bool = False
    over_changed_at: float | None = None
    # Bounded mode: the DR standby in the primary's synchronous set (recorded before it is added),
    # for which primary, and since when.
    holding: str | None = None
    holding_primary: str = ""
    holding_since: float | None = None

    def held_by(self, primary: str) -> str | None:
        """The DR standby holding ``primary``'s commits (a hold recorded for an older primary is void:
        every promotion sets the new primary's synchronous list afresh)."""
        return self.holding if self.holding_primary == primary else None


class BreakGlassRecord(BaseModel):
    """A promotion made without ZooKeeper (``drctl dr promote``), as its operator's tool recorded it.

    Written to a local file (and the audit trail) when no ZooKeeper majority survived anywhere;
    the first leader once ZooKeeper is back adopts it (``decisions.breakglass``) before any
    other rule: ``target`` becomes the primary of ``generation``, whatever the returning side
    recorded, and that side's old primary is fenced as a stray, never merged.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    cluster: str
    target: str
    lost_region: str
    at: float
    by: str
    # The generation it asserts: one above the last one its operator knew (the adopted state
    # takes the higher of this and the returning state's next one).
    generation: int
    timeline: int | None = None
    reason: str = ""


class ClusterState(BaseModel):
    """The cluster's authoritative state in ZooKeeper."""

    model_config = ConfigDict(frozen=True)

    cluster: str
    primary: str
    # Bumped at every promotion: an agent can refuse writes on any primary of an older generation.
    generation: int = 1
    timeline: int | None = None
    paused: bool = False
    # Fallback members currently added to the primary's quorum (see ReplicationPolicy.fallback).
    # Recorded BEFORE they are added and cleared only once in-region standbys hold all WAL,
    # so candidate choice always knows every member that may hold an acknowledged commit.
    synchronous_extra: tuple[str, ...] = ()
    last_failover_at: float | None = None
    operation: Operation | None = None
    history: tuple[Operation, ...] = Field(default=(), max_length=50)
    members: dict[str, MemberRecord] = Field(default_factory=dict)
    # The DR lag bound's measurements and state (replication.dr_lag); None when not configured.
    dr_lag: DrLagRecord | None = None
    leader: str = ""
    epoch: int = 0
    updated_at: float = 0.0
    # Break-glass promotions already adopted (BreakGlassRecord.id): each is adopted once.
    break_glass: tuple[str, ...] = ()
