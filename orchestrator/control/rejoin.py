"""Rejoin jobs: bring a failed or diverged member back as a standby, off the fast path.

A job (reserve its slot on the primary, checkpoint, run the rejoin playbook, create its
peers' slots) runs in a thread owned by the leadership term: each step confirms the lease
first, the playbook run is cancelled as soon as the term ends, and the term's owner waits
for the thread. So a deposed leader's rejoin neither goes on nor overlaps the new
leader's rejoin of the same member. Started by the cycle (``Rejoin`` decisions) and by a
finished switchover.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from orchestrator.control.context import ClusterContext
from orchestrator.errors import LostLeadership, OrchestratorError


class RejoinRunner(Protocol):
    def __call__(self, cluster: str, member: str, upstream: str, cancelled: Callable[[], bool]) -> None:
        """Rewind/re-clone ``member`` and start it streaming from ``upstream``; blocks.

        Stops early (raising) once ``cancelled()`` is true.

        :raises OrchestratorError: the rejoin failed or was cancelled.
        """
        ...


class Rejoins:
    """The rejoin jobs of one term: at most one per member at a time."""

    def __init__(self, runner: RejoinRunner | None) -> None:
        self._runner = runner
        self._lock = threading.Lock()
        self._running: set[tuple[str, str]] = set()

    def rejoining(self, cluster: str | None = None) -> frozenset[str]:
        with self._lock:
            return frozenset(m for c, m in self._running if cluster is None or c == cluster)

    def start(self, ctx: ClusterContext, member: str) -> bool:
        """Start rejoining ``member`` to the recorded primary; False if one runs already (or
        no runner is configured).

        :raises LostLeadership: the term has ended.
        """
        key = (ctx.cluster, member)
        with self._lock:
            if key in self._running or self._runner is None:
                return False
            self._running.add(key)
        state, _ = ctx.store.get(ctx.cluster)
        try:
            ctx.term.spawn(f"rejoin-{member}", lambda: self._job(ctx, member, state.primary))
        except LostLeadership:
            with self._lock:
                self._running.discard(key)
            raise
        return True

    def _job(self, ctx: ClusterContext, member: str, primary: str) -> None:
        assert self._runner is not None
        started = time.monotonic()
        ctx.log.emit("rejoin-start", cluster=ctx.cluster, member=member, upstream=primary)
        try:
            with ctx.term.guard(f"reserve {member}'s slot on {primary}"):
                ctx.db.reserve_slot(primary, member)
            with ctx.term.guard(f"checkpoint {primary}"):
                ctx.db.checkpoint(primary)  # pg_rewind reads the new timeline from it
            with ctx.term.guard(f"rejoin {member}"):
                self._runner(ctx.cluster, member, primary, lambda: ctx.term.ended)
            with ctx.term.guard(f"create peer slots on {member}"):
                ctx.db.ensure_peer_slots(member)
            ctx.log.emit("rejoined", cluster=ctx.cluster, member=member, upstream=primary,
                         seconds=round(time.monotonic() - started, 3))
        except LostLeadership as exc:
            ctx.log.emit("rejoin-cancelled", cluster=ctx.cluster, member=member, reason=str(exc))
        except OrchestratorError as exc:
            if ctx.term.ended:
                ctx.log.emit("rejoin-cancelled", cluster=ctx.cluster, member=member, reason=ctx.term.reason)
            else:
                ctx.log.emit("rejoin-failed", cluster=ctx.cluster, member=member, error=str(exc))
        finally:
            with self._lock:
                self._running.discard((ctx.cluster, member))
