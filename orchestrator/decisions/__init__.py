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
proof), :mod:`.candidates` (choice and proof, switchover, catch-up), :mod:`.table` (the one
decision per round) and :mod:`.steering` (resume, re-plan, roll back, abort).
"""

from __future__ import annotations

from orchestrator.decisions.candidates import (
    CATCH_UP_SECONDS as CATCH_UP_SECONDS,
)
from orchestrator.decisions.candidates import (
    Candidate as Candidate,
)
from orchestrator.decisions.candidates import (
    CatchUp as CatchUp,
)
from orchestrator.decisions.candidates import (
    Refusal as Refusal,
)
from orchestrator.decisions.candidates import (
    after_catch_up as after_catch_up,
)
from orchestrator.decisions.candidates import (
    catch_up_source as catch_up_source,
)
from orchestrator.decisions.candidates import (
    choose_candidate as choose_candidate,
)
from orchestrator.decisions.candidates import (
    fallback_from_first_commit as fallback_from_first_commit,
)
from orchestrator.decisions.candidates import (
    finished as finished,
)
from orchestrator.decisions.candidates import (
    plan_switchover as plan_switchover,
)
from orchestrator.decisions.candidates import (
    switchover_refusal as switchover_refusal,
)
from orchestrator.decisions.candidates import (
    wal_at_risk as wal_at_risk,
)
from orchestrator.decisions.detection import (
    LEASE_CLOCK_MARGIN_S as LEASE_CLOCK_MARGIN_S,
)
from orchestrator.decisions.detection import (
    AgentView as AgentView,
)
from orchestrator.decisions.detection import (
    Assessment as Assessment,
)
from orchestrator.decisions.detection import (
    Memory as Memory,
)
from orchestrator.decisions.detection import (
    StopEvidence as StopEvidence,
)
from orchestrator.decisions.detection import (
    StopProof as StopProof,
)
from orchestrator.decisions.detection import (
    Verdict as Verdict,
)
from orchestrator.decisions.detection import (
    assess_primary as assess_primary,
)
from orchestrator.decisions.detection import (
    remember as remember,
)
from orchestrator.decisions.detection import (
    stop_evidence as stop_evidence,
)
from orchestrator.decisions.lease import (
    SessionState as SessionState,
)
from orchestrator.decisions.lease import (
    may_act as may_act,
)
from orchestrator.decisions.lease import (
    should_yield as should_yield,
)
from orchestrator.decisions.policy import (
    MemberPolicy as MemberPolicy,
)
from orchestrator.decisions.policy import (
    Policy as Policy,
)
from orchestrator.decisions.steering import (
    SWITCHOVER_DEADLINE_SECONDS as SWITCHOVER_DEADLINE_SECONDS,
)
from orchestrator.decisions.steering import (
    Abort as Abort,
)
from orchestrator.decisions.steering import (
    Hold as Hold,
)
from orchestrator.decisions.steering import (
    Proceed as Proceed,
)
from orchestrator.decisions.steering import (
    Replanned as Replanned,
)
from orchestrator.decisions.steering import (
    ResumePlan as ResumePlan,
)
from orchestrator.decisions.steering import (
    RollBack as RollBack,
)
from orchestrator.decisions.steering import (
    plan_abort as plan_abort,
)
from orchestrator.decisions.steering import (
    plan_resume as plan_resume,
)
from orchestrator.decisions.steering import (
    replan as replan,
)
from orchestrator.decisions.table import (
    QUORUM_SHORTAGE_SECONDS as QUORUM_SHORTAGE_SECONDS,
)
from orchestrator.decisions.table import (
    Blocked as Blocked,
)
from orchestrator.decisions.table import (
    Decision as Decision,
)
from orchestrator.decisions.table import (
    Failover as Failover,
)
from orchestrator.decisions.table import (
    FenceStray as FenceStray,
)
from orchestrator.decisions.table import (
    Idle as Idle,
)
from orchestrator.decisions.table import (
    NarrowQuorum as NarrowQuorum,
)
from orchestrator.decisions.table import (
    Rejoin as Rejoin,
)
from orchestrator.decisions.table import (
    Repoint as Repoint,
)
from orchestrator.decisions.table import (
    Resume as Resume,
)
from orchestrator.decisions.table import (
    Wait as Wait,
)
from orchestrator.decisions.table import (
    WidenQuorum as WidenQuorum,
)
from orchestrator.decisions.table import (
    decide as decide,
)
