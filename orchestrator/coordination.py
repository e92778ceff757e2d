"""ZooKeeper coordination (kazoo): leader election, epochs, versioned cluster state, requests.

The only module that imports kazoo. Layout under ``/dr-orchestrator/<topology>/``::

    election/               kazoo Election (lock) among the controllers
    epoch                   leadership term; bumped with a CAS by each new leader
    clusters/<c>/state      ClusterState JSON; written only by the leader, with a
                            transaction that also checks the epoch's version
    clusters/<c>/paused     exists while an operator paused automatic failover
    clusters/<c>/requests/  operator requests (switchover, failover) for the leader
    clusters/<c>/results/   the leader's answers, keyed by request id
    drill-lock              ephemeral: the one drill running now
    drills/                 drill history, one znode per run

Contract: every write of the leader is atomic with a check of the epoch znode's version,
so a deposed leader that wakes up late changes nothing (:class:`LostLeadership`). A lost
race on the state's own version raises :class:`StateConflict`. An unreachable ensemble
raises :class:`CoordinationUnavailable`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
)
from kazoo.handlers.threading import KazooTimeoutError

from orchestrator.decisions import SessionState
from orchestrator.errors import CoordinationUnavailable, DrillLocked, LostLeadership, PermanentError
from orchestrator.state import ClusterState


class StateConflict(PermanentError):
    """The state changed since it was read (another writer won the race)."""


P = ParamSpec("P")
R = TypeVar("R")


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Raise :class:`CoordinationUnavailable` for any kazoo failure (lost connection, ...)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except KazooException as exc:
            raise CoordinationUnavailable(f"ZooKeeper: {method.__name__} failed ({type(exc).__name__})") from exc

    return wrapper


@dataclass(frozen=True)
class Lease:
    """A leadership term: the epoch number and the epoch znode version that proves it."""

    epoch: int
    version: int


class _Session:
    """A kazoo client and its session state as :class:`SessionState`, with listeners."""

    def __init__(self, hosts: str, namespace: str, *, session_timeout: float, max_retry_delay: float) -> None:
        self.root = f"/dr-orchestrator/{namespace}"
        self._client = KazooClient(hosts=hosts, timeout=session_timeout, connection_retry={
            "max_tries": -1, "delay": 0.05, "max_delay": max_retry_delay})
        self._session = SessionState.LOST
        self._listeners: list[Callable[[SessionState], None]] = []
        self._client.add_listener(self._on_state)

    def _on_state(self, state: str) -> None:
        self._session = {
            KazooState.CONNECTED: SessionState.CONNECTED,
            KazooState.SUSPENDED: SessionState.SUSPENDED,
            KazooState.LOST: SessionState.LOST,
        }[state]
        for listener in self._listeners:
            listener(self._session)

    def on_session_change(self, listener: Callable[[SessionState], None]) -> None:
        self._listeners.append(listener)

    @property
    def session(self) -> SessionState:
        return self._session

    def start(self, timeout: float = 10.0) -> None:
        """Connect. :raises CoordinationUnavailable: no server answered within ``timeout``."""
        try:
            self._client.start(timeout=timeout)
        except KazooTimeoutError as exc:
            raise CoordinationUnavailable(f"ZooKeeper at {self._client.hosts} did not answer in {timeout}s; "
                                          "is the ensemble up (drctl lab status)?") from exc
        self._session = SessionState.CONNECTED

    def stop(self) -> None:
        """Close the session: its ephemeral nodes disappear at once."""
        with contextlib.suppress(KazooException):
            self._client.stop()
            self._client.close()

    def cluster_path(self, cluster: str, kind: str, member: str = "") -> str:
        return f"{self.root}/clusters/{cluster}/{kind}" + (f"/{member}" if member else "")

    # ---- node agents: what the leader (and tests) read and write ---------------------------------

    @_translated
    def instruct(self, lease: Lease, cluster: str, member: str, instruction: dict[str, Any]) -> None:
        """Write an instruction for ``member``'s agent iff ``lease`` is still the current epoch.

        :raises LostLeadership: the epoch moved on.
        """
        path = self.cluster_path(cluster, "instructions", member)
        self._client.ensure_path(self.cluster_path(cluster, "instructions"))
        data = json.dumps(instruction).encode()
        exists = self._client.exists(path) is not None
        tx = self._client.transaction()
        tx.check(f"{self.root}/epoch", lease.version)
        if exists:
            tx.set_data(path, data)
        else:
            tx.create(path, data)
        results = tx.commit()
        if isinstance(results[0], Exception):
            raise LostLeadership(f"epoch {lease.epoch} is no longer current; the instruction was not written")
        if isinstance(results[1], Exception):
            raise CoordinationUnavailable(f"writing the instruction for {member} failed: {results[1]!r}")

    @_translated
    def instruction_result(self, cluster: str, member: str) -> dict[str, Any] | None:
        try:
            data, _ = self._client.get(self.cluster_path(cluster, "instruction-results", member))
        except NoNodeError:
            return None
        return dict(json.loads(data))

    @_translated
    def agent_facts(self, cluster: str) -> dict[str, bytes]:
        """Every live agent's facts JSON, by member (a member without a live agent is absent)."""
        base = self.cluster_path(cluster, "agents")
        try:
            children = self._client.get_children(base)
        except NoNodeError:
            return {}
        found: dict[str, bytes] = {}
        for child in children:
            with contextlib.suppress(NoNodeError):
                found[str(child)] = bytes(self._client.get(f"{base}/{child}")[0])
        return found

    @_translated
    def agent_write_ages(self, cluster: str) -> dict[str, float]:
        """Seconds since each live agent's last write landed, on ZooKeeper's own clock.

        Writes ``clusters/<cluster>/clock`` (a scratch node: no state, no epoch) and reads each
        agent node's ``mtime`` afterwards: both times come from the ensemble's leader, so no
        clock of this host enters the difference, and a read after our own write sees every
        agent write that landed before it.
        """
        clock = self.cluster_path(cluster, "clock")
        try:
            now = self._client.set(clock, b"").mtime
        except NoNodeError:
            self._client.create(clock, b"", makepath=True)
            now = self._client.set(clock, b"").mtime
        base = self.cluster_path(cluster, "agents")
        try:
            children = self._client.get_children(base)
        except NoNodeError:
            return {}
        ages: dict[str, float] = {}
        for child in children:
            stat = self._client.exists(f"{base}/{child}")
            if stat is not None:
                ages[str(child)] = (now - stat.mtime) / 1000
        return ages

    @_translated
    def agent_registry(self, cluster: str) -> dict[str, dict[str, Any]]:
        """Every member an agent was ever set up for (persistent ``agent-registry/<member>``), with
        what it registered: a registered member without a live ``agents/<member>`` node has had its
        agent's session expire (or its agent stopped), and so acknowledges nothing (agent.rules)."""
        base = self.cluster_path(cluster, "agent-registry")
        try:
            children = self._client.get_children(base)
        except NoNodeError:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for child in children:
            with contextlib.suppress(NoNodeError):
                found[str(child)] = dict(json.loads(self._client.get(f"{base}/{child}")[0]))
        return found


class Coordinator(_Session):
    def __init__(self, hosts: str, namespace: str, *, identity: str, session_timeout: float = 2.0) -> None:
        super().__init__(hosts, namespace, session_timeout=session_timeout, max_retry_delay=0.5)
        self.identity = identity

    def start(self, timeout: float = 10.0) -> None:
        super().start(timeout)
        for path in ("election", "clusters", "drills"):
            self._client.ensure_path(f"{self.root}/{path}")

    # ---- election and epochs -------------------------------------------------------------

    def campaign(self, lead: Callable[[], None], stop: threading.Event) -> None:
        """Block until elected, run ``lead`` while leader, release; return when ``stop`` is set."""
        election = self._client.Election(f"{self.root}/election", self.identity)
        done = threading.Event()

        def cancel_on_stop() -> None:
            while not done.is_set():
                if stop.wait(0.2):
                    election.cancel()
                    return

        watcher = threading.Thread(target=cancel_on_stop, name="election-watcher", daemon=True)
        watcher.start()
        try:
            election.run(lead)
        except KazooException as exc:
            if not stop.is_set():
                raise CoordinationUnavailable(f"ZooKeeper: election failed ({type(exc).__name__})") from exc
        finally:
            done.set()

    @_translated
    def contenders(self) -> list[str]:
        """Controller identities in election order: the leader first."""
        return [str(c) for c in self._client.Election(f"{self.root}/election").contenders()]

    @_translated
    def leader_identity(self) -> str | None:
        contenders = self.contenders()
        return contenders[0] if contenders else None

    @_translated
    def bump_epoch(self) -> Lease:
        """Start a new leadership term: CAS-increment the epoch; retry if another leader raced."""
        path = f"{self.root}/epoch"
        while True:
            try:
                data, stat = self._client.get(path)
            except NoNodeError:
                with contextlib.suppress(NodeExistsError):
                    self._client.create(path, b"0")
                continue
            epoch = int(data or b"0") + 1
            try:
                new = self._client.set(path, str(epoch).encode(), version=stat.version)
            except BadVersionError:
                continue
            return Lease(epoch, new.version)

    @_translated
    def current_lease(self) -> Lease | None:
        """The newest term as stored (read-only): whoever holds this version leads.

        A linearizable read (``sync`` first): a server that lags the ensemble's leader
        cannot show an epoch that was already superseded. Through this session, so it
        fails (:class:`CoordinationUnavailable`) once the session has expired.
        """
        try:
            self._client.sync(f"{self.root}/epoch")
            data, stat = self._client.get(f"{self.root}/epoch")
        except NoNodeError:
            return None
        return Lease(int(data or b"0"), int(stat.version))

    @_translated
    def current_epoch(self) -> int:
        try:
            data, _ = self._client.get(f"{self.root}/epoch")
        except NoNodeError:
            return 0
        return int(data or b"0")

    # ---- cluster state -------------------------------------------------------------------

    def _state_path(self, cluster: str) -> str:
        return f"{self.root}/clusters/{cluster}/state"

    @_translated
    def read_state(self, cluster: str) -> tuple[ClusterState | None, int]:
        """The state and its znode version (-1 when none was written yet)."""
        try:
            data, stat = self._client.get(self._state_path(cluster))
        except NoNodeError:
            return None, -1
        except KazooException as exc:
            raise CoordinationUnavailable(f"reading {cluster} state failed: {exc!r}") from exc
        return ClusterState.model_validate_json(data), int(stat.version)

    @_translated
    def write_state(self, lease: Lease, state: ClusterState, version: int) -> int:
        """Write ``state`` iff the epoch is still ours and the state is still at ``version``.

        ``version == -1`` creates it. Returns the new version.

        :raises LostLeadership: the epoch moved on: this controller must stop acting.
        :raises StateConflict: the state changed since it was read.
        """
        path = self._state_path(state.cluster)
        data = state.model_dump_json().encode()
        self._client.ensure_path(f"{self.root}/clusters/{state.cluster}")
        tx = self._client.transaction()
        tx.check(f"{self.root}/epoch", lease.version)
        if version == -1:
            tx.create(path, data)
        else:
            tx.set_data(path, data, version=version)
        try:
            results = tx.commit()
        except KazooException as exc:
            raise CoordinationUnavailable(f"writing {state.cluster} state failed: {exc!r}") from exc
        if isinstance(results[0], Exception):
            raise LostLeadership(f"epoch {lease.epoch} is no longer current; another controller leads")
        if isinstance(results[1], Exception):
            raise StateConflict(f"{state.cluster} state changed since version {version}: {results[1]!r}")
        return version + 1

    # ---- operator controls -----------------------------------------------------------------

    @_translated
    def set_paused(self, cluster: str, paused: bool) -> None:
        path = f"{self.root}/clusters/{cluster}/paused"
        if paused:
            self._client.ensure_path(path)
        else:
            with contextlib.suppress(NoNodeError):
                self._client.delete(path)

    @_translated
    def is_paused(self, cluster: str) -> bool:
        return self._client.exists(f"{self.root}/clusters/{cluster}/paused") is not None

    @_translated
    def submit_request(self, cluster: str, request: dict[str, Any], *, ttl: float = 120.0) -> str:
        """Queue an operator request for the leader; returns its id.

        The request expires ``ttl`` seconds from now (wall clock): a leader never runs a request
        its operator has stopped waiting for, even if that operator's ``drctl`` died.
        """
        base = f"{self.root}/clusters/{cluster}/requests"
        self._client.ensure_path(base)
        stamped = {**request, "submitted_at": time.time(), "expires_at": time.time() + ttl}
        path = self._client.create(f"{base}/req-", json.dumps(stamped).encode(), sequence=True)
        return str(path).rsplit("/", 1)[1]

    @_translated
    def claim_request(self, cluster: str, request_id: str) -> bool:
        """Take a request off the queue before running it: True when this caller owns it now.

        Deleting the request node is the one atomic step shared with :meth:`withdraw_request`,
        so a request is either run by a leader or withdrawn by its operator, never both.
        """
        try:
            self._client.delete(f"{self.root}/clusters/{cluster}/requests/{request_id}")
        except NoNodeError:
            return False
        return True

    @_translated
    def withdraw_request(self, cluster: str, request_id: str) -> bool:
        """Withdraw a queued request; False when a leader has already claimed it."""
        return self.claim_request(cluster, request_id)

    @_translated
    def watch_requests(self, cluster: str, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` (from kazoo's thread) whenever requests come or go, for good.

        The leader wakes at once for a request instead of finding it at its next probe round.
        """
        base = f"{self.root}/clusters/{cluster}/requests"
        self._client.ensure_path(base)

        def changed(_children: list[str]) -> None:
            on_change()

        self._client.ChildrenWatch(base, changed)

    @_translated
    def pending_requests(self, cluster: str) -> list[tuple[str, dict[str, Any]]]:
        base = f"{self.root}/clusters/{cluster}/requests"
        try:
            children = sorted(self._client.get_children(base))
        except NoNodeError:
            return []
        found = []
        for child in children:
            try:
                data, _ = self._client.get(f"{base}/{child}")
            except NoNodeError:
                continue
            found.append((str(child), json.loads(data)))
        return found

    @_translated
    def answer_request(self, cluster: str, request_id: str, result: dict[str, Any]) -> None:
        base = f"{self.root}/clusters/{cluster}"
        self._client.ensure_path(f"{base}/results")
        with contextlib.suppress(NodeExistsError):
            self._client.create(f"{base}/results/{request_id}", json.dumps(result).encode())
        with contextlib.suppress(NoNodeError):
            self._client.delete(f"{base}/requests/{request_id}")

    @_translated
    def wait_result(self, cluster: str, request_id: str, timeout: float, *, claimed_grace: float = 120.0
                    ) -> dict[str, Any] | None:
        """The leader's answer to a request, watched (not polled); None when nobody answered.

        When ``timeout`` passes, the request is withdrawn so it can never run later. If a leader
        had already claimed it, the operation is under way: its answer is awaited up to
        ``claimed_grace`` seconds more, since walking away would hide what happened.
        """
        path = f"{self.root}/clusters/{cluster}/results/{request_id}"
        answered = threading.Event()
        self._client.ensure_path(f"{self.root}/clusters/{cluster}/results")

        def on_data(data: bytes | None, _stat: Any) -> bool:
            if data is not None:
                answered.set()
                return False  # stop watching
            return True

        self._client.DataWatch(path, on_data)
        if not answered.wait(timeout) and self.withdraw_request(cluster, request_id):
            return None
        answered.wait(claimed_grace)
        try:
            data, _ = self._client.get(path)
        except NoNodeError:
            return None
        return dict(json.loads(data))

    # ---- drills ----------------------------------------------------------------------------

    @_translated
    def acquire_drill_lock(self, owner: str) -> None:
        """Take the one-drill-at-a-time lock (ephemeral: released if the holder dies).

        :raises DrillLocked: another drill holds it; the message names the holder.
        """
        path = f"{self.root}/drill-lock"
        try:
            self._client.create(path, owner.encode(), ephemeral=True)
        except NodeExistsError:
            try:
                holder = self._client.get(path)[0].decode()
            except NoNodeError:
                holder = "unknown"
            raise DrillLocked(f"another drill is running ({holder}); wait for it to finish") from None

    @_translated
    def release_drill_lock(self) -> None:
        with contextlib.suppress(NoNodeError):
            self._client.delete(f"{self.root}/drill-lock")

    @_translated
    def schedule_last_runs(self) -> dict[str, float]:
        """When the leader last started each scheduled drill (survives controller restarts)."""
        base = f"{self.root}/schedule"
        try:
            children = self._client.get_children(base)
        except NoNodeError:
            return {}
        return {str(c): float(self._client.get(f"{base}/{c}")[0]) for c in children}

    @_translated
    def set_schedule_last_run(self, drill: str, at: float) -> None:
        path = f"{self.root}/schedule/{drill}"
        data = repr(at).encode()
        try:
            self._client.create(path, data, makepath=True)
        except NodeExistsError:
            self._client.set(path, data)

    @_translated
    def record_drill(self, run_id: str, summary: dict[str, Any]) -> None:
        path = f"{self.root}/drills/{run_id}"
        data = json.dumps(summary).encode()
        try:
            self._client.create(path, data, makepath=True)
        except NodeExistsError:
            self._client.set(path, data)

    @_translated
    def drill_history(self) -> list[dict[str, Any]]:
        base = f"{self.root}/drills"
        try:
            children = sorted(self._client.get_children(base))
        except NoNodeError:
            return []
        return [dict(json.loads(self._client.get(f"{base}/{c}")[0])) for c in children]


class AgentSession(_Session):
    """A node agent's own ZooKeeper session (one per agent; see :mod:`orchestrator.agent`).

    Layout under ``/dr-orchestrator/<topology>/clusters/<cluster>/``::

        agents/<member>         ephemeral: the agent's liveness node; data = its AgentFacts JSON
        agent-registry/<member> persistent: this member runs an agent; data = its fencing budget
        instructions/<member>   the leader's instruction {"epoch", "action", "id"} (persistent)
        instruction-results/<member>  the agent's answer to the last instruction it read

    The agent writes only its own ``agents/``, ``agent-registry/`` and ``instruction-results/`` nodes; the leader
    writes ``instructions/`` with :meth:`instruct`, atomically with a check of its epoch version.
    Every kazoo failure raises :class:`CoordinationUnavailable`.
    """

    def __init__(self, hosts: str, namespace: str, *, session_timeout: float) -> None:
        super().__init__(hosts, namespace, session_timeout=session_timeout, max_retry_delay=0.25)
        self._owned: tuple[str, int] | None = None  # (path, session id) of our ephemeral node

    @_translated
    def register(self, cluster: str, member: str, record: dict[str, Any]) -> None:
        """Record (persistently) that ``member`` runs an agent with this fencing budget; see
        :meth:`agent_registry`. Written at every start; never removed by the agent itself."""
        path = self.cluster_path(cluster, "agent-registry", member)
        data = json.dumps(record).encode()
        try:
            self._client.set(path, data)
        except NoNodeError:
            with contextlib.suppress(NodeExistsError):
                self._client.create(path, data, makepath=True)

    @_translated
    def publish(self, cluster: str, member: str, data: bytes) -> None:
        """Write the agent's facts into its ephemeral node, creating it in this session if needed.

        Returns only once the ensemble's leader accepted the write: a confirmation of the lease.
        A node left by an earlier session of this member (a restarted agent) is replaced.
        """
        path = self.cluster_path(cluster, "agents", member)
        session_id = int(self._client.client_id[0]) if self._client.client_id else -1
        if self._owned == (path, session_id):
            try:
                self._client.set(path, data)
                return
            except NoNodeError:
                self._owned = None
        while True:
            try:
                self._client.create(path, data, ephemeral=True, makepath=True)
                break
            except NodeExistsError:
                try:
                    _, stat = self._client.get(path)
                except NoNodeError:
                    continue
                if int(stat.ephemeralOwner) == session_id:
                    self._client.set(path, data)
                    break
                with contextlib.suppress(NoNodeError, BadVersionError):
                    self._client.delete(path, version=stat.version)
        self._owned = (path, session_id)

    def _watch(self, path: str, callback: Callable[[bytes | None], None]) -> None:
        def on_data(data: bytes | None, _stat: Any) -> None:
            callback(data)

        self._client.DataWatch(path, on_data)

    def watch_state(self, cluster: str, callback: Callable[[ClusterState | None], None]) -> None:
        """Call ``callback`` with the cluster state now and at every change (on a kazoo thread)."""
        self._watch(f"{self.root}/clusters/{cluster}/state",
                    lambda data: callback(ClusterState.model_validate_json(data) if data else None))

    def watch_epoch(self, callback: Callable[[int | None], None]) -> None:
        self._watch(f"{self.root}/epoch", lambda data: callback(int(data or b"0") if data is not None else None))

    def watch_instruction(self, cluster: str, member: str, callback: Callable[[bytes | None], None]) -> None:
        self._watch(self.cluster_path(cluster, "instructions", member), callback)

    @_translated
    def current_epoch(self) -> int | None:
        """The epoch as the ensemble's leader holds it now (``sync`` first: no stale follower read)."""
        path = f"{self.root}/epoch"
        self._client.sync(path)
        try:
            data, _ = self._client.get(path)
        except NoNodeError:
            return None
        return int(data or b"0")

    @_translated
    def read_state(self, cluster: str) -> ClusterState | None:
        """The cluster state as the ensemble's leader holds it now (``sync`` first)."""
        path = f"{self.root}/clusters/{cluster}/state"
        self._client.sync(path)
        try:
            data, _ = self._client.get(path)
        except NoNodeError:
            return None
        return ClusterState.model_validate_json(data)

    @_translated
    def answer(self, cluster: str, member: str, result: dict[str, Any]) -> None:
        path = self.cluster_path(cluster, "instruction-results", member)
        data = json.dumps(result).encode()
        try:
            self._client.set(path, data)
        except NoNodeError:
            self._client.create(path, data, makepath=True)
