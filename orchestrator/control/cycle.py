"""One cluster's round: probe -> snapshot -> decide -> dispatch -> publish.

:meth:`ClusterCycle.run_once` is the whole path of a leader's round for one cluster: the
members are probed into a frozen snapshot, folded into the detection memory, operator
requests are served, :func:`orchestrator.decisions.decide` returns one decision, and
:func:`dispatch` hands it to the executor of its kind. Each decision is logged once when
its reason changes. Built per term by the controller (or by a test, from fakes).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from orchestrator import decisions as d
from orchestrator.control import executors, operations
from orchestrator.control.context import ClusterContext
from orchestrator.control.publisher import Publisher
from orchestrator.control.rejoin import Rejoins
from orchestrator.control.requests import Requests
from orchestrator.control.store import NoState
from orchestrator.coordination import StateConflict
from orchestrator.errors import DatabaseUnavailable
from orchestrator.state import (
    BreakGlassRecord,
    ClusterSnapshot,
    ClusterState,
    DrMemberLag,
    Operation,
    OperationKind,
    Role,
)

# Numbers in a reason (seconds, bytes, LSNs): two reasons equal but for them say the same thing.
_FIGURES = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?")


def dispatch(ctx: ClusterContext, decision: d.Decision, snapshot: ClusterSnapshot, memory: d.Memory,
             rejoins: Rejoins) -> None:
    """Execute ``decision``; Idle, Wait and Blocked do nothing.

    :raises LostLeadership: the lease was lost (or in doubt) before a side effect.
    """
    if isinstance(decision, d.Failover):
        op = Operation(id=uuid.uuid4().hex[:12], kind=OperationKind.FAILOVER, source=decision.source,
                       target=decision.target, reason=decision.reason, started_at=ctx.clock(),
                       epoch=ctx.term.epoch, first_failure_at=memory.first_failure_at.get(decision.source),
                       proven=decision.proven, proof=decision.proof, accept_data_loss=decision.accept_data_loss,
                       lost_region=decision.lost_region, data_loss_window_s=decision.data_loss_window_s)
        if decision.lost_region:
            state, _ = ctx.store.get(ctx.cluster)
            target = snapshot.members.get(decision.target)
            op = op.model_copy(update={"wal_at_risk_bytes": d.wal_at_risk(
                state, snapshot, decision.source, target.wal_lsn or 0) if target is not None else None})
            ctx.log.emit("dr-failover", cluster=ctx.cluster, operation=op.id, region=decision.lost_region,
                         source=decision.source, target=decision.target,
                         data_loss_window_s=decision.data_loss_window_s, wal_at_risk_bytes=op.wal_at_risk_bytes,
                         reason=decision.reason)
        operations.run(ctx, op, snapshot)
    elif isinstance(decision, d.Resume):
        operations.run(ctx, decision.operation, snapshot)
    elif isinstance(decision, d.FenceStray):
        executors.fence_stray(ctx, decision)
    elif isinstance(decision, d.Repoint):
        executors.repoint(ctx, decision)
    elif isinstance(decision, d.Rejoin):
        rejoins.start(ctx, decision.member)
    elif isinstance(decision, d.WidenQuorum):
        executors.widen_quorum(ctx, decision)
    elif isinstance(decision, d.NarrowQuorum):
        executors.narrow_quorum(ctx, decision)
    elif isinstance(decision, d.HoldCommits):
        executors.hold_commits(ctx, decision)
    elif isinstance(decision, d.ReleaseCommits):
        executors.release_commits(ctx, decision)
    elif isinstance(decision, d.AdoptBreakGlass):
        executors.adopt_break_glass(ctx, decision)


class ClusterCycle:
    def __init__(self, ctx: ClusterContext, rejoins: Rejoins, requests: Requests, publisher: Publisher,
                 break_glass: Callable[[str], BreakGlassRecord | None] | None = None) -> None:
        self.ctx = ctx
        # Reads a break-glass promotion's record (drctl dr promote), if any: adopted first.
        self._break_glass = break_glass
        self._rejoins = rejoins
        self._requests = requests
        self._publisher = publisher
        self.memory = d.Memory()
        self.last_kind = ""
        self._last_reason: dict[str, str] = {}
        # The DR lag bound (replication.dr_lag): the primary's WAL history and the last readings.
        self._wal = d.WalHistory()
        self._dr: dict[str, DrMemberLag] = {}

    def run_once(self) -> bool:
        """One probe-decide-act round; True when the next round should come sooner.

        :raises LostLeadership: the lease was lost (or in doubt) before a side effect.
        :raises CoordinationUnavailable: ZooKeeper could not be read or written.
        """
        ctx = self.ctx
        snapshot = ctx.db.probe()
        now = ctx.clock()
        self.memory = d.remember(self.memory, snapshot, now)
        try:
            ctx.store.load(ctx.cluster, snapshot)
        except NoState as exc:
            self._note("no-state", str(exc))
            return False
        # A break-glass promotion not yet adopted goes first: no operator request runs before it.
        record = self._break_glass(ctx.cluster) if self._break_glass is not None else None
        if record is not None and d.adoption(ctx.store.get(ctx.cluster)[0], record) is None:
            record = None  # adopted already
        if record is None and self._requests.serve(ctx, snapshot):
            return True  # an operation moved the primary: decide on a fresh probe, not this snapshot
        state, _ = ctx.store.get(ctx.cluster)
        primary = snapshot.members.get(state.primary)
        # The agents are read only while the primary does not answer (never on the healthy path):
        # what may prove it stopped when its host does not refuse, and whose agent lapsed (a
        # candidate its own agent would fence at once is never promoted), and a region loss is
        # confirmed only by every agent there having lost its session (dr_failover automatic).
        down = primary is not None and not primary.reachable
        agents = ctx.agents.views(ctx.cluster) if down else None
        dr = self._measure_dr(snapshot, state, now)
        decision = d.decide(snapshot, state, ctx.policy, self.memory, now,
                            rejoining=self._rejoins.rejoining(ctx.cluster), agents=agents, dr=dr,
                            break_glass=record)
        self.last_kind = type(decision).__name__.lower()
        self._note("decision", decision.reason, kind=self.last_kind)
        try:
            dispatch(ctx, decision, snapshot, self.memory, self._rejoins)
        except StateConflict as exc:
            ctx.log.emit("state-conflict", cluster=ctx.cluster, error=str(exc))
            ctx.store.forget(ctx.cluster)
        except operations.OperationHeld as exc:
            self._note("operation-held", str(exc))  # once per reason, not every round
        except DatabaseUnavailable as exc:
            ctx.log.emit("action-failed", cluster=ctx.cluster, error=str(exc))
        if dr and ctx.store.cached(ctx.cluster) is not None:
            self._alert(dr, now)
        if ctx.store.cached(ctx.cluster) is not None:
            self._publisher.publish(ctx, snapshot, dr)
        return isinstance(decision, d.Wait)

    def _measure_dr(self, snapshot: ClusterSnapshot, state: ClusterState, now: float) -> dict[str, DrMemberLag]:
        """This round's DR standby lags (decisions.lag); empty without a bound or a primary answering."""
        if self.ctx.policy.dr_bound is None:
            return {}
        primary = snapshot.members.get(state.primary)
        lsn = primary.wal_lsn if primary is not None and primary.reachable and primary.role is Role.PRIMARY \
            else None
        self._wal = d.observe(self._wal, state.primary, lsn, now)
        last = self._dr or (state.dr_lag.members if state.dr_lag is not None else {})
        readings = d.measure(self._wal, snapshot, self.ctx.policy, state.primary, now, last)
        if readings:
            self._dr = readings
        return readings

    def _alert(self, dr: dict[str, DrMemberLag], now: float) -> None:
        """One event when the DR lag goes over its bound, one when it is back under (recorded first, so a
        new leader does not repeat it)."""
        ctx = self.ctx
        state, version = ctx.store.get(ctx.cluster)
        over = d.alert_change(state.dr_lag, dr, ctx.policy, now)
        if over is None:
            return
        record = d.with_readings(d.record_of(state, ctx.policy), dr, now).model_copy(
            update={"over": over, "over_changed_at": now})
        try:
            ctx.store.write(state.model_copy(update={"dr_lag": record}), version)
        except StateConflict:
            ctx.store.forget(ctx.cluster)
            return
        lags = {name: {"receive_lag_s": r.receive_lag_s, "replay_lag_s": r.replay_lag_s, "attached": r.attached}
                for name, r in dr.items()}
        ctx.log.emit("dr-lag-over" if over else "dr-lag-recovered", cluster=ctx.cluster,
                     lag_seconds=record.lag_seconds, max_seconds=record.max_seconds, mode=record.mode,
                     holding=record.held_by(state.primary), members=lags)

    def _note(self, event: str, reason: str, **fields: object) -> None:
        """Log ``reason`` when it says something new: a reason that differs only in its figures (a
        blocked failover counting seconds every cycle) is logged once, not every 100 ms."""
        shape = f"{fields.get('kind', '')}|{_FIGURES.sub('#', reason)}"
        if shape != self._last_reason.get(event):   # per event: a held operation alternates two of them
            self._last_reason[event] = shape
            self.ctx.log.emit(event, cluster=self.ctx.cluster, reason=reason, **fields)
