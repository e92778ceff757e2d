"""Operator requests (``drctl switchover`` / ``failover`` / ``abort``): validate, run, answer.

The cycle calls :meth:`Requests.serve` once per round with its fresh snapshot (an
operator request also wakes the leader through a ZooKeeper watch). A request is claimed
(taken off the queue, the one atomic step shared with the operator's withdrawal) before
anything runs, and an expired one is answered, never run. A request runs as an
operation (:mod:`orchestrator.control.operations`) under the same lease checks as an
automatic failover; a deposed leader neither runs nor answers one (the new leader will).
``abort`` ends the operation in progress, when that is safe (``operations.abort``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from orchestrator import decisions as d
from orchestrator.control import operations
from orchestrator.control.context import ClusterContext
from orchestrator.control.ports import Coordination
from orchestrator.control.rejoin import Rejoins
from orchestrator.errors import LostLeadership, OrchestratorError
from orchestrator.state import ClusterSnapshot, Operation, OperationKind


class Requests:
    def __init__(self, coord: Coordination, rejoins: Rejoins,
                 start_drill: Callable[[str], dict[str, Any]] | None = None) -> None:
        self._coord = coord
        self._rejoins = rejoins
        self._start_drill = start_drill   # a ``drill`` request (the REST API): start it as a child process

    def serve(self, ctx: ClusterContext, snapshot: ClusterSnapshot) -> bool:
        """Answer pending requests; True when one ran an operation (the snapshot is stale then).

        :raises LostLeadership: the lease was lost. A request not yet claimed stays queued for the
            next leader; a claimed one goes unanswered, and its operation, if it started, is
            recorded for the next leader to finish.
        """
        ran = False
        for request_id, request in self._coord.pending_requests(ctx.cluster):
            with ctx.term.guard(f"claim request {request_id}"):
                claimed = self._coord.claim_request(ctx.cluster, request_id)
            if not claimed:
                continue  # its operator withdrew it (gave up waiting): it must never run
            expires_at = request.get("expires_at")
            version = ctx.store.get(ctx.cluster)[1]
            try:
                if isinstance(expires_at, int | float) and ctx.clock() > expires_at:
                    result = {"ok": False, "error": f"the request expired {ctx.clock() - expires_at:.0f}s ago "
                                                    "(its operator stopped waiting); submit it again"}
                else:
                    result = self._serve(ctx, request, snapshot)
            except LostLeadership:
                raise
            except OrchestratorError as exc:
                result = {"ok": False, "error": str(exc)}
            # A request that recorded anything (an operation held or rolled back too) leaves this
            # round's snapshot stale: deciding on it would resume that operation from before it ran.
            ran |= "operation" in result or ctx.store.get(ctx.cluster)[1] != version
            with ctx.term.guard(f"answer request {request_id}"):
                self._coord.answer_request(ctx.cluster, request_id, result)
            ctx.log.emit("request", cluster=ctx.cluster, id=request_id, request=request, result=result)
            if ran:
                break  # later requests wait for the next cycle's snapshot
        return ran

    def _serve(self, ctx: ClusterContext, request: dict[str, Any], snapshot: ClusterSnapshot) -> dict[str, Any]:
        state, _ = ctx.store.get(ctx.cluster)
        policy = ctx.policy
        kind, target = request.get("kind"), request.get("to")
        if kind == "abort":  # the one request served while an operation is in progress
            return operations.abort(ctx, snapshot, by=str(request.get("by") or "an operator"),
                                    why=str(request.get("reason") or ""))
        if state.operation is not None:
            return {"ok": False, "error": f"{state.operation.kind} {state.operation.id} is in progress; retry later "
                                          f"(or end it: drctl abort {ctx.cluster})"}
        if kind == "drill":
            if self._start_drill is None:
                return {"ok": False, "error": "the leader has no drills directory; start the controllers from the "
                                              "repository"}
            return self._start_drill(str(request.get("drill")))
        if target == state.primary:
            return {"ok": False, "error": f"{target} is already the primary"}
        accept = bool(request.get("accept_data_loss"))
        if kind == "switchover":
            choice = d.plan_switchover(snapshot, policy, state.primary, str(target))
            op_kind = OperationKind.SWITCHOVER
        else:
            choice = d.choose_candidate(snapshot, policy, state.primary, target=target, allow_async=accept,
                                        extra_synchronous=state.synchronous_extra,
                                        agents=ctx.agents.views(ctx.cluster))
            op_kind = OperationKind.FAILOVER
        if isinstance(choice, d.Refusal):
            return {"ok": False, "error": choice.reason}
        if kind == "failover":
            if not choice.proven and not accept:
                return {"ok": False, "error": f"zero loss is not proven for {choice.name} ({choice.proof}); "
                                              "pass --accept-data-loss to promote it anyway"}
            stopped = _stop_evidence(ctx, state.primary, snapshot)
            if stopped is not None and stopped.proof is d.StopProof.UNPROVABLE and not accept:
                # Refused before anything is recorded: its FENCE step could never complete.
                return {"ok": False, "error": f"{stopped.reason}; make sure it is down, then pass "
                                              "--accept-data-loss to promote anyway"}
        elif kind != "switchover":
            return {"ok": False, "error": f"unknown request kind {kind!r}"}
        at_risk = None if choice.proven else d.wal_at_risk(state, snapshot, state.primary, choice.wal_lsn)
        op = Operation(id=uuid.uuid4().hex[:12], kind=op_kind, source=state.primary, target=choice.name,
                       reason=f"operator {kind} to {choice.name}", started_at=ctx.clock(),
                       accept_data_loss=accept, epoch=ctx.term.epoch, proven=choice.proven, proof=choice.proof,
                       wal_at_risk_bytes=at_risk)
        started = time.monotonic()
        done = operations.run(ctx, op, snapshot)
        if op_kind is OperationKind.SWITCHOVER:
            self._rejoins.start(ctx, op.source)
        return {"ok": True, "operation": done.id, "primary": done.target,
                "seconds": round(time.monotonic() - started, 3),
                "steps": {s.step.value: s.at for s in done.steps},
                "proven": done.proven, "proof": done.proof, "wal_at_risk_bytes": done.wal_at_risk_bytes}


def _stop_evidence(ctx: ClusterContext, primary: str, snapshot: ClusterSnapshot) -> d.StopEvidence | None:
    """For an unreachable primary, what proves it stopped (None: it answers; the FENCE step stops it)."""
    status = snapshot.members.get(primary)
    if status is not None and status.reachable:
        return None
    agents = ctx.agents.views(ctx.cluster) if status is None or not status.refused else {}
    return d.stop_evidence(primary, status, agents.get(primary))
