"""The controller process: one per data centre; the elected leader watches and acts.

This module is the process shell: connect to ZooKeeper, campaign, and while elected run
one leadership :class:`~orchestrator.control.term.Term` — build the parts of
:mod:`orchestrator.control` for it (state store, one cycle per cluster, rejoins, operator
requests, status publisher), run their rounds, hand leadership over when calm, start
scheduled drills — and end the term (cancelling and joining every thread it started)
when leadership is lost, yielded or the process stops.

Each round starts with a lease check that reads the epoch from ZooKeeper; every side
effect inside the round checks it again right before it acts (see ``control/term.py``).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import breakglass
from orchestrator import decisions as d
from orchestrator import postgres as pg
from orchestrator.alerts.dispatcher import AlertDispatcher
from orchestrator.audit import AuditLog, AutomaticActions
from orchestrator.control.agents import ZooKeeperAgents
from orchestrator.control.archive_watch import ArchiveWatch
from orchestrator.control.backup_schedule import BackupJob, BackupScheduler
from orchestrator.control.context import ClusterContext
from orchestrator.control.cycle import ClusterCycle
from orchestrator.control.database import PostgresCluster
from orchestrator.control.operations import SwitchoverAborted
from orchestrator.control.publisher import Publisher
from orchestrator.control.rejoin import RejoinRunner, Rejoins
from orchestrator.control.requests import Requests
from orchestrator.control.store import NoState, StateStore
from orchestrator.control.term import LeaseInDoubt, Term
from orchestrator.coordination import Coordinator
from orchestrator.drills.spec import list_drills, load_drill
from orchestrator.errors import CoordinationUnavailable, LostLeadership, OrchestratorError
from orchestrator.events import EventLog
from orchestrator.metrics import Cached, ControllerMetrics
from orchestrator.operator import reports_dir, spawn_drill
from orchestrator.pgserver import InstanceLayout
from orchestrator.processes import spawn
from orchestrator.schedule import due_drills
from orchestrator.topology import Topology
from orchestrator.waiting import poll

if TYPE_CHECKING:
    from orchestrator.api.server import ApiServer

__all__ = ["Controller", "EventLog", "NoState", "SwitchoverAborted"]

# The lab's rejoin: rewind/re-clone ``layout`` from ``upstream``; stops early once ``cancelled()``.
LayoutRejoin = Callable[[InstanceLayout, pg.Endpoint, Callable[[], bool]], None]


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
        rejoin: LayoutRejoin | None = None,
        drills_dir: Path | None = None,
        cancel_rejoin: Callable[[], None] | None = None,
        zk_hosts: str | None = None,
        serve_api: bool = False,
    ) -> None:
        self.topology = topology
        self.datacenter = datacenter
        self.root = lab_root
        self.clock = clock
        self.identity = f"{datacenter}:{uuid.uuid4().hex[:8]}"
        self.log = log or EventLog(sys.stdout, controller=self.identity)
        self.audit = AuditLog(lab_root / "audit")
        self._audited = AutomaticActions(self.audit, self.identity, self.log)
        self.log.subscribe(self._audited)
        self._alerts: AlertDispatcher | None = None
        if topology.alerts is not None:   # one per controller; only the leader emits cluster events
            self._alerts = AlertDispatcher.from_spec(topology.alerts, lab_root, emit=self.log.emit, audit=self.audit,
                                                     who=f"controller {self.identity}")
            self.log.subscribe(self._alerts)
        self._drills_seen: set[str] | None = None   # drill runs the leader has looked at this term
        self._drills_checked = 0.0
        self._serve_api = serve_api and topology.api is not None
        self._api: ApiServer | None = None
        self.coord = Coordinator(zk_hosts or topology.zookeeper_hosts(), topology.name, identity=self.identity,
                                 session_timeout=topology.zookeeper.session_timeout_ms / 1000)
        # /metrics on the API: counters from this log's events, gauges read at each scrape.
        self.metrics = ControllerMetrics(topology, read_state=lambda name: self.coord.read_state(name)[0],
                                         reports_dir=reports_dir(drills_dir) if drills_dir is not None else None,
                                         identity=self.identity, clock=clock,
                                         last_verified=Cached(self._last_verified, ttl=300.0))
        self.log.subscribe(self.metrics.on_event)
        self.stop_event = threading.Event()
        self._wake = threading.Event()  # an operator request arrived: cycle now
        self._cancel_rejoin = cancel_rejoin
        self.drills_dir = drills_dir
        self._interval = topology.controller.probe_interval_ms / 1000
        self._prober = pg.Prober(creds, timeout=topology.controller.probe_timeout_ms / 1000)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        # Fault hook for tests and drills: probe these members at another endpoint.
        self.probe_overrides: dict[str, pg.Endpoint] = {}
        self._databases = {c.name: PostgresCluster(topology, c, lab_root, creds, prober=self._prober, pool=self._pool,
                                                   clock=clock, probe_overrides=self.probe_overrides)
                           for c in topology.clusters}
        self._agents = ZooKeeperAgents(self.coord)
        self._rejoin_runner = self._runner(rejoin) if rejoin is not None else None
        self._term: Term | None = None
        self._leading_since = 0.0
        self._schedule_checked = 0.0
        self._yield_checked = 0.0
        self._elected_at = 0.0
        self._creds = creds
        self._archiver_checked = 0.0
        self._archive_watch = ArchiveWatch(self.log.emit, self.metrics.note_archiver)
        self._backups = BackupScheduler(topology, self.coord, self._spawn_backup, self.log.emit)

    def _spawn_backup(self, job: BackupJob) -> int:
        """A scheduled backup or verification as a ``drctl backup`` child; output to ``<lab>/controller/``."""
        return spawn(job.argv(self.root), log=self.root / "controller" / f"{job.kind.value}-{job.cluster}.log",
                     cwd=self.root)

    def _runner(self, rejoin: LayoutRejoin) -> RejoinRunner:
        def run(cluster: str, member: str, upstream: str, cancelled: Callable[[], bool]) -> None:
            db = self._databases[cluster]
            rejoin(db.layout(member), db.endpoints[upstream], cancelled)
        return run

    # ---- process lifetime ------------------------------------------------------------------

    def run(self) -> None:
        """Connect, campaign, lead while elected; return when :attr:`stop_event` is set."""
        self.coord.on_session_change(self._session_changed)
        self.coord.start()
        for cluster in self.topology.clusters:
            self.coord.watch_requests(cluster.name, self._wake.set)
        self.log.emit("started", datacenter=self.datacenter)
        api = threading.Thread(target=self._start_api, name="api-start", daemon=True)
        if self._serve_api:   # in the background: importing and binding it must not delay the campaign
            api.start()
        try:
            self._defer_campaign()
            while not self.stop_event.is_set():
                try:
                    self.coord.campaign(self._lead, self.stop_event)
                except OrchestratorError as exc:
                    self.log.emit("campaign-error", error=str(exc))
                    self.stop_event.wait(0.5)
        finally:
            if api.is_alive():
                api.join(timeout=30)
            if self._api is not None:
                self._api.stop()
            # A rejoin must not start a server after the lab stopped it: cancel and wait.
            if self._cancel_rejoin is not None:
                self._cancel_rejoin()
            if self._term is not None:
                self._term.end("controller stopped")
            self._prober.close()
            self._pool.shutdown(wait=False)
            self.coord.stop()
            self.log.emit("stopped")
            self._audited.close()
            if self._alerts is not None:
                self._alerts.close()

    def _start_api(self) -> None:
        """The operator REST API on this data centre's ``api:<dc>`` port; failing to serve it stops nothing else."""
        from orchestrator.api.server import serve

        try:
            server = serve(self.topology, self.datacenter, self.root, self.coord, served_by=self.identity,
                           emit=self.log.emit, drills_dir=self.drills_dir, audit=self.audit, metrics=self.metrics)
        except (OrchestratorError, OSError) as exc:
            self.log.emit("api-failed", error=str(exc))
            return
        self._api = server
        self.log.emit("api-serving", address=server.host, port=server.port)

    def _start_drill(self, name: str) -> dict[str, Any]:
        """A ``drill`` request (the REST API): start it the way a scheduled drill starts."""
        if self.drills_dir is None:
            return {"ok": False, "error": "the leader has no drills directory"}
        paths = {p.stem: p for p in list_drills(self.drills_dir)}
        if name not in paths:
            return {"ok": False, "error": f"no drill {name!r}; drills are {', '.join(sorted(paths)) or 'none'}"}
        try:
            load_drill(paths[name], self.topology)
        except OrchestratorError as exc:
            return {"ok": False, "error": str(exc)}
        pid = spawn_drill(self.root, self.drills_dir, name)
        self.log.emit("drill-started", drill=name, pid=pid, by="request")
        return {"ok": True, "drill": name, "pid": pid, "started_by": self.identity}

    def _defer_campaign(self) -> None:
        """At start, a controller in a primary's data centre lets one from elsewhere lead first.

        The disaster that takes the primary's data centre must not take the decider with it
        (the survivors would first wait for the dead leader's session to expire), and that
        holds from the first round after start-up, not only once a calm leader hands over.
        Waits at most two session timeouts: alone, it leads.
        """
        primaries = self._primary_datacenters()
        if self.datacenter not in primaries:
            return
        grace = 2 * self.topology.zookeeper.session_timeout_ms / 1000

        def someone_else_can_lead() -> bool:
            if self.stop_event.is_set():
                return True
            try:
                others = [c.split(":")[0] for c in self.coord.contenders() if c != self.identity]
            except OrchestratorError:
                return False
            return d.should_yield(self.datacenter, primaries, others, all_idle=True)

        if poll(someone_else_can_lead, timeout=grace, interval=0.05):
            self.log.emit("campaign-deferred", reason=f"{self.datacenter} hosts a primary; a controller "
                                                      "elsewhere leads first")

    def _primary_datacenters(self) -> frozenset[str]:
        """Where each cluster's primary is: as recorded in ZooKeeper, else as the topology starts it."""
        found = set()
        for cluster in self.topology.clusters:
            try:
                state, _ = self.coord.read_state(cluster.name)
            except OrchestratorError:
                state = None
            name = state.primary if state is not None else cluster.initial_primary.name
            found.add(cluster.member(name).datacenter)
        return frozenset(found)

    def _session_changed(self, session: d.SessionState) -> None:
        self.log.emit("session", state=session.value)
        term = self._term
        if term is not None:
            term.session_changed(session)  # an expired session ends the term at once

    # ---- one term ------------------------------------------------------------------------------

    def _lead(self) -> None:
        term = Term(self.coord, self.coord.bump_epoch(), log=self.log)
        self._term = term
        self._leading_since = self.clock()
        self._elected_at = time.monotonic()
        store = StateStore(self.coord, term, self.identity, clock=self.clock, log=self.log)
        rejoins = Rejoins(self._rejoin_runner)
        requests, publisher = Requests(self.coord, rejoins, self._start_drill), Publisher()
        cycles = [
            ClusterCycle(ClusterContext(c.name, term, self._databases[c.name], store,
                                        d.Policy.from_topology(self.topology, c), self.log, self.clock, self._pool,
                                        agents=self._agents),
                         rejoins, requests, publisher, break_glass=breakglass.reader(self.root))
            for c in self.topology.clusters
        ]
        self._drills_seen = None
        self._archive_watch = ArchiveWatch(self.log.emit, self.metrics.note_archiver)   # a new term announces afresh
        self.log.emit("elected", epoch=term.epoch)
        try:
            while not self.stop_event.is_set():
                started = time.monotonic()
                self._wake.clear()
                try:
                    term.confirm("start a round")
                except LeaseInDoubt:
                    self.stop_event.wait(self._interval)  # suspended: act on nothing until sure
                    continue
                urgent = False
                try:
                    for cycle in cycles:
                        urgent |= cycle.run_once()
                except LeaseInDoubt as exc:
                    # A guard could not confirm the lease mid-round (a ZooKeeper server blip):
                    # nothing was done; the next round starts with a lease check, and a half-done
                    # operation resumes from its recorded step.
                    self.log.emit("lease-in-doubt", epoch=term.epoch, reason=str(exc))
                    self.stop_event.wait(self._interval)
                    continue
                if not urgent:
                    self._run_scheduled_drills(term)
                    self._backups.run_due(self.clock(), self._leading_since, term.guard)
                    self._note_failed_drills()
                    self._watch_archiving(store)
                    if self._yield_leadership(cycles, store, rejoins):
                        return
                pause = self._interval / 4 if urgent else self._interval
                self._wake.wait(max(0.0, pause - (time.monotonic() - started)))
        except LostLeadership as exc:
            self.log.emit("deposed", epoch=term.epoch, reason=str(exc))
        except CoordinationUnavailable as exc:
            # The lease is in doubt: stop acting, re-campaign; a half-done operation is in ZooKeeper.
            self.log.emit("lease-in-doubt", epoch=term.epoch, reason=str(exc))
        finally:
            term.end("leadership ended")

    def _yield_leadership(self, cycles: list[ClusterCycle], store: StateStore, rejoins: Rejoins) -> bool:
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
            if (state := store.cached(cluster.name)) is not None
        )
        # A rejoin in flight is not calm: the next leader would see the member down and start
        # a second rejoin of it, each stopping the server the other started.
        all_idle = not rejoins.rejoining() and all(c.last_kind == "idle" for c in cycles)
        others = [c.split(":")[0] for c in self.coord.contenders() if c != self.identity]
        if d.should_yield(self.datacenter, primaries, others, all_idle):
            self.log.emit("yield", reason=f"{self.datacenter} hosts the primary; handing leadership to a "
                                          "controller in another data centre")
            return True
        return False

    def _note_failed_drills(self) -> None:
        """Emit ``drill-failed`` for each failed run recorded in ZooKeeper since this term began.

        The runs present at the term's first look are the baseline (a new leader does not
        re-announce old failures); a run that ends during a leadership change may go unnoticed.
        """
        now = time.monotonic()
        if self._alerts is None or now - self._drills_checked < 2.0:
            return
        self._drills_checked = now
        try:
            runs = self.coord.drill_history()
        except OrchestratorError:
            return
        if self._drills_seen is None:
            self._drills_seen = {str(r.get("run")) for r in runs}
            return
        for run in runs:
            name = str(run.get("run"))
            if name in self._drills_seen:
                continue
            self._drills_seen.add(name)
            if run.get("passed") is False:
                self.log.emit("drill-failed", run=name, drill=run.get("drill"), cluster=run.get("cluster", "-"),
                              rto_seconds=run.get("rto_seconds"), lost=run.get("lost"))

    def _watch_archiving(self, store: StateStore) -> None:
        """Every 10 s: read the primary's ``pg_stat_archiver`` (clusters with backups) for /metrics, and
        emit ``archive-failed`` once per failure streak (:class:`~orchestrator.control.archive_watch.ArchiveWatch`).
        """
        now = time.monotonic()
        if now - self._archiver_checked < 10.0:
            return
        self._archiver_checked = now
        for cluster in self.topology.clusters:
            state = store.cached(cluster.name)
            if cluster.backup is None or state is None:
                continue
            endpoint = self._databases[cluster.name].endpoints[state.primary]
            conn = self._prober.connection(endpoint)   # only on the open probe connection: never a new login
            try:                                       # to a primary the probe could not reach
                stats = pg.archiver_stats(endpoint, self._creds, conn=conn) if conn is not None else None
            except OrchestratorError:
                stats = None
            self._archive_watch.observe(cluster.name, state.primary, stats, cluster.backup.archive_stall_alert_s)

    def _last_verified(self, cluster: str) -> float | None:
        """The newest verified restore of ``cluster``'s backups, read from its store (for /metrics, cached)."""
        from orchestrator.backup.service import BackupService

        return BackupService(self.topology, cluster, self.root, self._creds).last_verified_at()

    def _run_scheduled_drills(self, term: Term) -> None:
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
            with term.guard(f"start scheduled drill {name}"):
                self.coord.set_schedule_last_run(name, now)  # first: a crash must not repeat the run
            pid = spawn_drill(self.root, self.drills_dir, name)
            self.log.emit("scheduled-drill", drill=name, pid=pid)
