"""The controller: one process per data centre; the elected leader watches and acts.

Each cycle of the leader is one function per cluster: probe every member (in parallel,
strict timeouts) into a frozen snapshot, fold it into the :class:`~decisions.Memory`,
ask :func:`decisions.decide`, execute the decision, and log it as one JSON line. A
failover or switchover is a persisted state machine (:class:`state.Operation`): each
step is recorded in ZooKeeper under the leader's epoch, so a new leader resumes a
half-done one and a deposed leader can write nothing.

The fast path (detect -> promote -> re-point) is SQL only. Rejoining the old primary
(pg_rewind) runs the Ansible playbook in a background thread, off the fast path.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from orchestrator import decisions as d
from orchestrator import postgres as pg
from orchestrator.coordination import Coordinator, Lease, StateConflict
from orchestrator.drills.spec import list_drills, load_drill
from orchestrator.errors import (
    CoordinationUnavailable,
    DatabaseUnavailable,
    LostLeadership,
    OrchestratorError,
    TemporaryError,
)
from orchestrator.pgserver import InstanceLayout, member_endpoint
from orchestrator.processes import spawn
from orchestrator.schedule import due_drills
from orchestrator.state import (
    ClusterSnapshot,
    ClusterState,
    MemberRecord,
    Operation,
    OperationKind,
    Step,
)
from orchestrator.topology import Cluster, Topology
from orchestrator.waiting import poll_tight


class SwitchoverAborted(DatabaseUnavailable):
    """A switchover gave up before promoting anything; the old primary was made writable again."""


class NoState(TemporaryError):
    """The cluster has no recorded state yet and the probes do not show who the primary is."""


class EventLog:
    """Structured log: one JSON object per line, each with a wall-clock ``ts``."""

    def __init__(self, stream: TextIO, **context: Any) -> None:
        self._stream = stream
        self._context = context
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 6), "event": event, **self._context, **fields}, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class Controller:
    def __init__(
        self,
        topology: Topology,
        datacenter: str,
        lab_root: Path,
        creds: pg.Credentials,
        *,
        log: EventLog | None = None,
        clock: Callable[[], float] = time.time,
        rejoin: Callable[[InstanceLayout, pg.Endpoint], None] | None = None,
        drills_dir: Path | None = None,
        cancel_rejoin: Callable[[], None] | None = None,
    ) -> None:
        self.topology = topology
        self.datacenter = datacenter
        self.root = lab_root
        self.creds = creds
        self.clock = clock
        self.identity = f"{datacenter}:{uuid.uuid4().hex[:8]}"
        self.log = log or EventLog(sys.stdout, controller=self.identity)
        self.coord = Coordinator(topology.zookeeper_hosts(), topology.name, identity=self.identity,
                                 session_timeout=topology.zookeeper.session_timeout_ms / 1000)
        self.stop_event = threading.Event()
        self._wake = threading.Event()  # an operator request arrived: cycle now
        self._rejoin_fn = rejoin
        self._cancel_rejoin = cancel_rejoin
        self._rejoin_threads: list[threading.Thread] = []
        self.drills_dir = drills_dir
        self._leading_since = 0.0
        self._schedule_checked = 0.0
        self._yield_checked = 0.0
        self._elected_at = 0.0
        self._last_kind: dict[str, str] = {}
        self._lease: Lease | None = None
        self._leading = False
        self._rejoining: set[str] = set()
        self._rejoin_lock = threading.Lock()
        interval = topology.controller.probe_interval_ms / 1000
        self._interval = interval
        self._prober = pg.Prober(creds, timeout=topology.controller.probe_timeout_ms / 1000)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self._policies = {c.name: d.Policy.from_topology(topology, c) for c in topology.clusters}
        self._memory: dict[str, d.Memory] = {}
        self._states: dict[str, tuple[ClusterState, int]] = {}
        self._last_reason: dict[str, str] = {}
        self._last_publish: dict[str, float] = {}
        # Fault hook for tests and drills: probe these members at another endpoint.
        self.probe_overrides: dict[str, pg.Endpoint] = {}

    # ---- process lifetime ------------------------------------------------------------------

    def run(self) -> None:
        """Connect, campaign, lead while elected; return when :attr:`stop_event` is set."""
        self.coord.on_session_change(lambda s: self.log.emit("session", state=s.value))
        self.coord.start()
        for cluster in self.topology.clusters:
            self.coord.watch_requests(cluster.name, self._wake.set)
        self.log.emit("started", datacenter=self.datacenter)
        try:
            while not self.stop_event.is_set():
                try:
                    self.coord.campaign(self._lead, self.stop_event)
                except OrchestratorError as exc:
                    self.log.emit("campaign-error", error=str(exc))
                    self.stop_event.wait(0.5)
        finally:
            # A rejoin must not start a server after the lab stopped it: cancel and wait.
            if self._cancel_rejoin is not None:
                self._cancel_rejoin()
            for thread in self._rejoin_threads:
                thread.join(timeout=10)
            self._prober.close()
            self._pool.shutdown(wait=False)
            self.coord.stop()
            self.log.emit("stopped")

    def _lead(self) -> None:
        self._lease = self.coord.bump_epoch()
        self._leading = True
        self._memory.clear()
        self._states.clear()
        self._leading_since = self.clock()
        self._elected_at = time.monotonic()
        self.log.emit("elected", epoch=self._lease.epoch)
        try:
            while not self.stop_event.is_set():
                started = time.monotonic()
                self._wake.clear()
                if not d.may_act(self.coord.session, self._leading, self._lease.epoch, self._lease.epoch):
                    if self.coord.session is d.SessionState.LOST:
                        self.log.emit("lease-lost", epoch=self._lease.epoch)
                        return
                    self.stop_event.wait(self._interval)  # suspended: act on nothing until sure
                    continue
                urgent = False
                for cluster in self.topology.clusters:
                    urgent |= self._cycle(cluster)
                if not urgent:
                    self._run_scheduled_drills()
                    if self._yield_leadership():
                        return
                pause = self._interval / 4 if urgent else self._interval
                self._wake.wait(max(0.0, pause - (time.monotonic() - started)))
        except LostLeadership as exc:
            self.log.emit("deposed", epoch=self._lease.epoch, reason=str(exc))
        except CoordinationUnavailable as exc:
            # The lease is in doubt: stop acting, re-campaign; a half-done operation is in ZooKeeper.
            self.log.emit("lease-in-doubt", epoch=self._lease.epoch, reason=str(exc))
        finally:
            self._leading = False

    # ---- one cycle ---------------------------------------------------------------------------

    def endpoints(self, cluster: Cluster) -> dict[str, pg.Endpoint]:
        return {m.name: member_endpoint(self.topology, cluster, m) for m in cluster.members}

    def probe(self, cluster: Cluster) -> ClusterSnapshot:
        endpoints = {**self.endpoints(cluster), **{
            name: ep for name, ep in self.probe_overrides.items() if name in {m.name for m in cluster.members}}}
        statuses = list(self._pool.map(self._prober.probe, endpoints.values()))
        return ClusterSnapshot(cluster.name, {s.name: s for s in statuses}, taken_at=self.clock())

    def _state(self, cluster: Cluster, snapshot: ClusterSnapshot) -> tuple[ClusterState, int]:
        assert self._lease is not None
        if cluster.name not in self._states:
            state, version = self.coord.read_state(cluster.name)
            if state is None:
                primaries = snapshot.primaries()
                if len(primaries) != 1:
                    # Never guess a primary: a wrong guess would fence the real one.
                    raise NoState(f"{cluster.name}: no recorded state and {len(primaries)} writable members "
                                  f"({', '.join(primaries) or 'none'}); waiting for exactly one")
                primary = primaries[0]
                state = ClusterState(cluster=cluster.name, primary=primary,
                                     timeline=snapshot.members[primary].timeline)
                version = self._write(state, -1)
                self.log.emit("state-created", cluster=cluster.name, primary=primary)
            self._states[cluster.name] = (state, version)
        state, version = self._states[cluster.name]
        paused = self.coord.is_paused(cluster.name)
        if paused != state.paused:
            state = state.model_copy(update={"paused": paused})
            version = self._write(state, version)
            self.log.emit("paused" if paused else "resumed", cluster=cluster.name)
            self._states[cluster.name] = (state, version)
        return state, version

    def _write(self, state: ClusterState, version: int) -> int:
        assert self._lease is not None
        stamped = state.model_copy(update={"leader": self.identity, "epoch": self._lease.epoch,
                                           "updated_at": self.clock()})
        new_version = self.coord.write_state(self._lease, stamped, version)
        self._states[state.cluster] = (stamped, new_version)
        return new_version

    def _cycle(self, cluster: Cluster) -> bool:
        """One probe-decide-act round; True when the next round should come sooner."""
        snapshot = self.probe(cluster)
        now = self.clock()
        memory = d.remember(self._memory.get(cluster.name, d.Memory()), snapshot, now)
        self._memory[cluster.name] = memory
        try:
            self._state(cluster, snapshot)
        except NoState as exc:
            if str(exc) != self._last_reason.get(cluster.name):
                self._last_reason[cluster.name] = str(exc)
                self.log.emit("no-state", cluster=cluster.name, reason=str(exc))
            return False
        if self._serve_requests(cluster, snapshot):
            return True  # an operation moved the primary: decide on a fresh probe, not this snapshot
        state, _ = self._states[cluster.name]
        with self._rejoin_lock:
            rejoining = frozenset(self._rejoining)
        decision = d.decide(snapshot, state, self._policies[cluster.name], memory, now, rejoining=rejoining)
        self._last_kind[cluster.name] = type(decision).__name__.lower()
        if decision.reason != self._last_reason.get(cluster.name):
            self._last_reason[cluster.name] = decision.reason
            self.log.emit("decision", cluster=cluster.name, kind=type(decision).__name__.lower(),
                          reason=decision.reason)
        try:
            self._execute(cluster, decision, snapshot, memory)
        except StateConflict as exc:
            self.log.emit("state-conflict", cluster=cluster.name, error=str(exc))
            self._states.pop(cluster.name, None)
        except DatabaseUnavailable as exc:
            self.log.emit("action-failed", cluster=cluster.name, error=str(exc))
        self._publish(cluster, snapshot)
        return isinstance(decision, d.Wait)

    def _execute(self, cluster: Cluster, decision: d.Decision, snapshot: ClusterSnapshot, memory: d.Memory) -> None:
        if isinstance(decision, d.Failover):
            first = memory.first_failure_at.get(decision.source)
            op = Operation(id=uuid.uuid4().hex[:12], kind=OperationKind.FAILOVER, source=decision.source,
                           target=decision.target, reason=decision.reason, started_at=self.clock(),
                           epoch=self._lease.epoch if self._lease else 0, first_failure_at=first)
            self.run_operation(cluster, op, snapshot)
        elif isinstance(decision, d.Resume):
            self.run_operation(cluster, decision.operation, snapshot)
        elif isinstance(decision, d.FenceStray):
            endpoint = self.endpoints(cluster)[decision.member]
            fenced = pg.fence(endpoint, self.creds, pg_ctl=f"{self.topology.postgres.bin_dir}/pg_ctl")
            self.log.emit("fenced-stray", cluster=cluster.name, member=decision.member, stopped=fenced)
        elif isinstance(decision, d.Repoint):
            self._repoint(cluster, decision.members)
        elif isinstance(decision, d.Rejoin):
            self._start_rejoin(cluster, decision.member)
        elif isinstance(decision, d.WidenQuorum):
            self._widen_quorum(cluster, decision.members)
        elif isinstance(decision, d.NarrowQuorum):
            self._narrow_quorum(cluster)

    # ---- the quorum's fallback members -------------------------------------------------------

    def _widen_quorum(self, cluster: Cluster, members: tuple[str, ...]) -> None:
        """Record the fallbacks first, then add them: a failover never misses a member that
        may hold an acknowledged commit."""
        state, version = self._states[cluster.name]
        self._write(state.model_copy(update={"synchronous_extra": members}), version)
        names = self._policies[cluster.name].standby_names(state.primary, members)
        endpoint = self.endpoints(cluster)[state.primary]
        pg.set_synchronous_names(endpoint, self.creds, names, conn=self._prober.connection(endpoint))
        self.log.emit("quorum-widened", cluster=cluster.name, members=list(members), setting=names)

    def _narrow_quorum(self, cluster: Cluster) -> None:
        """Drop the fallbacks, and forget them only once an in-region standby holds all WAL."""
        state, version = self._states[cluster.name]
        endpoint = self.endpoints(cluster)[state.primary]
        conn = self._prober.connection(endpoint)
        policy = self._policies[cluster.name]
        lsn = pg.set_synchronous_names(endpoint, self.creds, policy.standby_names(state.primary), conn=conn)
        in_region = [n for n in policy.quorum_for(state.primary)[0] if n != state.primary]
        if not pg.wait_flushed(endpoint, self.creds, in_region, lsn, timeout=3.0, conn=conn):
            self.log.emit("quorum-narrow-pending", cluster=cluster.name, reason="in-region standbys not caught up")
            return
        self._write(state.model_copy(update={"synchronous_extra": ()}), version)
        self.log.emit("quorum-narrowed", cluster=cluster.name, dropped=list(state.synchronous_extra))

    # ---- operations (failover, switchover) ---------------------------------------------------

    def run_operation(self, cluster: Cluster, op: Operation, snapshot: ClusterSnapshot) -> Operation:
        """Drive ``op`` from its recorded step to DONE, persisting progress; idempotent per step."""
        endpoints = self.endpoints(cluster)
        state, version = self._states[cluster.name]
        if op.step is Step.INTENT and not op.steps:
            op = op.advanced(Step.INTENT, op.started_at, op.reason)
            version = self._write(state.model_copy(update={"operation": op}), version)
            self.log.emit("failover-intent" if op.kind is OperationKind.FAILOVER else "switchover-intent",
                          cluster=cluster.name, operation=op.id, source=op.source, target=op.target, reason=op.reason)
        steps = [Step.FENCE, Step.PROMOTE, Step.REPOINT, Step.DONE]
        for step in steps[steps.index(op.step) + 1 if op.step in steps else 0:]:
            state, version = self._states[cluster.name]
            if step is Step.FENCE:
                try:
                    detail = self._fence_source(cluster, op, endpoints, snapshot)
                except SwitchoverAborted as exc:
                    self._write(state.model_copy(update={"operation": None}), version)
                    self.log.emit("switchover-aborted", cluster=cluster.name, operation=op.id, reason=str(exc))
                    raise
                op = op.advanced(Step.FENCE, self.clock(), detail)
                self.log.emit("fenced", cluster=cluster.name, operation=op.id, member=op.source, detail=detail)
            elif step is Step.PROMOTE:
                if op.kind is OperationKind.FAILOVER:  # a switchover's FENCE already waited for the WAL
                    self._catch_up(cluster, op, endpoints, snapshot)
                # Re-point the other standbys while the candidate promotes: with the same quorum
                # list everywhere, its first commit waits for one of them to attach.
                others = tuple(n for n in endpoints if n not in (op.target, op.source))
                slots = self._pool.submit(self._ensure_peer_slots, cluster, op.target)
                repointing = self._pool.submit(self._repoint, cluster, others, op.target)
                conn = self._prober.connection(endpoints[op.target])
                names = self._policies[cluster.name].standby_names(op.target)
                if pg.prepare_synchronous_names(endpoints[op.target], self.creds, names, conn=conn):
                    self.log.emit("quorum-prepared", cluster=cluster.name, member=op.target, setting=names)
                promoting = time.monotonic()
                timeline = pg.promote(endpoints[op.target], self.creds, conn=conn)
                self.log.emit("promote-timing", cluster=cluster.name, operation=op.id,
                              ms=round((time.monotonic() - promoting) * 1000, 1))
                if op.accept_data_loss and not self._policies[cluster.name].members[op.target].synchronous:
                    self._drop_sync_names(endpoints[op.target])
                op = op.advanced(Step.PROMOTE, self.clock(), f"timeline {timeline}")
                self.log.emit("promoted", cluster=cluster.name, operation=op.id, member=op.target, timeline=timeline)
                done = repointing.result()
                slots.result()
                op = op.advanced(Step.REPOINT, self.clock(), ", ".join(done))
                state = state.model_copy(update={"primary": op.target, "generation": state.generation + 1,
                                                 "timeline": timeline, "operation": op})
                version = self._write(state, version)
            elif step is Step.REPOINT and op.step is Step.PROMOTE:  # resuming one persisted right after promotion
                others = tuple(n for n in endpoints if n not in (op.target, op.source))
                done = self._repoint(cluster, others, upstream=op.target)
                op = op.advanced(Step.REPOINT, self.clock(), ", ".join(done))
            elif step is Step.DONE:
                op = op.advanced(Step.DONE, self.clock())
                self._write(d.finished(state, op, self.clock()), version)
                self.log.emit("done", cluster=cluster.name, operation=op.id, kind=op.kind.value,
                              steps={s.step.value: s.at for s in op.steps})
        return op

    def _catch_up(self, cluster: Cluster, op: Operation, endpoints: dict[str, pg.Endpoint],
                  snapshot: ClusterSnapshot) -> None:
        """Let the target first take any WAL a more advanced survivor holds.

        The snapshot that confirmed the failure is recent enough: with the primary gone, the
        survivors' received WAL no longer moves, so no second probe round on the fast path.
        """
        source = d.catch_up_source(snapshot, op.target, op.source)
        if source is None:
            return
        want = snapshot.members[source].wal_lsn or 0
        passfile = str(InstanceLayout(self.topology, cluster, cluster.member(source), self.root).passfile)
        conninfo = pg.primary_conninfo(endpoints[source], op.target, self.creds, passfile)
        target = endpoints[op.target]
        pg.repoint(target, self.creds, conninfo=conninfo, slot=cluster.member(op.target).slot_name,
                   conn=self._prober.connection(target))
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            status = self._prober.probe(target)
            if (status.wal_lsn or 0) >= want:
                self.log.emit("caught-up", cluster=cluster.name, member=op.target, source=source, lsn=want)
                return
            time.sleep(0.005)
        self.log.emit("catch-up-timeout", cluster=cluster.name, member=op.target, source=source, lsn=want)

    def _fence_source(self, cluster: Cluster, op: Operation, endpoints: dict[str, pg.Endpoint],
                      snapshot: ClusterSnapshot) -> str:
        pg_ctl = f"{self.topology.postgres.bin_dir}/pg_ctl"
        if op.kind is OperationKind.SWITCHOVER:
            return self._stop_for_switchover(cluster, op, endpoints, pg_ctl)
        status = snapshot.members.get(op.source)
        if status is not None and not status.reachable and op.first_failure_at is not None:
            # Detected as unreachable: it acknowledges nothing. If it comes back writable the
            # stray-primary rule stops it, and the generation bump lets an agent self-fence.
            return "unreachable at detection; nothing to stop"
        return "stopped" if pg.fence(endpoints[op.source], self.creds, pg_ctl=pg_ctl) else "unreachable"

    def _stop_for_switchover(self, cluster: Cluster, op: Operation, endpoints: dict[str, pg.Endpoint], pg_ctl: str
                             ) -> str:
        """Stop the old primary's writes; promote-ready once the target holds all of its WAL.

        The other standbys are moved to stream from the target *before* the old primary stops:
        its shutdown checkpoint then reaches no standby but the target, so none is left ahead of
        the new timeline (such a standby cannot attach, and the new primary's first commits
        waited for a rewind: seconds). The old primary's fast shutdown runs off this path.
        """
        source, target = endpoints[op.source], endpoints[op.target]
        slots = self._pool.submit(self._ensure_peer_slots, cluster, op.target)  # joined before the promotion
        others = tuple(n for n in endpoints if n not in (op.target, op.source))
        own = None
        conn = self._prober.connection(source)
        if conn is None:
            try:
                conn = own = pg.connect(source, self.creds, timeout=2)
            except DatabaseUnavailable:
                # Resumed after the old primary went down: it acknowledges nothing any more, so
                # the target takes whatever a survivor received beyond its own WAL.
                self._catch_up(cluster, op, endpoints, self.probe(cluster))
                slots.result()
                return "already stopped; caught up with the survivors"
        marks = [("start", time.monotonic())]
        try:
            # Re-pointing overlaps stopping writes: a commit meanwhile confirmed by none of the old
            # primary's quorum only waits until its session is terminated (never acknowledged).
            repointing = self._pool.submit(self._repoint, cluster, others, op.target)
            try:
                last = pg.stop_writes(source, self.creds, conn=conn)
            except DatabaseUnavailable as exc:
                self._resume_writes(source, conn)
                raise SwitchoverAborted(f"switchover aborted before promoting anything: {exc}") from exc
            marks.append(("writes-stopped", time.monotonic()))
            # Replayed counts too: a standby that just (re)started streaming reports as received only
            # its segment-aligned start until new WAL arrives, though it holds everything up to `last`.
            def holds_all() -> bool:
                status = self._prober.probe(target)
                return max(status.wal_lsn or 0, status.replay_lsn or 0) >= last

            if not poll_tight(holds_all, timeout=10, interval=0.002):
                # Nothing was promoted: the old primary takes writes again and the switchover ends.
                self._resume_writes(source, conn)
                raise SwitchoverAborted(f"switchover aborted: {op.target} did not receive the old primary's "
                                        f"WAL up to {last}; {op.source} accepts writes again")
            marks.append(("target-has-wal", time.monotonic()))
            repointing.result()
            if not poll_tight(lambda: not set(pg.attached_standbys(source, self.creds, conn=conn)) & set(others),
                              timeout=2, interval=0.002):
                self.log.emit("switchover-detach-timeout", cluster=cluster.name, members=list(others))
            marks.append(("others-detached", time.monotonic()))
            pg.stop_server(source, self.creds, pg_ctl=pg_ctl, conn=conn)
            slots.result()
            marks.append(("stop-issued", time.monotonic()))
        finally:
            if own is not None:
                own.close()
        self.log.emit("switchover-timing", cluster=cluster.name, operation=op.id,
                      ms={name: round((at - marks[0][1]) * 1000, 1) for name, at in marks[1:]})
        return f"stopped cleanly; {op.target} received WAL up to {last}"

    def _resume_writes(self, source: pg.Endpoint, conn: pg.Connection) -> None:
        try:
            pg.resume_writes(source, self.creds, conn=conn)
        except DatabaseUnavailable as exc:  # it went away: the stray-primary rule or a rejoin takes it from here
            self.log.emit("resume-writes-failed", member=source.name, error=str(exc))

    def _ensure_peer_slots(self, cluster: Cluster, member: str) -> None:
        """Slots for every peer on ``member`` about to lead: a freshly re-cloned member has none,
        and a standby re-pointed at a primary without its slot cannot attach."""
        peers = [m.slot_name for m in cluster.members if m.name != member]
        try:
            created = pg.ensure_slots(self.endpoints(cluster)[member], self.creds, peers)
        except DatabaseUnavailable as exc:
            self.log.emit("slots-failed", cluster=cluster.name, member=member, error=str(exc))
            return
        if created:
            self.log.emit("slots-created", cluster=cluster.name, member=member, slots=created)

    def _drop_sync_names(self, endpoint: pg.Endpoint) -> None:
        with pg.connect(endpoint, self.creds, timeout=2) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
            conn.execute("SELECT pg_reload_conf()")
        self.log.emit("sync-off", member=endpoint.name,
                      reason="promoted an asynchronous member with accepted data loss: no quorum to wait for")

    def _repoint(self, cluster: Cluster, members: tuple[str, ...], upstream: str | None = None) -> list[str]:
        state, _ = self._states[cluster.name]
        primary = upstream or state.primary
        endpoints = self.endpoints(cluster)
        passfile = str(InstanceLayout(self.topology, cluster, cluster.member(primary), self.root).passfile)

        def one(name: str) -> str | None:
            conninfo = pg.primary_conninfo(endpoints[primary], name, self.creds, passfile)
            try:
                pg.repoint(endpoints[name], self.creds, conninfo=conninfo, slot=cluster.member(name).slot_name,
                           conn=self._prober.connection(endpoints[name]))
            except DatabaseUnavailable as exc:
                self.log.emit("repoint-failed", cluster=cluster.name, member=name, error=str(exc))
                return None
            return name

        with ThreadPoolExecutor(max_workers=max(1, len(members)), thread_name_prefix="repoint") as pool:
            done = [name for name in pool.map(one, members) if name is not None]
        if done:
            self.log.emit("repointed", cluster=cluster.name, members=done, upstream=primary)
        return done

    # ---- rejoin (slow path, background) ------------------------------------------------------

    def _start_rejoin(self, cluster: Cluster, member: str) -> None:
        with self._rejoin_lock:
            if member in self._rejoining or self._rejoin_fn is None:
                return
            self._rejoining.add(member)
        state, _ = self._states[cluster.name]
        thread = threading.Thread(target=self._rejoin, args=(cluster, member, state.primary),
                                  name=f"rejoin-{member}", daemon=True)
        self._rejoin_threads = [t for t in self._rejoin_threads if t.is_alive()] + [thread]
        thread.start()

    def _rejoin(self, cluster: Cluster, member: str, primary: str) -> None:
        endpoints = self.endpoints(cluster)
        started = time.monotonic()
        self.log.emit("rejoin-start", cluster=cluster.name, member=member, upstream=primary)
        try:
            pg.reserve_slot(endpoints[primary], self.creds, cluster.member(member).slot_name)
            pg.checkpoint(endpoints[primary], self.creds)  # pg_rewind reads the new timeline from it
            layout = InstanceLayout(self.topology, cluster, cluster.member(member), self.root)
            assert self._rejoin_fn is not None
            self._rejoin_fn(layout, endpoints[primary])
            peers = [m.slot_name for m in cluster.members if m.name != member]
            pg.ensure_slots(endpoints[member], self.creds, peers)
            self.log.emit("rejoined", cluster=cluster.name, member=member, upstream=primary,
                          seconds=round(time.monotonic() - started, 3))
        except OrchestratorError as exc:
            self.log.emit("rejoin-failed", cluster=cluster.name, member=member, error=str(exc))
        finally:
            with self._rejoin_lock:
                self._rejoining.discard(member)

    def _yield_leadership(self) -> bool:
        """Hand leadership to a controller outside the primaries' data centres, when calm."""
        now = time.monotonic()
        if now - self._yield_checked < 2.0:
            return False
        self._yield_checked = now
        if now - self._elected_at < 5.0:
            return False  # let a new leader settle before it considers handing over
        primaries = frozenset(
            cluster.member(state.primary).datacenter
            for cluster in self.topology.clusters
            if (entry := self._states.get(cluster.name)) is not None and (state := entry[0]) is not None
        )
        with self._rejoin_lock:
            rejoining = bool(self._rejoining)
        # A rejoin in flight is not calm: the next leader would see the member down and start
        # a second rejoin of it, each stopping the server the other started.
        all_idle = not rejoining and all(self._last_kind.get(c.name) == "idle" for c in self.topology.clusters)
        others = [c.split(":")[0] for c in self.coord.contenders() if c != self.identity]
        if d.should_yield(self.datacenter, primaries, others, all_idle):
            self.log.emit("yield", reason=f"{self.datacenter} hosts the primary; handing leadership to a "
                                          "controller in another data centre")
            return True
        return False

    # ---- scheduled drills ----------------------------------------------------------------------

    def _run_scheduled_drills(self) -> None:
        """Start due drills as ``drctl drill run`` children (Locust's gevent stays out of here)."""
        now = self.clock()
        if self.drills_dir is None or now - self._schedule_checked < 5.0:
            return
        self._schedule_checked = now
        schedules = {}
        for path in list_drills(self.drills_dir):
            try:
                spec = load_drill(path, self.topology)
            except OrchestratorError:
                continue  # drctl drill list shows why
            if spec.schedule:
                schedules[spec.name] = spec.schedule
        if not schedules:
            return
        for name in due_drills(schedules, self.coord.schedule_last_runs(), now, self._leading_since):
            self.coord.set_schedule_last_run(name, now)  # first: a crash must not repeat the run
            reports = self.drills_dir.parent / "reports"
            pid = spawn([sys.executable, "-m", "orchestrator.cli", "drill", "run", name, "--lab-dir", str(self.root),
                         "--drills-dir", str(self.drills_dir), "--reports-dir", str(reports)],
                        log=self.root / "controller" / f"drill-{name}.log", cwd=self.drills_dir.parent)
            self.log.emit("scheduled-drill", drill=name, pid=pid)

    # ---- operator requests and status --------------------------------------------------------

    def _serve_requests(self, cluster: Cluster, snapshot: ClusterSnapshot) -> bool:
        """Answer pending operator requests; True when one ran an operation."""
        ran = False
        for request_id, request in self.coord.pending_requests(cluster.name):
            try:
                result = self._serve(cluster, request, snapshot)
            except OrchestratorError as exc:
                result = {"ok": False, "error": str(exc)}
            ran |= "operation" in result
            self.coord.answer_request(cluster.name, request_id, result)
            self.log.emit("request", cluster=cluster.name, id=request_id, request=request, result=result)
            if ran:
                break  # the snapshot is stale now; later requests wait for the next cycle
        return ran

    def _serve(self, cluster: Cluster, request: dict[str, Any], snapshot: ClusterSnapshot) -> dict[str, Any]:
        state, _ = self._states[cluster.name]
        policy = self._policies[cluster.name]
        kind, target = request.get("kind"), request.get("to")
        if state.operation is not None:
            return {"ok": False, "error": f"{state.operation.kind} {state.operation.id} is in progress; retry later"}
        if target == state.primary:
            return {"ok": False, "error": f"{target} is already the primary"}
        accept = bool(request.get("accept_data_loss"))
        if kind == "switchover":
            choice = d.plan_switchover(snapshot, policy, state.primary, str(target))
            op_kind = OperationKind.SWITCHOVER
        else:
            choice = d.choose_candidate(snapshot, policy, state.primary, target=target, allow_async=accept)
            op_kind = OperationKind.FAILOVER
        if isinstance(choice, d.Refusal):
            return {"ok": False, "error": choice.reason}
        if kind == "failover":
            at_risk = max((s.wal_lsn or 0) for s in snapshot.members.values()) - choice.wal_lsn
            if at_risk > 0 and not accept:
                return {"ok": False, "error": f"{target} is {at_risk} bytes of WAL behind; "
                                              "pass --accept-data-loss to promote it anyway"}
        elif kind != "switchover":
            return {"ok": False, "error": f"unknown request kind {kind!r}"}
        op = Operation(id=uuid.uuid4().hex[:12], kind=op_kind, source=state.primary, target=choice.name,
                       reason=f"operator {kind} to {choice.name}", started_at=self.clock(),
                       accept_data_loss=accept, epoch=self._lease.epoch if self._lease else 0)
        started = time.monotonic()
        done = self.run_operation(cluster, op, snapshot)
        if op_kind is OperationKind.SWITCHOVER:
            self._start_rejoin(cluster, op.source)
        return {"ok": True, "operation": done.id, "primary": done.target,
                "seconds": round(time.monotonic() - started, 3),
                "steps": {s.step.value: s.at for s in done.steps}}

    def _publish(self, cluster: Cluster, snapshot: ClusterSnapshot) -> None:
        """Member health and WAL positions for ``drctl status``, at most once a second."""
        now = time.monotonic()
        if now - self._last_publish.get(cluster.name, 0.0) < 1.0:
            return
        self._last_publish[cluster.name] = now
        state, version = self._states[cluster.name]
        primary_lsn = snapshot.members[state.primary].wal_lsn if state.primary in snapshot.members else None
        members = {
            name: MemberRecord(health=s.health, role=s.role, timeline=s.timeline, wal_lsn=s.wal_lsn,
                               streaming=s.streaming,
                               lag_bytes=(primary_lsn - s.wal_lsn) if primary_lsn and s.wal_lsn else None)
            for name, s in snapshot.members.items()
        }
        try:
            self._write(state.model_copy(update={"members": members}), version)
        except StateConflict:
            self._states.pop(cluster.name, None)
