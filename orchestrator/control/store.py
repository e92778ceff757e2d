"""The leader's copy of each cluster's state, and the only way it writes one.

Every write goes through :meth:`StateStore.write`: stamped with this controller and its
epoch, and committed by ZooKeeper only together with a check of the epoch znode's
version (see :meth:`Coordinator.write_state`), so the receiver refuses a stale leader's
write however late it arrives. The cache is exact while the term lasts: only the leader
writes states. Used by the cycle, the operations, the executors and the requests.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.control.ports import Coordination
from orchestrator.control.term import Emitter, Term
from orchestrator.errors import TemporaryError
from orchestrator.state import ClusterSnapshot, ClusterState


class NoState(TemporaryError):
    """The cluster has no recorded state yet and the probes do not show who the primary is."""


class StateStore:
    def __init__(self, coord: Coordination, term: Term, identity: str, *, clock: Callable[[], float],
                 log: Emitter) -> None:
        self._coord = coord
        self._term = term
        self._identity = identity
        self._clock = clock
        self._log = log
        self._states: dict[str, tuple[ClusterState, int]] = {}

    def get(self, cluster: str) -> tuple[ClusterState, int]:
        """The state as last read or written. :raises KeyError: not loaded (see :meth:`load`)."""
        return self._states[cluster]

    def cached(self, cluster: str) -> ClusterState | None:
        entry = self._states.get(cluster)
        return entry[0] if entry is not None else None

    def forget(self, cluster: str) -> None:
        """Re-read at the next :meth:`load` (after a lost race on the state's version)."""
        self._states.pop(cluster, None)

    def load(self, cluster: str, snapshot: ClusterSnapshot) -> tuple[ClusterState, int]:
        """The state, read once per term; created from the probes when there is none; the
        operator's pause flag folded in.

        :raises NoState: no state yet and not exactly one writable member to record as primary.
        :raises LostLeadership, StateConflict, CoordinationUnavailable: from a write.
        """
        if cluster not in self._states:
            state, version = self._coord.read_state(cluster)
            if state is None:
                primaries = snapshot.primaries()
                if len(primaries) != 1:
                    # Never guess a primary: a wrong guess would fence the real one.
                    raise NoState(f"{cluster}: no recorded state and {len(primaries)} writable members "
                                  f"({', '.join(primaries) or 'none'}); waiting for exactly one")
                primary = primaries[0]
                state = ClusterState(cluster=cluster, primary=primary, timeline=snapshot.members[primary].timeline)
                version = self.write(state, -1)
                self._log.emit("state-created", cluster=cluster, primary=primary)
            self._states[cluster] = (state, version)
        state, version = self._states[cluster]
        paused = self._coord.is_paused(cluster)
        if paused != state.paused:
            version = self.write(state.model_copy(update={"paused": paused}), version)
            self._log.emit("paused" if paused else "resumed", cluster=cluster)
        return self._states[cluster]

    def write(self, state: ClusterState, version: int) -> int:
        """Write ``state`` under this term's epoch, iff still at ``version``; returns the new version.

        :raises LostLeadership: the epoch moved on (nothing written).
        :raises StateConflict: the state changed since ``version`` (nothing written).
        :raises CoordinationUnavailable: ZooKeeper unreachable.
        """
        stamped = state.model_copy(update={"leader": self._identity, "epoch": self._term.epoch,
                                           "updated_at": self._clock()})
        new_version = self._coord.write_state(self._term.lease, stamped, version)
        self._states[state.cluster] = (stamped, new_version)
        return new_version
