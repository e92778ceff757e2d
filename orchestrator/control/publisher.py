"""Member health and WAL positions in the cluster state, for ``drctl status`` (an unreachable
member keeps its last known position).

At most once a second per cluster, the cycle hands its snapshot here; it is written with
the state (an epoch-checked write like any other).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from orchestrator import decisions as d
from orchestrator.control.context import ClusterContext
from orchestrator.coordination import StateConflict
from orchestrator.state import ClusterSnapshot, DrMemberLag, MemberRecord


class Publisher:
    def __init__(self, every: float = 1.0) -> None:
        self._every = every
        self._last: dict[str, float] = {}

    def publish(self, ctx: ClusterContext, snapshot: ClusterSnapshot,
                dr: Mapping[str, DrMemberLag] | None = None) -> None:
        """``dr``: the DR standbys' lags measured this round (kept as they were when empty)."""
        now = time.monotonic()
        if now - self._last.get(ctx.cluster, 0.0) < self._every:
            return
        self._last[ctx.cluster] = now
        state, version = ctx.store.get(ctx.cluster)
        primary_lsn = snapshot.members[state.primary].wal_lsn if state.primary in snapshot.members else None
        # An unreachable member keeps its last known WAL position: what an unproven promotion
        # puts at risk is measured from the old primary's (decisions.wal_at_risk).
        last = {name: rec.wal_lsn for name, rec in state.members.items()}
        members = {
            name: MemberRecord(health=s.health, role=s.role, timeline=s.timeline,
                               wal_lsn=s.wal_lsn if s.reachable else last.get(name),
                               streaming=s.streaming,
                               lag_bytes=(primary_lsn - s.wal_lsn) if primary_lsn and s.wal_lsn else None)
            for name, s in snapshot.members.items()
        }
        update: dict[str, object] = {"members": members}
        # Nothing measured (the primary did not answer) keeps the last readings; a primary without DR
        # standbys (in the DR region after a switchover) has none.
        if dr is not None and (dr or (state.primary in snapshot.members and snapshot.members[state.primary].reachable
                                      and ctx.policy.dr_bound is not None
                                      and not ctx.policy.dr_members(state.primary))):
            update["dr_lag"] = d.with_readings(d.record_of(state, ctx.policy), dr, ctx.clock())
        try:
            ctx.store.write(state.model_copy(update=update), version)
        except StateConflict:
            ctx.store.forget(ctx.cluster)
