"""Running one drill end to end: steady state, load, fault, observation, rollback, report.

Called by ``drctl drill run`` (and by the leading controller for scheduled drills, through
the same command in a child process, so Locust's gevent never enters a controller). The
drill file is validated against the topology before anything runs; the ZooKeeper drill
lock makes a second concurrent drill fail at once with :class:`DrillLocked`.
"""

from __future__ import annotations

import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import __version__, haproxy
from orchestrator import decisions as d
from orchestrator import postgres as pg
from orchestrator.coordination import Coordinator
from orchestrator.drills import bank, stalls
from orchestrator.drills.backup_faults import BackupInjected
from orchestrator.drills.faults import Injected, inject
from orchestrator.drills.gameday_report import capacity_paced
from orchestrator.drills.journal import JournalRecord, Outcome, read_journal
from orchestrator.drills.load import LoadHandle, master_port, start_load
from orchestrator.drills.measure import Promotion, TimelineEvent, ids_to_look_up, judge, measure, promotions
from orchestrator.drills.partitions import fault_window_events, require_isolated
from orchestrator.drills.report import DrillReport, write_report
from orchestrator.drills.spec import (
    DrillSpec,
    Route,
    StallLeaderController,
    StallPrimary,
    StallZooKeeper,
    Switchover,
    find_drill,
    load_drill,
)
from orchestrator.errors import DatabaseUnavailable, DrillFileError, LabError, OrchestratorError
from orchestrator.lab import Lab
from orchestrator.state import ClusterSnapshot, Role
from orchestrator.topology import Cluster
from orchestrator.waiting import poll

INITIAL_BALANCE = 1_000


def _read_partial(paths: list[Path]) -> list[JournalRecord]:
    """The journal so far, while the load still writes it (a half-written last line is skipped)."""
    records = []
    for path in paths:
        for line in path.read_text().splitlines():
            try:
                records.append(JournalRecord.model_validate_json(line))
            except ValueError:
                continue
    return records
STEP_NAMES = {"intent": "detected", "fence": "fenced", "promote": "promoted", "repoint": "repointed",
              "done": "done"}

Progress = Callable[[str], None]


class DrillRunner:
    def __init__(self, lab: Lab, drills_dir: Path, reports_dir: Path, *, progress: Progress = lambda _: None,
                 route: Route | None = None) -> None:
        self.lab = lab
        # Overrides each drill file's route: (drctl drill run --route).
        self.drills_dir = drills_dir
        self.reports_dir = reports_dir
        self.progress = progress
        self.route = route
        # Per drill: the capacity run its load was paced from (load.capacity_fraction), for the report.
        self.load_basis: dict[str, dict[str, object]] = {}

    def load(self, name: str) -> DrillSpec:
        """:raises DrillFileError: unknown drill, or a file that contradicts the topology."""
        spec = load_drill(find_drill(self.drills_dir, name), self.lab.topology)
        self.lab.topology.cluster(spec.cluster).require_drills_allowed()
        if self.route is not None and self.route is not spec.route:
            if self.route is Route.HAPROXY and self.lab.topology.health is None:
                raise DrillFileError("--route: haproxy needs the topology's health section; add 'health: {}' "
                                     "to the topology or use --route libpq")
            spec = spec.model_copy(update={"route": self.route})
        if spec.load.capacity_fraction is not None:
            users, rate, basis = capacity_paced(self.reports_dir, spec.cluster, spec.load.capacity_fraction)
            self.load_basis[spec.name] = basis
            spec = spec.model_copy(update={"load": spec.load.model_copy(
                update={"users": users, "user_rate": rate, "spawn_rate": float(users)})})
        return spec

    def run(self, name: str) -> tuple[DrillReport, Path]:
        spec = self.load(name)
        require_isolated(self.lab, spec.fault)   # a link fault on a loopback lab: refused before anything runs
        cluster = self.lab.topology.cluster(spec.cluster)
        coord = Coordinator(self.lab.topology.zookeeper_hosts(), self.lab.topology.name,
                            identity=f"drill:{socket.gethostname()}:{os.getpid()}")
        coord.start(timeout=10)
        try:
            coord.acquire_drill_lock(f"{spec.name} pid {os.getpid()} since {time.strftime('%H:%M:%S')}")
            try:
                report, path = self._run(spec, cluster, coord)
            finally:
                coord.release_drill_lock()
            coord.record_drill(path.name, {"run": path.name, "drill": spec.name, "cluster": spec.cluster,
                                           "passed": report.verdict.passed,
                                           "rto_seconds": report.measurement.outage.rto_seconds,
                                           "lost": report.measurement.loss.lost, "path": str(path)})
            return report, path
        finally:
            coord.stop()

    # ---- phases --------------------------------------------------------------------------------

    def _lookup_when_writable(self, conninfo: str, ids: frozenset[str], timeout: float = 120.0) -> set[str]:
        """The acknowledged transfers the cluster holds, read on its writable primary, waiting for one
        (a rollback that left the cluster between primaries, a rejoin still running).

        :raises DatabaseUnavailable: no writable primary within ``timeout`` (the error names the last failure).
        """
        found: set[str] = set()
        last: list[DatabaseUnavailable] = []

        def looked_up() -> bool:
            try:
                found.update(bank.present_transfers(conninfo, ids))
            except DatabaseUnavailable as exc:
                last[:] = [exc]
                return False
            return True

        if not poll(looked_up, timeout=timeout, interval=0.5):
            self.progress(f"no writable primary to measure against after {timeout:.0f}s")
            raise last[0]
        return found

    def _run(self, spec: DrillSpec, cluster: Cluster, coord: Coordinator) -> tuple[DrillReport, Path]:
        self.progress("checking steady state")
        self._steady_state(spec, cluster, timeout=90)
        self._preflight(spec, cluster, coord)
        conninfo = self.lab.app_connection_string(cluster)
        bank.setup(conninfo, spec.load.accounts, INITIAL_BALANCE)
        load_conninfo = conninfo
        if spec.route is Route.HAPROXY:   # only the clients go through HAProxy; the checks read libpq's way
            self.progress("routing the load through HAProxy's read-write port")
            haproxy.start(self.lab.topology, self.lab.root)
            load_conninfo = haproxy.conninfo(self.lab.topology, cluster.name, self.lab.credentials)
        state, _ = coord.read_state(cluster.name)
        primary_dc = cluster.member(state.primary).datacenter if state else cluster.initial_primary.datacenter
        work = Path(tempfile.mkdtemp(prefix=f"drill-{spec.name}-"))
        self.progress(f"starting load: {spec.load.users} users for {spec.load.duration_s:.0f}s")
        started = time.time()
        load = start_load(load_conninfo, work / "journal", spec.load.users, spec.load.spawn_rate, spec.load.duration_s,
                          spec.load.accounts, spec.load.user_rate or 0.0, work, workers=spec.load.workers,
                          master_port=master_port(self.lab.topology) if spec.load.workers else None)
        aborted: str | None = None
        injected: Injected | None = None
        targets = spec.effective_targets(cluster)
        try:
            # A busy machine can start the load seconds late: a fault injected before writes flow
            # measures the load's start-up, not the recovery. Inject fault_at_s into the load, and
            # no sooner than a second after it steadily acknowledges writes.
            flowing = self._wait_for_load(spec, load, deadline=started + spec.fault_at_s + 60)
            time.sleep(max(0.0, max(started + spec.fault_at_s, flowing + 1.0) - time.time()))
            self.progress(f"injecting fault: {spec.fault.kind}")
            injected = inject(self.lab, coord, cluster, spec.fault)
            self.progress(f"{injected.description}; observing for {spec.observe_s:.0f}s")
            aborted = self._observe(spec, cluster, coord, load, injected, state.primary if state else None,
                                    spec.abort_after_s(targets))
            load.wait(timeout=spec.load.duration_s + 60)
        except OrchestratorError as exc:
            aborted = aborted or f"drill stopped: {exc}"
        finally:
            if load.running:
                load.stop()
        self.progress("rolling back: restarting faulted services, waiting for members to rejoin")
        rollback = self._rollback(spec, cluster, coord, state.primary if state else None)
        finished = time.time()
        records = read_journal(load.journal_files())
        fault_at = injected.at if injected else started + spec.fault_at_s
        self.progress("measuring RTO/RPO against the new primary")
        present = self._lookup_when_writable(conninfo, ids_to_look_up(records))
        measurement = measure(
            records, fault_at=fault_at, window_end=min(fault_at + spec.observe_s, finished),
            present_ids=present, expected_total=spec.load.accounts * INITIAL_BALANCE,
            observed_total=bank.total_balance(conninfo), targets=targets,
            duplicate_transfers=bank.duplicate_transfers(conninfo),
            events=self._events(coord, cluster, fault_at, fault_at + spec.observe_s) + fault_window_events(injected),
            window_start=started,
            expect_new_primary=spec.expects_new_primary(primary_dc),
            operations=self._promotions(coord, cluster, fault_at, fault_at + spec.observe_s),
        )
        verdict = judge(measurement, targets, aborted=aborted or rollback)
        if isinstance(spec.fault, StallPrimary | StallLeaderController | StallZooKeeper):
            tolerance = stalls.stall_tolerance(self.lab.topology, spec.fault)
            false = stalls.false_failovers(spec.fault, tolerance, measurement.promotions)
            verdict = stalls.with_check(verdict, stalls.false_failover_check(spec.fault, tolerance, false))
        facts: dict[str, object] = {}
        if isinstance(injected, BackupInjected):   # archive-outage, total-loss-restore: their own checks
            verdict, facts = injected.judged(verdict), {"fault_facts": injected.facts}
        try:
            stats = load.stats().__dict__
        except LabError:
            stats = {}
        report = DrillReport(
            drill=spec.name, description=spec.description, cluster=cluster.name, fault=str(spec.fault.kind),
            started_at=started, finished_at=finished, targets=targets,
            settings={**spec.model_dump(mode="json"), "fault_injected": injected.description if injected else None,
                      "fault_healed_at": injected.healed_at if injected else None,
                      "topology": self.lab.topology.name, **facts,
                      **({"load_basis": self.load_basis[spec.name]} if spec.name in self.load_basis else {})},
            versions=self._versions(cluster), load_stats=stats, measurement=measurement, verdict=verdict,
        )
        return report, write_report(report, self.reports_dir)

    def _members(self, cluster: Cluster) -> dict[str, tuple[Role, bool, str | None, int | None]]:
        prober = pg.Prober(self.lab.credentials, timeout=1)
        try:
            out = {}
            for m in cluster.members:
                st = prober.probe(self.lab.layout(cluster, m).endpoint)
                out[m.name] = (st.role, st.streaming, st.upstream, st.wal_lsn)
            return out
        finally:
            prober.close()

    def _healthy(self, cluster: Cluster, max_lag: int | None, streaming: bool) -> str | None:
        """None when healthy, else why not."""
        members = self._members(cluster)
        primaries = [n for n, (role, *_rest) in members.items() if role is Role.PRIMARY]
        if len(primaries) != 1:
            return f"{len(primaries)} primaries"
        primary = primaries[0]
        endpoint = self.lab.layout(cluster, cluster.member(primary)).endpoint
        upstream = f"{endpoint.address}:{endpoint.port}"
        head = members[primary][3] or 0
        for name, (role, is_streaming, up, lsn) in members.items():
            if name == primary:
                continue
            if streaming and not (role is Role.STANDBY and is_streaming and up == upstream):
                return f"{name} is not streaming from {primary}"
            if max_lag is not None and lsn is not None and head - lsn > max_lag:
                return f"{name} lags {head - lsn} bytes"
        return None

    def _steady_state(self, spec: DrillSpec, cluster: Cluster, timeout: float) -> None:
        why: str | None = None

        def steady() -> bool:
            nonlocal why
            why = self._healthy(cluster, spec.steady_state.max_lag_bytes, spec.steady_state.all_members_streaming)
            return why is None

        if not poll(steady, timeout=timeout, interval=0.2):
            raise LabError(f"steady state not reached in {timeout:.0f}s ({why}); check 'drctl lab status'")

    def _observe(self, spec: DrillSpec, cluster: Cluster, coord: Coordinator, load: LoadHandle,
                 injected: Injected, old_primary: str | None, abort_after: float) -> str | None:
        """Watch until the load ends; return an abort reason if recovery takes too long."""
        expects_move = spec.expects_new_primary(injected.datacenter or "")
        while load.running:
            if expects_move and time.time() - injected.at > abort_after:
                state, _ = coord.read_state(cluster.name)
                if state is None or state.primary == old_primary:
                    load.stop()
                    return f"no new primary within {abort_after:.0f}s (abort.rto_factor x RTO target)"
            time.sleep(0.2)
        return None

    def _wait_for_load(self, spec: DrillSpec, load: LoadHandle, deadline: float) -> float:
        """When the load first acknowledged ``steady_state.min_acks_per_second`` over a second.

        :raises LabError: not by ``deadline`` (the load is not running or the primary refuses writes).
        """
        need = max(1, round(spec.steady_state.min_acks_per_second))
        while True:
            now = time.time()
            acks = [r.end for r in _read_partial(load.journal_files()) if r.outcome is Outcome.ACK]
            recent = [t for t in acks if t >= now - 1.0]
            if len(recent) >= need:
                return min(recent)
            if now > deadline or not load.running:
                raise LabError(f"steady state not reached: {len(recent)} transfer(s) acknowledged in the last "
                               f"second, steady_state.min_acks_per_second is {spec.steady_state.min_acks_per_second:g}")
            time.sleep(0.1)

    def _preflight(self, spec: DrillSpec, cluster: Cluster, coord: Coordinator) -> None:
        """Refuse, before any load starts, a fault that cannot run against the cluster as it is.

        :raises DrillFileError: one line naming the field and why.
        """
        if not isinstance(spec.fault, Switchover):
            return
        state, _ = coord.read_state(cluster.name)
        primary = state.primary if state is not None else cluster.initial_primary.name
        policy = d.Policy.from_topology(self.lab.topology, cluster)
        choice = d.plan_switchover(self._snapshot(cluster), policy, primary, spec.fault.to)
        if isinstance(choice, d.Refusal):
            raise DrillFileError(f"drill {spec.name}: fault.to: {choice.reason}")

    def _snapshot(self, cluster: Cluster) -> ClusterSnapshot:
        prober = pg.Prober(self.lab.credentials, timeout=1)
        try:
            statuses = [prober.probe(self.lab.layout(cluster, m).endpoint) for m in cluster.members]
        finally:
            prober.close()
        return ClusterSnapshot(cluster.name, {s.name: s for s in statuses})

    def _rollback(self, spec: DrillSpec, cluster: Cluster, coord: Coordinator, old_primary: str | None
                  ) -> str | None:
        if spec.rollback.restart_faulted:
            self.lab.restart_services()
        if spec.rollback.rejoin or spec.rollback.switch_back:
            try:
                self._steady_state(spec, cluster, timeout=120)
                state, _ = coord.read_state(cluster.name)
                if spec.rollback.switch_back and old_primary and state is not None and state.primary != old_primary:
                    self.progress(f"switching the primary back to {old_primary}")
                    request_id = coord.submit_request(cluster.name, {"kind": "switchover", "to": old_primary})
                    result = coord.wait_result(cluster.name, request_id, timeout=60)
                    if result is None or not result.get("ok"):
                        why = "no leader answered" if result is None else result.get("error")
                        return f"rollback incomplete: switching back to {old_primary} failed: {why}"
                    self._steady_state(spec, cluster, timeout=120)
            except LabError as exc:
                return f"rollback incomplete: {exc}"
        return None

    def _events(self, coord: Coordinator, cluster: Cluster, fault_at: float, until: float) -> list[TimelineEvent]:
        """The operations' steps between the fault and the end of the window (not the rollback's)."""
        state, _ = coord.read_state(cluster.name)
        if state is None:
            return []
        events = []
        for op in state.history:
            if op.started_at < fault_at - 1 or op.started_at > until:
                continue
            if op.first_failure_at is not None:
                events.append(TimelineEvent(at=op.first_failure_at, name="first-failed-probe", detail=op.source))
            for step in op.steps:
                events.append(TimelineEvent(at=step.at, name=STEP_NAMES[step.step.value], detail=step.detail))
        return events

    def _promotions(self, coord: Coordinator, cluster: Cluster, fault_at: float, until: float
                    ) -> tuple[Promotion, ...]:
        """The drill's operations with their zero-loss proof, as the controller recorded them."""
        state, _ = coord.read_state(cluster.name)
        history = (*state.history, *((state.operation,) if state.operation else ())) if state else ()
        return promotions(history, fault_at=fault_at, until=until)

    def _versions(self, cluster: Cluster) -> dict[str, str]:
        versions = {"dr-orchestrator": __version__, "python": platform.python_version()}
        for member in cluster.members:
            try:
                with pg.connect(self.lab.layout(cluster, member).endpoint, self.lab.credentials) as conn:
                    row = conn.execute("SHOW server_version").fetchone()
                versions["postgresql"] = str(row[0]) if row else "?"
                break
            except OrchestratorError:
                continue
        zk = next((s for s in self.lab.zookeeper() if s.pid() is not None), None)
        if zk is not None:
            from orchestrator.ensemble import four_letter

            first = four_letter(zk.address, zk.client_port, "srvr").splitlines()
            versions["zookeeper"] = first[0].split(":", 1)[1].strip().split(",")[0] if first else "?"
        try:
            from importlib.metadata import version

            versions["locust"] = version("locust")
        except Exception:  # pragma: no cover - metadata missing only in broken installs
            pass
        return versions
