"""The failover/switchover step machine: intent -> fence -> promote -> re-point -> done.

:func:`run` drives an :class:`~orchestrator.state.Operation` from its recorded step to the
end. Progress is persisted in ZooKeeper under the leader's epoch, so a new leader resumes
a half-done operation and a deposed one can record nothing. Before each member it
touches, the lease is confirmed with a ZooKeeper read (``term.guard``), and every state
write carries the epoch check: a leader that lost its lease mid-operation stops at its
next step and leaves the rest to the new leader, which resumes from the last recorded step.

Called by the cycle (automatic failover, resume) and by operator requests.
"""

from __future__ import annotations

import time

from orchestrator import decisions as d
from orchestrator.control.context import ClusterContext
from orchestrator.control.executors import repoint_all
from orchestrator.control.fencing import await_stopped
from orchestrator.errors import DatabaseUnavailable, LostLeadership
from orchestrator.state import ClusterSnapshot, Operation, OperationKind, Outcome, Step
from orchestrator.waiting import poll, poll_tight


class SwitchoverAborted(DatabaseUnavailable):
    """A switchover gave up before promoting anything; the old primary was made writable again."""


class TargetLost(DatabaseUnavailable):
    """The operation's target failed during a step, before its promotion was recorded."""


class OperationHeld(DatabaseUnavailable):
    """The recorded operation cannot go on this round (see its reason); it stays recorded."""


# How often one run reconsiders an operation whose target failed before giving the round up.
TARGET_ATTEMPTS = 3


def run(ctx: ClusterContext, op: Operation, snapshot: ClusterSnapshot) -> Operation:
    """Drive ``op`` from its recorded step to DONE, persisting progress; idempotent per step.

    Each step is persisted as started before its first side effect and as finished after it
    (the fence's end and the promotion's start share one write; the promotion's end and the
    re-point share the one write after promotion). A resumed operation, and one whose target
    failed during a step, is reconsidered first (:func:`orchestrator.decisions.plan_resume`):
    carry on, re-plan with another target, roll a switchover back, or hold.

    :raises LostLeadership: the lease was lost (or in doubt) before a step; nothing more done.
    :raises OperationHeld: nothing can be done now; the operation stays recorded.
    :raises SwitchoverAborted: the switchover ended without promotion (in the history as rolled back).
    :raises DatabaseUnavailable: a member did not do its part; the operation stays recorded.
    """
    if op.step is Step.INTENT and not op.steps:
        op = op.advanced(Step.INTENT, op.started_at, op.reason).starting(Step.FENCE)
        _save(ctx, op)
        ctx.log.emit("failover-intent" if op.kind is OperationKind.FAILOVER else "switchover-intent",
                     cluster=ctx.cluster, operation=op.id, source=op.source, target=op.target, reason=op.reason)
    else:
        op = _reconsider(ctx, op, snapshot)
    for _ in range(TARGET_ATTEMPTS):
        try:
            return _steps(ctx, op, snapshot)
        except TargetLost as exc:
            ctx.log.emit("target-failed", cluster=ctx.cluster, operation=op.id, member=op.target, error=str(exc))
            recorded = ctx.store.get(ctx.cluster)[0].operation
            op = recorded if recorded is not None and recorded.id == op.id else op
            snapshot = ctx.db.probe()
            op = _reconsider(ctx, op, snapshot)
    raise OperationHeld(f"{op.kind} {op.id}: its target failed {TARGET_ATTEMPTS} times in a row; "
                        "reconsidered next round")


def _steps(ctx: ClusterContext, op: Operation, snapshot: ClusterSnapshot) -> Operation:
    steps = [Step.FENCE, Step.PROMOTE, Step.REPOINT, Step.DONE]
    for step in steps[steps.index(op.step) + 1 if op.step in steps else 0:]:
        # No blanket lease check here: each side effect below has its own guard right
        # before it, and each state write is refused by ZooKeeper itself under a stale epoch.
        if step is Step.FENCE:
            if op.running is not Step.FENCE:  # re-planned or resumed between steps
                op = op.starting(Step.FENCE)
                _save(ctx, op)
            try:
                detail = _fence_source(ctx, op, snapshot)
            except SwitchoverAborted as exc:
                _finish(ctx, op.ended(Outcome.ROLLED_BACK, str(exc)))
                ctx.log.emit("switchover-aborted", cluster=ctx.cluster, operation=op.id, reason=str(exc))
                raise
            op = op.advanced(Step.FENCE, ctx.clock(), detail)
            ctx.log.emit("fenced", cluster=ctx.cluster, operation=op.id, member=op.source, detail=detail)
        elif step is Step.PROMOTE:
            if op.running is not Step.PROMOTE:
                # "Promoting X" is recorded before X can become primary: a new leader then knows
                # it may be, and neither drops the operation nor promotes someone else blindly.
                op = op.starting(Step.PROMOTE)
                _save(ctx, op)
            try:
                op = _promote(ctx, op, snapshot)
            except DatabaseUnavailable as exc:
                raise TargetLost(str(exc)) from exc
        elif step is Step.REPOINT and op.step is Step.PROMOTE:  # resuming one persisted right after promotion
            others = tuple(n for n in ctx.members if n not in (op.target, op.source))
            op = op.advanced(Step.REPOINT, ctx.clock(), ", ".join(repoint_all(ctx, others, op.target)))
        elif step is Step.DONE:
            op = op.advanced(Step.DONE, ctx.clock()).ended(Outcome.DONE)
            _finish(ctx, op)
            ctx.log.emit("done", cluster=ctx.cluster, operation=op.id, kind=op.kind.value,
                         steps={s.step.value: s.at for s in op.steps})
    return op


def _promote(ctx: ClusterContext, op: Operation, snapshot: ClusterSnapshot) -> Operation:
    """Promote the target, re-point the other standbys at it, record it as the primary.

    The re-point comes right after the promotion, each member behind its own lease check:
    a leader that loses its lease after promoting re-points nothing and records nothing;
    the new leader resumes from the last recorded step (promoting a primary is a no-op).
    One state write for both steps keeps ZooKeeper's fsync off the path to the first commit.
    """
    # A switchover's FENCE already waited for the WAL.
    caught = _catch_up(ctx, op, snapshot) if op.kind is OperationKind.FAILOVER else ""
    slots = ctx.pool.submit(_ensure_peer_slots, ctx, op.target)
    extra = (d.fallback_from_first_commit(snapshot, ctx.policy, op.target, op.source)
             if op.kind is OperationKind.FAILOVER else ())
    if extra:
        _record_fallback(ctx, extra)
    names = ctx.policy.standby_names(op.target, extra)
    with ctx.term.guard(f"promote {op.target}"):
        if ctx.db.prepare_synchronous_names(op.target, names):
            ctx.log.emit("quorum-prepared", cluster=ctx.cluster, member=op.target, setting=names)
        promoting = time.monotonic()
        timeline = ctx.db.promote(op.target)
    ctx.log.emit("promote-timing", cluster=ctx.cluster, operation=op.id,
                 ms=round((time.monotonic() - promoting) * 1000, 1))
    if op.accept_data_loss and not ctx.policy.members[op.target].synchronous:
        ctx.db.drop_synchronous_names(op.target)
        ctx.log.emit("sync-off", member=op.target,
                     reason="promoted an asynchronous member with accepted data loss: no quorum to wait for")
    op = op.advanced(Step.PROMOTE, ctx.clock(), f"timeline {timeline}" + (f"; {caught}" if caught else ""))
    ctx.log.emit("promoted", cluster=ctx.cluster, operation=op.id, member=op.target, timeline=timeline)
    slots.result()  # the others attach through their slots on the target
    others = tuple(n for n in ctx.members if n not in (op.target, op.source))
    done = repoint_all(ctx, others, op.target)
    op = op.advanced(Step.REPOINT, ctx.clock(), ", ".join(done))
    state, version = ctx.store.get(ctx.cluster)
    ctx.store.write(state.model_copy(update={"primary": op.target, "generation": state.generation + 1,
                                             "timeline": timeline, "operation": op}), version)
    return op


def _record_fallback(ctx: ClusterContext, extra: tuple[str, ...]) -> None:
    """Record fallback members before the promoted target's quorum includes them (see
    :func:`decisions.fallback_from_first_commit`); any already recorded stay."""
    state, version = ctx.store.get(ctx.cluster)
    members = tuple(dict.fromkeys((*state.synchronous_extra, *extra)))
    if members != state.synchronous_extra:
        ctx.store.write(state.model_copy(update={"synchronous_extra": members}), version)
        ctx.log.emit("quorum-widened", cluster=ctx.cluster, members=list(members), reason="at promotion")


class PromotionHeld(DatabaseUnavailable):
    """The target's catch-up did not finish and promoting it could lose acknowledged commits."""


def _catch_up(ctx: ClusterContext, op: Operation, snapshot: ClusterSnapshot) -> str:
    """Let the target first take any WAL a more advanced survivor holds; returns what happened
    (for the promote step's detail), empty when no survivor was ahead.

    The snapshot that confirmed the failure is recent enough: with the primary gone, the
    survivors' received WAL no longer moves, so no second probe round on the fast path.
    Whether to promote when the catch-up does not finish is :func:`decisions.after_catch_up`.

    :raises PromotionHeld: not caught up, and promoting could lose acknowledged commits.
    """
    source = d.catch_up_source(snapshot, op.target, op.source)
    if source is None:
        return ""
    want = snapshot.members[source].wal_lsn or 0
    with ctx.term.guard(f"catch {op.target} up from {source}"):
        ctx.db.repoint(op.target, source)
    reached = 0
    started = time.monotonic()

    def caught_up() -> bool:
        nonlocal reached
        _still_leading(ctx, op)
        reached = ctx.db.probe_member(op.target).wal_lsn or 0
        return reached >= want

    poll_tight(caught_up, timeout=d.CATCH_UP_SECONDS, interval=0.005)
    state, _ = ctx.store.get(ctx.cluster)
    quorum = ctx.policy.quorum_members(state.synchronous_extra, primary=op.source)
    outcome = d.after_catch_up(target=op.target, source=source, wanted=want, reached=reached,
                               source_in_quorum=source in quorum, proven=op.proven,
                               accept_data_loss=op.accept_data_loss, waited=time.monotonic() - started)
    ctx.log.emit("caught-up" if reached >= want else "catch-up-timeout", cluster=ctx.cluster, member=op.target,
                 source=source, lsn=want, reached=reached, promote=outcome.promote, detail=outcome.detail)
    if not outcome.promote:
        raise PromotionHeld(outcome.detail)
    return outcome.detail


def _fence_source(ctx: ClusterContext, op: Operation, snapshot: ClusterSnapshot) -> str:
    if op.kind is OperationKind.SWITCHOVER:
        return _stop_for_switchover(ctx, op)
    status = snapshot.members.get(op.source)
    if status is None or not status.reachable:
        # Unreachable is not stopped: promote only once it is proven to acknowledge nothing.
        return await_stopped(ctx, op.source, snapshot, accept_data_loss=op.accept_data_loss)
    with ctx.term.guard(f"fence {op.source}"):
        return "stopped" if ctx.db.fence(op.source) else "unreachable"


def _stop_for_switchover(ctx: ClusterContext, op: Operation) -> str:
    """Stop the old primary's writes; promote-ready once the target holds all of its WAL.

    The other standbys are moved to stream from the target *before* the old primary stops:
    its shutdown checkpoint then reaches no standby but the target, so none is left ahead of
    the new timeline (such a standby cannot attach, and the new primary's first commits
    waited for a rewind: seconds). The old primary's fast shutdown is issued in the background
    while the target promotes. Zero loss does not depend on it: the old primary is read-only by
    default, has no client session left and no standby attached but the target, so a commit it
    could still acknowledge is one the target holds (and none once the target has promoted).

    :raises SwitchoverAborted: nothing was promoted and the old primary takes writes again.
    """
    slots = ctx.pool.submit(_ensure_peer_slots, ctx, op.target)  # joined before the promotion
    others = tuple(n for n in ctx.members if n not in (op.target, op.source))
    if not ctx.db.probe_member(op.source).reachable:
        # Resumed after the old primary went down: it acknowledges nothing any more, so
        # the target takes whatever a survivor received beyond its own WAL.
        _catch_up(ctx, op, ctx.db.probe())
        slots.result()
        return "already stopped; caught up with the survivors"
    marks = [("start", time.monotonic())]
    # Re-pointing overlaps stopping writes: a commit meanwhile confirmed by none of the old
    # primary's quorum only waits until its session is terminated (never acknowledged).
    repointing = ctx.pool.submit(repoint_all, ctx, others, op.target)
    try:
        with ctx.term.guard(f"stop writes on {op.source}"):
            last = ctx.db.stop_writes(op.source)
    except DatabaseUnavailable as exc:
        _resume_writes(ctx, op.source)
        raise SwitchoverAborted(f"switchover aborted before promoting anything: {exc}") from exc
    marks.append(("writes-stopped", time.monotonic()))

    def holds_all() -> bool:
        # Replayed counts too: a standby that just (re)started streaming reports as received only
        # its segment-aligned start until new WAL arrives, though it holds everything up to `last`.
        _still_leading(ctx, op)
        status = ctx.db.probe_member(op.target)
        if not status.reachable:
            # Writes stay stopped: the operation is reconsidered every round (the target may come
            # back) until the deadline rolls it back, or an operator aborts it (drctl abort).
            raise TargetLost(f"{op.target} became unreachable before it held {op.source}'s WAL up to {last} "
                             f"({status.error})")
        return max(status.wal_lsn or 0, status.replay_lsn or 0) >= last

    remaining = d.switchover_deadline(op) - ctx.clock()
    if not poll_tight(holds_all, timeout=max(remaining, 0.5), interval=0.002):
        # Nothing was promoted: the old primary takes writes again and the switchover ends.
        _resume_writes(ctx, op.source)
        raise SwitchoverAborted(f"switchover rolled back: {op.target} did not receive the old primary's "
                                f"WAL up to {last} by the switchover's deadline; "
                                f"{op.source} accepts writes again")
    marks.append(("target-has-wal", time.monotonic()))
    repointing.result()

    def detached() -> bool:
        _still_leading(ctx, op)
        return not set(ctx.db.attached_standbys(op.source)) & set(others)

    if not poll_tight(detached, timeout=2, interval=0.002):
        ctx.log.emit("switchover-detach-timeout", cluster=ctx.cluster, members=list(others))
    marks.append(("others-detached", time.monotonic()))
    with ctx.term.guard(f"stop {op.source}"):
        # Issued now, not waited for: the fast shutdown only makes reconnecting clients fail
        # fast there (20-55 ms under load when awaited on the clients' path).
        ctx.pool.submit(_stop_deposed, ctx, op.source)
    slots.result()
    marks.append(("slots-ready", time.monotonic()))
    ctx.log.emit("switchover-timing", cluster=ctx.cluster, operation=op.id,
                 ms={name: round((at - marks[0][1]) * 1000, 1) for name, at in marks[1:]})
    return f"writes stopped; {op.target} received WAL up to {last}"


def _stop_deposed(ctx: ClusterContext, member: str) -> None:
    """A switchover's old primary, writes already stopped: fast shutdown, in the background."""
    try:
        ctx.db.stop_server(member)
    except DatabaseUnavailable as exc:  # already down: its rejoin fences it anyway
        ctx.log.emit("stop-failed", cluster=ctx.cluster, member=member, error=str(exc))


def _still_leading(ctx: ClusterContext, op: Operation) -> None:
    """Inside a wait: stop at once when the term has ended (no ZooKeeper read per poll)."""
    if ctx.term.ended:
        raise LostLeadership(f"{op.kind} {op.id} stopped: {ctx.term.reason}")


def _resume_writes(ctx: ClusterContext, member: str) -> None:
    try:
        with ctx.term.guard(f"make {member} writable again"):
            ctx.db.resume_writes(member)
    except DatabaseUnavailable as exc:  # it went away: the stray-primary rule or a rejoin takes it from here
        ctx.log.emit("resume-writes-failed", member=member, error=str(exc))


def _ensure_peer_slots(ctx: ClusterContext, member: str) -> None:
    """Slots for every peer on ``member`` about to lead: a freshly re-cloned member has none,
    and a standby re-pointed at a primary without its slot cannot attach."""
    try:
        with ctx.term.guard(f"create peer slots on {member}"):
            created = ctx.db.ensure_peer_slots(member)
    except DatabaseUnavailable as exc:
        ctx.log.emit("slots-failed", cluster=ctx.cluster, member=member, error=str(exc))
        return
    if created:
        ctx.log.emit("slots-created", cluster=ctx.cluster, member=member, slots=created)


# ---- steering: persistence, reconsidering, roll-back, abort ------------------------------------


def _save(ctx: ClusterContext, op: Operation) -> None:
    state, version = ctx.store.get(ctx.cluster)
    ctx.store.write(state.model_copy(update={"operation": op}), version)


def _finish(ctx: ClusterContext, op: Operation) -> None:
    """Into the history with its outcome; no operation in progress any more."""
    state, version = ctx.store.get(ctx.cluster)
    ctx.store.write(d.finished(state, op, ctx.clock()), version)


def _reconsider(ctx: ClusterContext, op: Operation, snapshot: ClusterSnapshot) -> Operation:
    """Carry on, re-plan, roll back or hold, as :func:`orchestrator.decisions.plan_resume` says.

    :raises OperationHeld: hold: nothing to do this round.
    :raises SwitchoverAborted: rolled back (recorded in the history).
    """
    state, _ = ctx.store.get(ctx.cluster)
    plan = d.plan_resume(op, snapshot, ctx.policy, ctx.clock(), source_timeline=state.timeline,
                         extra_synchronous=state.synchronous_extra)
    if isinstance(plan, d.Proceed):
        return op
    if isinstance(plan, d.Hold):
        raise OperationHeld(plan.reason)
    if isinstance(plan, d.Replanned):
        old = op.target
        op = op.replanned(plan.target, ctx.clock(), plan.reason, proven=plan.proven, proof=plan.proof)
        _save(ctx, op)
        ctx.log.emit("replanned", cluster=ctx.cluster, operation=op.id, old_target=old, new_target=op.target,
                     proven=plan.proven, reason=plan.reason)
        return op
    detail = f"{plan.reason}; {_roll_back(ctx, op)}"
    _finish(ctx, op.ended(Outcome.ROLLED_BACK, detail))
    ctx.log.emit("switchover-rolled-back", cluster=ctx.cluster, operation=op.id, source=op.source,
                 target=op.target, reason=detail)
    raise SwitchoverAborted(detail)


def _roll_back(ctx: ClusterContext, op: Operation) -> str:
    """A switchover's old primary takes writes again: restarted as primary if it was stopped.

    Only ever before the target could acknowledge anything (see ``plan_resume`` and
    ``plan_abort``). A fenced switchover's old primary was told to shut down (in the
    background): that shutdown is waited for before it is started again.

    :raises DatabaseUnavailable: it could not be restarted or made writable (retried next round).
    :raises LostLeadership: the lease was lost before a step.
    """
    restarted = False
    if op.step is Step.FENCE and not poll(lambda: not ctx.db.probe_member(op.source).reachable,
                                          timeout=10, interval=0.05):
        ctx.log.emit("rollback-source-still-up", cluster=ctx.cluster, member=op.source)
    if not ctx.db.probe_member(op.source).reachable:
        with ctx.term.guard(f"restart {op.source} as primary"):
            ctx.db.start_server(op.source)
        restarted = True
    with ctx.term.guard(f"make {op.source} writable again"):
        ctx.db.resume_writes(op.source)
    return f"{op.source} {'restarted as primary and ' if restarted else ''}writable again"


def abort(ctx: ClusterContext, snapshot: ClusterSnapshot, *, by: str, why: str) -> dict[str, object]:
    """End the recorded operation at an operator's request, if it is safe (``drctl abort``).

    Before promotion a switchover rolls back (its old primary writable again) and a failover is
    dropped; both go into the history as aborted, with who and why. A dropped failover starts
    the anti-flap period like a finished one, so the automatic rule does not start it again at
    once: the operator decides (``drctl failover --to``). Refused once the target is (or is
    becoming) primary. Returns the request's answer.

    :raises DatabaseUnavailable: the roll-back could not make the old primary writable.
    :raises LostLeadership: the lease was lost before a step.
    """
    state, _ = ctx.store.get(ctx.cluster)
    op = state.operation
    plan = d.plan_abort(op, snapshot, ctx.cluster, by=by, why=why)
    if isinstance(plan, d.Refusal) or op is None:
        return {"ok": False, "error": plan.reason if isinstance(plan, d.Refusal) else "nothing to abort"}
    detail = f"{plan.reason}; {_roll_back(ctx, op)}" if plan.roll_back else plan.reason
    _finish(ctx, op.ended(Outcome.ABORTED, detail))
    ctx.log.emit("aborted", cluster=ctx.cluster, operation=op.id, kind=op.kind.value, source=op.source,
                 target=op.target, by=by, why=why, detail=detail)
    return {"ok": True, "operation": op.id, "outcome": Outcome.ABORTED.value, "primary": state.primary,
            "detail": detail}
