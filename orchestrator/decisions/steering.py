"""Steering a recorded operation: resume, re-plan, roll back, abort."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.decisions.candidates import Refusal, choose_candidate
from orchestrator.decisions.policy import Policy
from orchestrator.state import ClusterSnapshot, Operation, OperationKind, Role, Step

# ---- steering an operation: resume, re-plan, roll back, abort --------------------------------

# A switchover whose target cannot be promoted gives up and rolls back once this long has
# passed since it started: the old primary's writes are stopped meanwhile (an outage).
SWITCHOVER_DEADLINE_SECONDS = 10.0


def switchover_deadline(op: Operation) -> float:
    """When a switchover that has not promoted rolls back: the one deadline, for the decision here
    and for the wait in ``control.operations``."""
    return op.started_at + SWITCHOVER_DEADLINE_SECONDS


@dataclass(frozen=True)
class Proceed:
    """Carry on from the recorded step with the same target."""

    reason: str


@dataclass(frozen=True)
class Replanned:
    """Promote ``target`` instead: the recorded target cannot be promoted."""

    target: str
    proven: bool
    reason: str
    proof: str = ""   # why the new target holds every acknowledged commit (recorded with the operation)


@dataclass(frozen=True)
class RollBack:
    """A switchover ends without promotion: the old primary takes writes again."""

    reason: str


@dataclass(frozen=True)
class Hold:
    """Nothing can be done this round; the operation stays recorded and is reconsidered."""

    reason: str


ResumePlan = Proceed | Replanned | RollBack | Hold


def _promotion_recorded(op: Operation) -> bool:
    return op.step in (Step.PROMOTE, Step.REPOINT, Step.DONE)


def _new_timeline_seen(snapshot: ClusterSnapshot, target: str, source_timeline: int | None) -> bool:
    """Does a reachable member other than ``target`` report a timeline newer than the source's?

    A promoted target acknowledges a commit only once a standby confirmed it, and a standby
    that received the new timeline's WAL reports that timeline: none seen means the target,
    promoted or not, acknowledged nothing.
    """
    if source_timeline is None:
        return True  # unknown: assume the worst
    return any(s.reachable and s.timeline is not None and s.timeline > source_timeline
               for n, s in snapshot.members.items() if n != target)


def plan_resume(op: Operation, snapshot: ClusterSnapshot, policy: Policy, now: float, *,
                source_timeline: int | None, extra_synchronous: tuple[str, ...] = ()) -> ResumePlan:
    """What to do with a recorded operation, given a fresh probe of its members.

    * Promotion recorded: finish it (re-point, done), whatever became of the target since; the
      new primary's failure is a new failover.
    * The target answers (standby, or primary already): proceed; promoting a primary is a no-op.
    * The target is unreachable and its promotion was never started: a failover re-plans with
      the next eligible candidate (:func:`replan`); a switchover waits for it until
      :data:`SWITCHOVER_DEADLINE_SECONDS` after its start, then rolls back.
    * Its promotion was started (it may be primary): a switchover rolls back only if no
      survivor reports a newer timeline (so the target acknowledged nothing); otherwise, and
      for a failover, re-plan.
    """
    if _promotion_recorded(op):
        return Proceed(f"{op.target}'s promotion is recorded; finishing {op.kind} {op.id}")
    target = snapshot.members.get(op.target)
    if target is not None and target.reachable and target.role in (Role.STANDBY, Role.PRIMARY):
        return Proceed(f"{op.target} answers as {target.role.value}; resuming {op.kind} {op.id}")
    gone = f"{op.target} is unreachable ({target.error if target is not None and target.error else 'no answer'})"
    if op.kind is OperationKind.SWITCHOVER:
        if op.running is not Step.PROMOTE:
            if now >= switchover_deadline(op):
                return RollBack(f"{gone} and the switchover's {SWITCHOVER_DEADLINE_SECONDS:.0f}s deadline passed; "
                                f"rolling back: {op.source} takes writes again")
            # One wording per operation (no countdown): the cycle logs a hold once per reason.
            return Hold(f"{gone}; switchover {op.id} rolls back once its {SWITCHOVER_DEADLINE_SECONDS:.0f}s "
                        f"deadline passes unless {op.target} returns (drctl abort {policy.cluster} rolls back now)")
        if not _new_timeline_seen(snapshot, op.target, source_timeline):
            return RollBack(f"{gone} after its promotion started, and no member reports a newer timeline, so it "
                            f"acknowledged nothing; rolling back: {op.source} takes writes again")
    return replan(op, snapshot, policy, why=gone, extra_synchronous=extra_synchronous)


def replan(op: Operation, snapshot: ClusterSnapshot, policy: Policy, *, why: str,
           extra_synchronous: tuple[str, ...] = ()) -> Replanned | Hold:
    """The next eligible candidate for ``op``, whose target cannot be promoted, or why none.

    The same choice as an automatic failover (:func:`choose_candidate`, from the old primary,
    never the unreachable target); an operator's accepted data loss is not carried over to
    another member, and an unproven choice is never made automatically.
    """
    choice = choose_candidate(snapshot, policy, op.source, extra_synchronous=extra_synchronous)
    if isinstance(choice, Refusal):
        return Hold(f"{why}; no other candidate: {choice.reason} (drctl abort {policy.cluster} ends {op.kind} {op.id})")
    if choice.name == op.target:
        return Hold(f"{why}; {op.target} is still the best candidate")
    if not choice.proven:
        return Hold(f"{why}; {choice.reason}; not re-planning to an unproven candidate "
                    f"(drctl abort {policy.cluster}, then drctl failover {policy.cluster} --to {choice.name} "
                    "--accept-data-loss)")
    return Replanned(choice.name, choice.proven, f"{why}; re-planned to {choice.name}: {choice.reason}",
                     choice.proof)


@dataclass(frozen=True)
class Abort:
    """End ``op`` now: a switchover rolls back, a failover is dropped."""

    roll_back: bool
    reason: str


def plan_abort(op: Operation | None, snapshot: ClusterSnapshot, cluster: str, *, by: str, why: str
               ) -> Abort | Refusal:
    """May an operator end ``op`` now (``drctl abort``)? Only before its target can be primary.

    Once the promotion is recorded, or started with the target answering, the target is (or
    is becoming) the primary: refused, the operation finishes. A switchover whose promotion
    started is refused too: re-plan or roll-back decide it from the timelines. A failover whose
    promotion started while its target is unreachable may be dropped: like a re-plan, whoever
    is promoted next makes that target a stray, and it acknowledged nothing without a standby.
    """
    if op is None:
        return Refusal(f"no operation is in progress on {cluster}; nothing to abort")
    who = f"aborted by {by}" + (f": {why}" if why else "")
    if _promotion_recorded(op):
        return Refusal(f"{op.kind} {op.id} already promoted {op.target}: it is the primary; the operation finishes")
    target = snapshot.members.get(op.target)
    if op.running is Step.PROMOTE:
        if op.kind is OperationKind.SWITCHOVER or (target is not None and target.reachable):
            return Refusal(f"{op.kind} {op.id} has started promoting {op.target}: it is primary or becoming it; "
                           "the operation finishes")
        return Abort(False, f"{op.kind} {op.id} dropped ({op.target} unreachable mid-promotion), {who}")
    if op.kind is OperationKind.SWITCHOVER:
        return Abort(True, f"switchover {op.id} rolled back before promotion, {who}; {op.source} takes writes again")
    return Abort(False, f"failover {op.id} to {op.target} dropped before promotion, {who}")
