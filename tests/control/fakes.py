"""In-memory stand-ins for ZooKeeper and PostgreSQL, for unit tests of the controller's parts.

:class:`FakeZooKeeper` is the server side (the znodes the controller uses, and which
sessions are alive); each :class:`FakeCoordinator` is one controller's client of it, with
its own session as the *client* believes it to be. ``expire()`` kills a session on the
server without telling the client: exactly what a controller paused past its session
(SIGSTOP, GC) wakes up to. Its next request fails and the client notices (LOST), as
kazoo does.

:class:`FakeCluster` holds the PostgreSQL members of one cluster as plain records
(running, role, WAL position, upstream) and logs every mutating call in ``actions``, so a
test can assert that a stale leader changed nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from orchestrator.coordination import Lease, StateConflict
from orchestrator.decisions import AgentView, Policy, SessionState
from orchestrator.errors import CoordinationUnavailable, DatabaseUnavailable, LostLeadership
from orchestrator.state import ClusterSnapshot, ClusterState, Health, MemberStatus, Role

# ---- ZooKeeper ----------------------------------------------------------------------------------


@dataclass
class FakeZooKeeper:
    """The server side, shared by every :class:`FakeCoordinator` of one test."""

    epoch: int = 0
    epoch_version: int = -1            # -1: no epoch znode yet
    states: dict[str, tuple[ClusterState, int]] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    requests: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    schedule: dict[str, float] = field(default_factory=dict)
    election: list[str] = field(default_factory=list)
    alive: dict[str, bool] = field(default_factory=dict)   # identity -> session alive on the server
    # Every successful write: (identity, what).
    writes: list[tuple[str, str]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def lease(self) -> Lease | None:
        return Lease(self.epoch, self.epoch_version) if self.epoch_version >= 0 else None

    def submit(self, cluster: str, request: dict[str, Any]) -> str:
        """An operator's request, as ``Coordinator.submit_request`` queues it (with its expiry)."""
        request_id = f"req-{next(self._ids):010d}"
        self.requests.setdefault(cluster, {})[request_id] = request
        return request_id

    def writes_by(self, identity: str) -> list[str]:
        return [what for who, what in self.writes if who == identity]


class FakeCoordinator:
    """One controller's ZooKeeper client (implements ``control.ports.Coordination``)."""

    def __init__(self, zk: FakeZooKeeper, identity: str) -> None:
        self.zk = zk
        self.identity = identity
        self._session = SessionState.CONNECTED
        self._listeners: list[Callable[[SessionState], None]] = []
        zk.alive[identity] = True
        zk.election.append(identity)
        self.reads = 0

    # ---- faults a test injects --------------------------------------------------------------

    def expire(self) -> None:
        """The server expires the session (its election node goes); the client is not told yet."""
        self.zk.alive[self.identity] = False
        if self.identity in self.zk.election:
            self.zk.election.remove(self.identity)

    def suspend(self) -> None:
        self._set(SessionState.SUSPENDED)

    def resume(self) -> None:
        self._set(SessionState.CONNECTED)

    def reconnect(self) -> None:
        """A new session after expiry (kazoo reconnects by itself): CONNECTED, but no longer leader."""
        self.zk.alive[self.identity] = True
        self._set(SessionState.CONNECTED)

    # ---- the client -------------------------------------------------------------------------

    def on_session_change(self, listener: Callable[[SessionState], None]) -> None:
        self._listeners.append(listener)

    def _set(self, session: SessionState) -> None:
        self._session = session
        for listener in list(self._listeners):
            listener(session)

    @property
    def session(self) -> SessionState:
        return self._session

    def _request(self, what: str) -> None:
        if self._session is SessionState.SUSPENDED:
            raise CoordinationUnavailable(f"ZooKeeper: {what} failed (ConnectionLoss)")
        if self._session is SessionState.LOST:
            raise CoordinationUnavailable(f"ZooKeeper: {what} failed (SessionExpiredError)")
        if not self.zk.alive[self.identity]:
            self._set(SessionState.LOST)   # the client notices only now
            raise CoordinationUnavailable(f"ZooKeeper: {what} failed (SessionExpiredError)")

    def _write(self, what: str) -> None:
        self._request(what)
        self.zk.writes.append((self.identity, what))

    def current_lease(self) -> Lease | None:
        self._request("current_lease")
        self.reads += 1
        return self.zk.lease()

    def bump_epoch(self) -> Lease:
        self._write("bump_epoch")
        self.zk.epoch += 1
        self.zk.epoch_version += 1
        return Lease(self.zk.epoch, self.zk.epoch_version)

    def read_state(self, cluster: str) -> tuple[ClusterState | None, int]:
        self._request("read_state")
        if cluster not in self.zk.states:
            return None, -1
        return self.zk.states[cluster]

    def write_state(self, lease: Lease, state: ClusterState, version: int) -> int:
        self._request("write_state")
        if self.zk.lease() != lease:
            raise LostLeadership(f"epoch {lease.epoch} is no longer current; another controller leads")
        current = self.zk.states.get(state.cluster)
        if (current[1] if current else -1) != version:
            raise StateConflict(f"{state.cluster} state changed since version {version}")
        self.zk.states[state.cluster] = (state, version + 1)
        self.zk.writes.append((self.identity, f"state {state.cluster}"))
        return version + 1

    def is_paused(self, cluster: str) -> bool:
        self._request("is_paused")
        return cluster in self.zk.paused

    def pending_requests(self, cluster: str) -> list[tuple[str, dict[str, Any]]]:
        self._request("pending_requests")
        return sorted(self.zk.requests.get(cluster, {}).items())

    def claim_request(self, cluster: str, request_id: str) -> bool:
        self._write(f"claim {request_id}")
        return self.zk.requests.get(cluster, {}).pop(request_id, None) is not None

    def answer_request(self, cluster: str, request_id: str, result: dict[str, Any]) -> None:
        self._write(f"answer {request_id}")
        self.zk.results.setdefault(cluster, {})[request_id] = result
        self.zk.requests.get(cluster, {}).pop(request_id, None)

    def contenders(self) -> list[str]:
        self._request("contenders")
        return list(self.zk.election)

    def schedule_last_runs(self) -> dict[str, float]:
        self._request("schedule_last_runs")
        return dict(self.zk.schedule)

    def set_schedule_last_run(self, drill: str, at: float) -> None:
        self._write(f"schedule {drill}")
        self.zk.schedule[drill] = at


# ---- PostgreSQL -----------------------------------------------------------------------------------


@dataclass
class FakeMember:
    running: bool = True
    role: Role = Role.STANDBY
    lsn: int = 1000
    upstream: str | None = None     # member name it streams from (standby)
    timeline: int = 1
    sync_names: str | None = None
    # Cut off from everyone (controllers and standbys) but still running: probes time out.
    silent: bool = False


class FakeCluster:
    """The members of one cluster (implements ``control.ports.ClusterDatabase``).

    ``before(action, member)``, when set, runs first in every mutating call: a test uses it
    to lose the lease or kill a member at an exact step. ``actions`` logs each mutating
    call that got past it: ``(action, member, detail)``.
    """

    def __init__(self, policy: Policy, primary: str, *, lsn: int = 1000) -> None:
        self.policy = policy
        self.cluster = policy.cluster
        self.members = {
            name: FakeMember(role=Role.PRIMARY if name == primary else Role.STANDBY, lsn=lsn,
                             upstream=None if name == primary else primary)
            for name in policy.members
        }
        self.actions: list[tuple[str, str, str]] = []
        self.before: Callable[[str, str], None] | None = None

    def _act(self, action: str, member: str, detail: str = "") -> FakeMember:
        if self.before is not None:
            self.before(action, member)
        self.actions.append((action, member, detail))
        return self._reachable(member)

    def _reachable(self, member: str) -> FakeMember:
        record = self.members[member]
        if record.silent:
            raise DatabaseUnavailable(f"{member}: cannot connect (timeout expired)")
        if not record.running:
            raise DatabaseUnavailable(f"{member}: cannot connect (connection refused)")
        return record

    def kill(self, member: str) -> None:
        """Test set-up: the member's server dies (not an action of the controller)."""
        self.members[member].running = False

    def isolate(self, member: str) -> None:
        """Test set-up: the member keeps running but nobody reaches it (a silent partition)."""
        self.members[member].silent = True

    # ---- reads ------------------------------------------------------------------------------

    def probe(self) -> ClusterSnapshot:
        return ClusterSnapshot(self.cluster, {n: self.probe_member(n) for n in self.members}, taken_at=0.0)

    def probe_member(self, member: str) -> MemberStatus:
        record = self.members[member]
        if record.silent:  # a cut-off host answers nothing, whether its postmaster runs or not
            return MemberStatus(member, Health.UNREACHABLE, error="timeout expired")
        if not record.running:
            return MemberStatus(member, Health.UNREACHABLE, error="connection refused", refused=True)
        if record.role is Role.PRIMARY:
            replicas = {n: "quorum" for n, m in self.members.items()
                        if m.running and m.role is Role.STANDBY and m.upstream == member}
            attached = {n: (self.members[n].lsn, self.members[n].lsn) for n in replicas}
            return MemberStatus(member, Health.HEALTHY, Role.PRIMARY, timeline=record.timeline, wal_lsn=record.lsn,
                                replicas=replicas, attached=attached, sync_names=record.sync_names)
        upstream = self.members.get(record.upstream or "")
        streaming = upstream is not None and upstream.running and not upstream.silent \
            and upstream.role is Role.PRIMARY
        return MemberStatus(member, Health.HEALTHY, Role.STANDBY, timeline=record.timeline, wal_lsn=record.lsn,
                            replay_lsn=record.lsn, streaming=streaming,
                            upstream=self.policy.members[record.upstream].endpoint if record.upstream else None)

    def current_lsn(self, member: str) -> int:
        return self._reachable(member).lsn

    def wait_flushed(self, member: str, standbys: Iterable[str], lsn: int, *, timeout: float) -> bool:
        self._reachable(member)
        return all(self.members[s].running and self.members[s].lsn >= lsn for s in standbys)

    # ---- actions ----------------------------------------------------------------------------

    def attached_standbys(self, member: str) -> list[str]:
        self._reachable(member)
        return sorted(n for n, m in self.members.items() if m.running and m.upstream == member)

    def stop_writes(self, member: str) -> int:
        return self._act("stop_writes", member).lsn

    def resume_writes(self, member: str) -> None:
        self._act("resume_writes", member)

    def stop_server(self, member: str) -> None:
        self._act("stop_server", member).running = False

    def start_server(self, member: str) -> None:
        if self.before is not None:
            self.before("start_server", member)
        self.actions.append(("start_server", member, ""))
        self.members[member].running = True

    def prepare_synchronous_names(self, member: str, names: str) -> bool:
        record = self._act("prepare_synchronous_names", member, names)
        changed, record.sync_names = record.sync_names != names, names
        return changed

    def fence(self, member: str, *, mode: str = "immediate") -> bool:
        if self.before is not None:
            self.before("fence", member)
        record = self.members[member]
        if record.silent:
            raise DatabaseUnavailable(f"{member}: cannot connect (timeout expired)")
        self.actions.append(("fence", member, mode))
        was_running, record.running = record.running, False
        return was_running

    def promote(self, member: str) -> int:
        record = self._act("promote", member)
        if record.role is Role.STANDBY:
            record.role, record.upstream, record.timeline = Role.PRIMARY, None, record.timeline + 1
        return record.timeline

    def repoint(self, member: str, upstream: str) -> None:
        self._act("repoint", member, upstream).upstream = upstream

    def set_synchronous_names(self, member: str, names: str | None) -> int:
        record = self._act("set_synchronous_names", member, names or "")
        record.sync_names = names
        return record.lsn

    def drop_synchronous_names(self, member: str) -> None:
        self._act("drop_synchronous_names", member).sync_names = ""

    def reserve_slot(self, primary: str, member: str) -> None:
        self._act("reserve_slot", primary, member)

    def checkpoint(self, member: str) -> None:
        self._act("checkpoint", member)

    def ensure_peer_slots(self, member: str) -> list[str]:
        self._act("ensure_peer_slots", member)
        return []

    def mutations(self) -> list[tuple[str, str, str]]:
        return list(self.actions)


# ---- node agents ----------------------------------------------------------------------------------


@dataclass
class FakeAgent:
    live: bool = True
    obeys: bool = True              # fences its member when instructed (False: cut off from it)
    bound_s: float = 0.1
    session_timeout_s: float = 0.3
    # Seconds since its last lease write landed (ZooKeeper's clock), as the leader would read it.
    write_age_s: float | None = None


class FakeAgents:
    """The members' agents (implements ``control.agents.AgentDirectory``) over a FakeCluster.

    An obedient agent told to fence stops its member's server (as the real agent's fence does);
    ``expire_after`` views of a live agent, its session expires (a cut-off agent's does, once the
    server times it out). ``events`` interleaves with ``FakeCluster.actions`` through ``journal``.
    """

    def __init__(self, zk: FakeZooKeeper, db: FakeCluster, agents: dict[str, FakeAgent],
                 *, expire_after: int | None = None) -> None:
        self._zk, self._db, self.agents = zk, db, agents
        self._expire_after = expire_after
        self.instructions: list[tuple[str, int]] = []
        self.view_calls = 0

    def views(self, cluster: str, *, ages: bool = False) -> dict[str, AgentView]:
        self.view_calls += 1
        if self._expire_after is not None and self.view_calls >= self._expire_after:
            for name, agent in self.agents.items():
                if agent.live and not agent.obeys:
                    agent.live = False
                    self._db.actions.append(("agent-session-expired", name, ""))
        found = {}
        for name, agent in self.agents.items():
            member = self._db.members[name]
            alive = agent.live and member.running
            found[name] = AgentView(live=agent.live, postmaster_alive=alive, bound_s=agent.bound_s,
                                    session_timeout_s=agent.session_timeout_s,
                                    write_age_s=agent.write_age_s if ages and agent.live else None)
        return found

    def instruct_fence(self, lease: Lease, cluster: str, member: str) -> str:
        if self._zk.lease() != lease:
            raise LostLeadership(f"epoch {lease.epoch} is no longer current; the instruction was not written")
        self.instructions.append((member, lease.epoch))
        if self.agents[member].live and self.agents[member].obeys:
            self._db.members[member].running = False
            self._db.actions.append(("agent-fence", member, f"epoch {lease.epoch}"))
        return f"i{len(self.instructions)}"
