"""One small function per decision kind: fence a stray primary, re-point, change the quorum.

Called by the cycle with the decision :func:`orchestrator.decisions.decide` returned. Each
confirms the lease with a ZooKeeper read (``term.guard``) right before it touches a
member, so a leader that slept through losing its lease wakes up and changes nothing.
Failovers and resumed operations go to :mod:`orchestrator.control.operations`, rejoins to
:mod:`orchestrator.control.rejoin`.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from orchestrator import decisions as d
from orchestrator.control.context import ClusterContext
from orchestrator.errors import DatabaseUnavailable


def repoint_all(ctx: ClusterContext, members: Iterable[str], upstream: str) -> list[str]:
    """Point each standby of ``members`` at ``upstream``, in parallel; returns those re-pointed.

    :raises LostLeadership: the lease could not be confirmed before one of them.
    """
    names = tuple(members)

    def one(name: str) -> str | None:
        with ctx.term.guard(f"re-point {name} to {upstream}"):
            try:
                ctx.db.repoint(name, upstream)
            except DatabaseUnavailable as exc:
                ctx.log.emit("repoint-failed", cluster=ctx.cluster, member=name, error=str(exc))
                return None
        return name

    if not names:
        return []
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="repoint") as pool:
        done = [name for name in pool.map(one, names) if name is not None]
    if done:
        ctx.log.emit("repointed", cluster=ctx.cluster, members=done, upstream=upstream)
    return done


def fence_stray(ctx: ClusterContext, decision: d.FenceStray) -> None:
    """Stop a member that accepts writes but is not the recorded primary.

    The decision came from this leader's cached state: right before stopping anything, the
    lease is confirmed by reading the epoch from ZooKeeper. A deposed leader's cache may
    name the *old* primary, and the "stray" it sees is the new one.
    """
    with ctx.term.guard(f"fence stray primary {decision.member}"):
        stopped = ctx.db.fence(decision.member)
    ctx.log.emit("fenced-stray", cluster=ctx.cluster, member=decision.member, stopped=stopped)


def repoint(ctx: ClusterContext, decision: d.Repoint) -> None:
    state, _ = ctx.store.get(ctx.cluster)
    repoint_all(ctx, decision.members, state.primary)


def widen_quorum(ctx: ClusterContext, decision: d.WidenQuorum) -> None:
    """Record the fallbacks first, then add them: a failover never misses a member that may
    hold an acknowledged commit."""
    state, version = ctx.store.get(ctx.cluster)
    ctx.store.write(state.model_copy(update={"synchronous_extra": decision.members}), version)
    names = ctx.policy.standby_names(state.primary, decision.members)
    with ctx.term.guard(f"widen the quorum of {state.primary}"):
        ctx.db.set_synchronous_names(state.primary, names)
    ctx.log.emit("quorum-widened", cluster=ctx.cluster, members=list(decision.members), setting=names)


def narrow_quorum(ctx: ClusterContext, decision: d.NarrowQuorum) -> None:
    """Drop the fallbacks, and forget them only once an in-region standby holds all WAL."""
    state, version = ctx.store.get(ctx.cluster)
    hold = state.dr_lag.held_by(state.primary) if state.dr_lag is not None else None
    with ctx.term.guard(f"narrow the quorum of {state.primary}"):
        lsn = ctx.db.set_synchronous_names(state.primary, ctx.policy.standby_names(state.primary, hold=hold))
    in_region = [n for n in ctx.policy.quorum_for(state.primary)[0] if n != state.primary]
    if not ctx.db.wait_flushed(state.primary, in_region, lsn, timeout=3.0):
        ctx.log.emit("quorum-narrow-pending", cluster=ctx.cluster, reason="in-region standbys not caught up")
        return
    ctx.store.write(state.model_copy(update={"synchronous_extra": ()}), version)
    ctx.log.emit("quorum-narrowed", cluster=ctx.cluster, dropped=list(state.synchronous_extra))


def hold_commits(ctx: ClusterContext, decision: d.HoldCommits) -> None:
    """Bounded DR lag: record the held DR standby first, then add it to the primary's synchronous set."""
    state, version = ctx.store.get(ctx.cluster)
    record = d.record_of(state, ctx.policy)
    if record.held_by(state.primary) != decision.member:  # a hold applied again keeps its start
        record = record.model_copy(
            update={"holding": decision.member, "holding_primary": state.primary, "holding_since": ctx.clock()})
        ctx.store.write(state.model_copy(update={"dr_lag": record}), version)
    names = ctx.policy.standby_names(state.primary, state.synchronous_extra, hold=decision.member)
    with ctx.term.guard(f"hold the commits of {state.primary} for {decision.member}"):
        ctx.db.set_synchronous_names(state.primary, names)
    ctx.log.emit("dr-hold", cluster=ctx.cluster, member=decision.member, setting=names, reason=decision.reason)


def release_commits(ctx: ClusterContext, decision: d.ReleaseCommits) -> None:
    """Take the held DR standby out of the primary's synchronous set, then forget it."""
    state, version = ctx.store.get(ctx.cluster)
    names = ctx.policy.standby_names(state.primary, state.synchronous_extra)
    with ctx.term.guard(f"release the commits of {state.primary} from {decision.member}"):
        ctx.db.set_synchronous_names(state.primary, names)
    record = d.record_of(state, ctx.policy).model_copy(
        update={"holding": None, "holding_primary": "", "holding_since": None})
    ctx.store.write(state.model_copy(update={"dr_lag": record}), version)
    ctx.log.emit("dr-release", cluster=ctx.cluster, member=decision.member, setting=names, reason=decision.reason)


def adopt_break_glass(ctx: ClusterContext, decision: d.AdoptBreakGlass) -> None:
    """Record the break-glass primary as the primary (one epoch-checked write); the returning side's
    old primary is then a stray the next round fences, and a rejoin makes it a standby."""
    state, version = ctx.store.get(ctx.cluster)
    ctx.store.write(d.adopted(state, decision.record, ctx.clock()), version)
    ctx.log.emit("break-glass-adopted", cluster=ctx.cluster, record=decision.record.id,
                 primary=decision.record.target, previous=state.primary, reason=decision.reason)
