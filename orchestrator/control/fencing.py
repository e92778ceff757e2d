"""Fence before promote: a failover's FENCE step for a primary the leader cannot reach.

Nothing is promoted while the old primary may still acknowledge commits. :func:`await_stopped`
returns once :func:`orchestrator.decisions.stop_evidence` proves it stopped: its host refuses
connections, its agent reports the postmaster gone, its agent's last lease write is older than
its fencing bound on ZooKeeper's clock, or its agent's session expired (the agent fenced within
its bound before the server could expire it). Until then it tells a live agent,
once and under the current epoch, to fence, and keeps looking; a primary that answers again is
stopped directly. The lease is confirmed before every side effect and the wait ends with the term.
"""

from __future__ import annotations

import time

from orchestrator import decisions as d
from orchestrator.control.context import ClusterContext
from orchestrator.errors import DatabaseUnavailable, LostLeadership
from orchestrator.state import ClusterSnapshot, MemberStatus
from orchestrator.waiting import poll

# Beyond the agent's session timeout: the server notices an expiry on its next tick, and the
# leader's own reads take a moment on a loaded host.
EXPIRY_MARGIN_S = 2.0


def await_stopped(ctx: ClusterContext, member: str, snapshot: ClusterSnapshot, *, accept_data_loss: bool) -> str:
    """Return why ``member`` acknowledges nothing any more, once that is proven.

    :raises DatabaseUnavailable: it cannot be proven (no agent, no refusal) and the operator did
        not accept the risk, or no proof came within the agent's session timeout plus a margin.
    :raises LostLeadership: the term ended meanwhile.
    """
    started = time.monotonic()
    status: MemberStatus | None = snapshot.members.get(member)
    views = ctx.agents.views(ctx.cluster) if status is None or not status.refused else {}
    evidence = d.stop_evidence(member, status, views.get(member))
    if evidence.proven:
        return evidence.reason
    if evidence.proof is d.StopProof.UNPROVABLE and not (status is not None and status.reachable):
        if accept_data_loss:
            return f"{evidence.reason}; promoting anyway: the operator accepted the risk"
        raise DatabaseUnavailable(evidence.reason)
    view = views.get(member)
    limit = (view.session_timeout_s if view is not None else 0.0) + EXPIRY_MARGIN_S
    instructed = False

    def stopped() -> bool:
        nonlocal evidence, instructed, status
        if ctx.term.ended:
            raise LostLeadership(f"waiting for {member} to stop: {ctx.term.reason}")
        status = ctx.db.probe_member(member)
        if status.reachable:
            with ctx.term.guard(f"fence {member}, which answers again"):
                ctx.db.fence(member)
            return False
        agent = ctx.agents.views(ctx.cluster, ages=True).get(member)
        evidence = d.stop_evidence(member, status, agent)
        if evidence.proven:
            return True
        if agent is not None and agent.live and not instructed:
            with ctx.term.guard(f"instruct {member}'s agent to fence it"):
                ident = ctx.agents.instruct_fence(ctx.term.lease, ctx.cluster, member)
            instructed = True
            ctx.log.emit("fence-instructed", cluster=ctx.cluster, member=member, instruction=ident)
        return False

    if poll(stopped, timeout=limit, interval=0.05):
        return f"{evidence.reason} (proven {time.monotonic() - started:.2f}s after the fence step began)"
    raise DatabaseUnavailable(f"{member} not proven stopped within {limit:.1f}s: {evidence.reason}")
