"""What the controller's parts need from ZooKeeper and from PostgreSQL, as typing.Protocols.

The real adapters are :class:`orchestrator.coordination.Coordinator` (kazoo) and
:class:`orchestrator.control.database.PostgresCluster` (psycopg); the unit tests pass the
in-memory fakes of ``tests/control/fakes.py``. Each method documents what is atomic and
what it raises; a part never catches a library's own exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from orchestrator.coordination import Lease
from orchestrator.decisions import SessionState
from orchestrator.state import ClusterSnapshot, ClusterState, MemberStatus


class LeaseSource(Protocol):
    """Enough of ZooKeeper to tell whether a leadership term is still current."""

    @property
    def session(self) -> SessionState:
        """The session as the client last heard it (may lag the server: a paused process
        wakes up believing it is CONNECTED)."""
        ...

    def current_lease(self) -> Lease | None:
        """The newest term as stored, read from ZooKeeper now (never cached).

        :raises CoordinationUnavailable: the read failed (session suspended or expired, ...).
        """
        ...


class Coordination(LeaseSource, Protocol):
    """The leader's view of ZooKeeper: epochs, versioned state, operator controls."""

    def bump_epoch(self) -> Lease:
        """Start a new term (compare-and-set increment of the epoch).

        :raises CoordinationUnavailable: ZooKeeper unreachable.
        """
        ...

    def read_state(self, cluster: str) -> tuple[ClusterState | None, int]:
        """The cluster's state and its version (-1: none yet).

        :raises CoordinationUnavailable: ZooKeeper unreachable.
        """
        ...

    def write_state(self, lease: Lease, state: ClusterState, version: int) -> int:
        """Atomically: write iff the epoch is still ``lease`` and the state still at ``version``.

        :raises LostLeadership: the epoch moved on.
        :raises StateConflict: the state changed since ``version``.
        :raises CoordinationUnavailable: ZooKeeper unreachable (nothing or everything written).
        """
        ...

    def is_paused(self, cluster: str) -> bool: ...

    def pending_requests(self, cluster: str) -> list[tuple[str, dict[str, Any]]]: ...

    def claim_request(self, cluster: str, request_id: str) -> bool:
        """Take a request off the queue (atomic); False when its operator withdrew it first."""
        ...

    def answer_request(self, cluster: str, request_id: str, result: dict[str, Any]) -> None: ...

    def contenders(self) -> list[str]:
        """Controller identities in election order: the leader first."""
        ...

    def schedule_last_runs(self) -> dict[str, float]: ...

    def set_schedule_last_run(self, drill: str, at: float) -> None: ...


class ClusterDatabase(Protocol):
    """The PostgreSQL members of one cluster, by member name.

    Every call has a strict timeout. A member that cannot be reached raises
    :class:`~orchestrator.errors.DatabaseUnavailable` (never returns ``False`` for it),
    except :meth:`probe`, which reports it as an unreachable :class:`MemberStatus`.
    """

    def probe(self) -> ClusterSnapshot:
        """Every member at once (in parallel), frozen."""
        ...

    def probe_member(self, member: str) -> MemberStatus: ...

    def fence(self, member: str, *, mode: str = "immediate") -> bool:
        """Stop ``member``'s server; False when it was not running (nothing to stop)."""
        ...

    def promote(self, member: str) -> int:
        """Promote ``member`` and return its new timeline once it accepts writes."""
        ...

    def repoint(self, member: str, upstream: str) -> None:
        """Make standby ``member`` stream from ``upstream`` (through its own slot there)."""
        ...

    def set_synchronous_names(self, member: str, names: str | None) -> int:
        """Set the primary's ``synchronous_standby_names`` (None: the policy default) and
        return its WAL position once the change is in effect."""
        ...

    def wait_flushed(self, member: str, standbys: Iterable[str], lsn: int, *, timeout: float) -> bool:
        """True once every one of ``standbys`` flushed ``lsn`` on primary ``member``."""
        ...

    def drop_synchronous_names(self, member: str) -> None:
        """No quorum at all on ``member`` (an operator accepted losing data)."""
        ...

    def attached_standbys(self, member: str) -> list[str]:
        """Application names of the standbys streaming from primary ``member`` now."""
        ...

    def stop_writes(self, member: str) -> int:
        """Primary ``member`` acknowledges no more commits (read-only, clients cut; the server
        keeps running); returns its WAL flush position, past which nothing was acknowledged."""
        ...

    def resume_writes(self, member: str) -> None:
        """Undo :meth:`stop_writes` (an aborted switchover): writable by default again."""
        ...

    def stop_server(self, member: str) -> None:
        """Have ``member`` shut down (fast); returns at once."""
        ...

    def start_server(self, member: str) -> None:
        """Start ``member``'s stopped server as it was (a rolled-back switchover's old primary);
        returns once it accepts connections.

        :raises DatabaseUnavailable: it did not start.
        """
        ...

    def prepare_synchronous_names(self, member: str, names: str) -> bool:
        """Give standby ``member`` its own quorum list before promotion; False if it had it."""
        ...

    def current_lsn(self, member: str) -> int:
        """The primary's current write position."""
        ...

    def reserve_slot(self, primary: str, member: str) -> None:
        """Create ``member``'s slot on ``primary``, reserving WAL from now."""
        ...

    def checkpoint(self, member: str) -> None: ...

    def ensure_peer_slots(self, member: str) -> list[str]:
        """Slots for every peer on ``member``; returns the ones created."""
        ...
