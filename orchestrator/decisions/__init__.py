"""Where failover is decided: pure functions over a probe snapshot and the persisted state.

Nothing here does I/O, reads a clock or sleeps: the controller passes ``now`` in, gets a
typed :class:`Decision` back (each carries its ``reason``), and executes it. Rules:

* **Act only with a sure lease** (:func:`may_act`): a controller whose ZooKeeper session
  is in doubt, or that is not the leader of the current epoch, does nothing.
* **Holistic detection** (:func:`assess_primary`): the primary is failed only after
  ``failure_threshold`` consecutive failed probes AND no reachable standby still streams
  from it. A controller cut off from a healthy primary sees standbys streaming and waits.
* **Candidate choice** (:func:`choose_candidate`): a reachable synchronous-quorum standby,
  most advanced received WAL first, then same region as the old primary, then priority;
  never ``never_promote``; never an asynchronous member unless an operator accepts loss.
  Zero loss is *provable* only if enough quorum candidates are reachable that at least
  one of them confirmed every acknowledged commit.
* **Data-centre-aware quorum** (:meth:`Policy.quorum_for`): with RPO 0 only members outside
  the primary's data centre confirm its commits, so losing any one data centre leaves every
  quorum candidate of the primary it held, and the proof goes through.
* **Never an unproven automatic failover** (:func:`decide`): without proof the decision is
  Blocked and names the operator's ``--accept-data-loss`` command; what such a promotion
  risks is :func:`wal_at_risk`, and a catch-up that did not finish is judged by
  :func:`after_catch_up`.

The rules live in one module each; this package re-exports them, so ``decisions.X`` is the
name to use: :mod:`.policy`, :mod:`.lease`, :mod:`.detection` (verdict, fence-before-promote
proof), :mod:`.candidates` (choice and proof, switchover, catch-up), :mod:`.lag` (DR lag in seconds, the
cross-region RPO bound's alert and hold), :mod:`.region` (a whole region lost: the DR failover rule),
:mod:`.breakglass` (promoting without ZooKeeper, adopted when it returns), :mod:`.table` (the one
decision per round) and :mod:`.steering` (resume, re-plan, roll back, abort).
"""

from __future__ import annotations

from orchestrator.decisions.breakglass import AdoptBreakGlass, adopted, adoption, lost_regions, new_record, refusal
from orchestrator.decisions.candidates import (
    CATCH_UP_SECONDS,
    Candidate,
    CatchUp,
    Refusal,
    after_catch_up,
    catch_up_source,
    choose_candidate,
    fallback_from_first_commit,
    finished,
    plan_switchover,
    switchover_refusal,
    wal_at_risk,
)
from orchestrator.decisions.detection import (
    LEASE_CLOCK_MARGIN_S,
    AgentView,
    Assessment,
    Memory,
    StopEvidence,
    StopProof,
    Verdict,
    assess_primary,
    remember,
    stop_evidence,
)
from orchestrator.decisions.lag import (
    DR_MIN_SECONDS,
    LAG_HORIZON_SECONDS,
    HoldCommits,
    ReleaseCommits,
    WalHistory,
    alert_change,
    cluster_lag,
    hold_change,
    measure,
    observe,
    record_of,
    seconds_behind,
    with_readings,
)
from orchestrator.decisions.lease import SessionState, may_act, should_yield
from orchestrator.decisions.policy import DrBound, MemberPolicy, Policy
from orchestrator.decisions.region import DrPromotion, RegionLoss, dr_failover, dr_lag_at_loss, region_loss
from orchestrator.decisions.steering import (
    SWITCHOVER_DEADLINE_SECONDS,
    Abort,
    Hold,
    Proceed,
    Replanned,
    ResumePlan,
    RollBack,
    plan_abort,
    plan_resume,
    replan,
    switchover_deadline,
)
from orchestrator.decisions.table import (
    QUORUM_SHORTAGE_SECONDS,
    Blocked,
    Decision,
    Failover,
    FenceStray,
    Idle,
    NarrowQuorum,
    Rejoin,
    Repoint,
    Resume,
    Wait,
    WidenQuorum,
    decide,
)

__all__ = [
    "CATCH_UP_SECONDS",
    "DR_MIN_SECONDS",
    "LAG_HORIZON_SECONDS",
    "LEASE_CLOCK_MARGIN_S",
    "QUORUM_SHORTAGE_SECONDS",
    "SWITCHOVER_DEADLINE_SECONDS",
    "Abort",
    "AdoptBreakGlass",
    "AgentView",
    "Assessment",
    "Blocked",
    "Candidate",
    "CatchUp",
    "Decision",
    "DrBound",
    "DrPromotion",
    "Failover",
    "FenceStray",
    "Hold",
    "HoldCommits",
    "Idle",
    "MemberPolicy",
    "Memory",
    "NarrowQuorum",
    "Policy",
    "Proceed",
    "Refusal",
    "RegionLoss",
    "Rejoin",
    "ReleaseCommits",
    "Replanned",
    "Repoint",
    "Resume",
    "ResumePlan",
    "RollBack",
    "SessionState",
    "StopEvidence",
    "StopProof",
    "Verdict",
    "Wait",
    "WalHistory",
    "WidenQuorum",
    "adopted",
    "adoption",
    "after_catch_up",
    "alert_change",
    "assess_primary",
    "catch_up_source",
    "choose_candidate",
    "cluster_lag",
    "decide",
    "dr_failover",
    "dr_lag_at_loss",
    "fallback_from_first_commit",
    "finished",
    "hold_change",
    "lost_regions",
    "may_act",
    "measure",
    "new_record",
    "observe",
    "plan_abort",
    "plan_resume",
    "plan_switchover",
    "record_of",
    "refusal",
    "region_loss",
    "remember",
    "replan",
    "seconds_behind",
    "should_yield",
    "stop_evidence",
    "switchover_deadline",
    "switchover_refusal",
    "wal_at_risk",
    "with_readings",
]
