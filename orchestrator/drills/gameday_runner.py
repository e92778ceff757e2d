"""Running a game day against the lab: one sustained Locust load, the faults of several drills.

``drctl drill gameday`` calls :meth:`GameDayRunner.run`. The faults are those of the named
drill files (validated against the topology like any drill), injected at the times
:func:`orchestrator.drills.gameday.schedule` places them, each after the cluster is back in
its steady state, and rolled back (faulted services restarted, members rejoined) before the
next; a switchover whose target is already the primary goes to another synchronous member.
The drill lock keeps other drills out for the whole window. The figures come from
:func:`orchestrator.drills.gameday.analyse`; the report from :mod:`orchestrator.drills.gameday_report`.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from orchestrator.coordination import Coordinator
from orchestrator.drills import bank
from orchestrator.drills.faults import current_primary, inject
from orchestrator.drills.gameday import GameDay, Injection, Planned, analyse, schedule
from orchestrator.drills.journal import read_journal
from orchestrator.drills.load import master_port, start_load
from orchestrator.drills.measure import ids_to_look_up
from orchestrator.drills.runner import INITIAL_BALANCE, DrillRunner
from orchestrator.drills.spec import DrillSpec, Fault, Switchover
from orchestrator.errors import DrillFileError, LabError, OrchestratorError
from orchestrator.lab import Lab
from orchestrator.topology import Cluster

Progress = Callable[[str], None]
_SLACK_S = 900.0   # how long the load may outlive the window while faults wait for the steady state


class Watcher(Protocol):
    """Who follows the window live (:class:`orchestrator.drills.live.LiveView`)."""

    def load_started(self, journal_files: Callable[[], list[Path]], at: float) -> None: ...

    def fault_injected(self, name: str, at: float) -> None: ...


class GameDayRunner:
    def __init__(self, lab: Lab, drills_dir: Path, *, progress: Progress = lambda _: None,
                 watcher: Watcher | None = None) -> None:
        self.lab = lab
        self.drills = DrillRunner(lab, drills_dir, Path(tempfile.gettempdir()), progress=progress)
        self.progress = progress
        self.watcher = watcher

    def load(self, names: list[str]) -> list[DrillSpec]:
        """:raises DrillFileError: an unknown drill, a bad file, or drills of different clusters."""
        specs = [self.drills.load(name) for name in names]
        clusters = {s.cluster for s in specs}
        if len(clusters) > 1:
            raise DrillFileError(f"--faults: the drills name different clusters ({', '.join(sorted(clusters))}); "
                                 "a game day runs against one")
        return specs

    def run(self, names: list[str], *, duration_s: float, seed: int, users: int, user_rate: float,
            accounts: int = 100, recovery_s: float = 30.0, workers: int = 0) -> GameDay:
        specs = self.load(names)
        plan = schedule(names, duration_s=duration_s, seed=seed, recovery_s=recovery_s)
        cluster = self.lab.topology.cluster(specs[0].cluster)
        coord = Coordinator(self.lab.topology.zookeeper_hosts(), self.lab.topology.name,
                            identity=f"gameday:{socket.gethostname()}:{os.getpid()}")
        coord.start(timeout=10)
        try:
            coord.acquire_drill_lock(f"game day pid {os.getpid()} since {time.strftime('%H:%M:%S')}")
            try:
                return self._run(specs, plan, cluster, coord, duration_s=duration_s, seed=seed, users=users,
                                 user_rate=user_rate, accounts=accounts, recovery_s=recovery_s, workers=workers)
            finally:
                coord.release_drill_lock()
        finally:
            coord.stop()

    def _run(self, specs: list[DrillSpec], plan: tuple[Planned, ...], cluster: Cluster, coord: Coordinator, *,
             duration_s: float, seed: int, users: int, user_rate: float, accounts: int, recovery_s: float,
             workers: int) -> GameDay:
        by_name = {s.name: s for s in specs}
        self.progress("checking steady state")
        self.drills._steady_state(specs[0], cluster, timeout=90)
        conninfo = self.lab.app_connection_string(cluster)
        bank.setup(conninfo, accounts, INITIAL_BALANCE)
        work = Path(tempfile.mkdtemp(prefix="gameday-"))
        self.progress(f"starting load: {users} users for {duration_s:.0f}s; faults at "
                      + ", ".join(f"+{p.offset_s:.0f}s {p.drill}" for p in plan))
        started = time.time()
        # The load outlives the window: a fault delayed by a slow rejoin is still observed for
        # recovery_s after it; the runner stops the load itself (interrupted attempts are not counted).
        load = start_load(conninfo, work / "journal", users, float(max(users, 1)), duration_s + _SLACK_S,
                          accounts, user_rate, work, workers=workers,
                          master_port=master_port(self.lab.topology) if workers else None)
        if self.watcher is not None:
            self.watcher.load_started(load.journal_files, started)
        injections: list[Injection] = []
        aborted: str | None = None
        targets = cluster.targets
        try:
            # A busy machine starts Locust seconds late: the schedule counts from when writes flow.
            flowing = self.drills._wait_for_load(specs[0], load, deadline=time.time() + 120)
            for planned in plan:
                spec = by_name[planned.drill]
                time.sleep(max(0.0, flowing + planned.offset_s - time.time()))
                if not load.running:
                    raise OrchestratorError("the load stopped before every fault was injected")
                self.drills._steady_state(spec, cluster, timeout=120)
                old = current_primary(coord, cluster)
                primary_dc = cluster.member(old).datacenter
                fault = self._retarget(spec.fault, cluster, old)
                self.progress(f"injecting {spec.name}: {fault.kind}")
                injected = inject(self.lab, coord, cluster, fault)
                if self.watcher is not None:
                    self.watcher.fault_injected(spec.name, injected.at)
                expects = spec.expects_new_primary(primary_dc)
                injections.append(Injection(drill=spec.name, kind=str(fault.kind), description=injected.description,
                                            at=injected.at, expect_new_primary=expects))
                self._recover(spec, cluster, coord, old, expects, injected.at,
                              spec.abort_after_s(spec.effective_targets(cluster)))
            last = injections[-1].at if injections else flowing
            while time.time() < max(flowing + duration_s, last + recovery_s):
                if not load.running:
                    raise OrchestratorError(f"the load generator stopped early; see {load.log}")
                time.sleep(0.2)
        except OrchestratorError as exc:
            aborted = f"game day stopped: {exc}"
        finally:
            finished = time.time()   # the window ends when the runner stops the load, not when Locust has exited
            if load.running:
                load.stop()
        self.progress("reading the journal and checking the invariants")
        self.lab.restart_services()
        self.drills._steady_state(specs[0], cluster, timeout=120)
        records = read_journal(load.journal_files())
        try:
            stats = load.stats()
            locust_counts: tuple[int, int] | None = (stats.requests, stats.failures)
        except LabError:
            locust_counts = None
        return analyse(
            records, injections, cluster=cluster.name, seed=seed, started_at=started, window_end=finished,
            present_ids=bank.present_transfers(conninfo, ids_to_look_up(records)),
            expected_total=accounts * INITIAL_BALANCE, observed_total=bank.total_balance(conninfo),
            duplicates=bank.duplicate_transfers(conninfo), availability_target=targets.availability_percent,
            p99_objective_ms=cluster.slo.write_latency_p99_ms, rto_target=targets.rto_seconds, aborted=aborted,
            locust_counts=locust_counts,
        )

    def _retarget(self, fault: Fault, cluster: Cluster, primary: str) -> Fault:
        """A switchover to the member that is already primary goes to another synchronous member instead."""
        if not isinstance(fault, Switchover) or fault.to != primary:
            return fault
        other = next(m for m in self.lab.topology.synchronous_members(cluster) if m not in (primary,))
        return fault.model_copy(update={"to": other})

    def _recover(self, spec: DrillSpec, cluster: Cluster, coord: Coordinator, old: str, expects: bool,
                 at: float, abort_after: float) -> None:
        """Wait for the new primary (when the fault moves it), then restart what the fault stopped.

        :raises OrchestratorError: no new primary within ``abort_after`` seconds.
        """
        while expects:
            try:
                if current_primary(coord, cluster) != old:
                    break
            except OrchestratorError:
                pass   # the fault may have taken our ZooKeeper server: kazoo moves to another; keep asking
            if time.time() - at > abort_after:
                raise OrchestratorError(f"{spec.name}: no new primary within {abort_after:.0f}s")
            time.sleep(0.2)
        if spec.rollback.restart_faulted:
            self.progress(f"{spec.name}: restarting faulted services")
            self.lab.restart_services()
