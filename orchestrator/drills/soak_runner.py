"""Running a soak against the lab: the planned rounds under one continuous bank load.

``drctl drill soak`` calls :meth:`SoakRunner.run`. Each round waits for full redundancy
(every member streaming from the one primary, lag within bounds), waits its drawn delay,
injects its fault (:func:`orchestrator.drills.faults.inject`, stalls included), waits for a
new primary when the fault must move it, restarts what the fault stopped, and measures the
time back to full redundancy; it reads the bank's total (money is conserved at every instant,
load or not) and the operations the controller recorded. The journal is analysed at the end
(:func:`orchestrator.drills.soak.judge_round` per round); a round that broke an invariant keeps
its slice of the journal beside the report. The drill lock keeps other drills out throughout.
The steady-state and load helpers are the drill runner's, as for game days.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.coordination import Coordinator
from orchestrator.decisions.detection import stall_tolerance_s
from orchestrator.drills import bank
from orchestrator.drills.faults import current_primary, inject
from orchestrator.drills.gameday_runner import GameDayRunner
from orchestrator.drills.journal import iter_lines, read_journal
from orchestrator.drills.load import LoadHandle, start_load
from orchestrator.drills.measure import ids_to_look_up, promotions
from orchestrator.drills.runner import INITIAL_BALANCE
from orchestrator.drills.soak import Executed, Round, Soak, expects_new_primary, judge_round, summarise
from orchestrator.drills.spec import DrillSpec, FaultKind, KillPrimary, LoadProfile
from orchestrator.errors import LabError, OrchestratorError
from orchestrator.lab import Lab
from orchestrator.processes import is_running
from orchestrator.topology import Cluster
from orchestrator.waiting import poll

Progress = Callable[[str], None]
_LOAD_CAP_S = 24 * 3600.0   # the load runs until the runner stops it
_RECOVERY_S = 120.0         # a round without full redundancy by then ends the soak


class SoakRunner:
    def __init__(self, lab: Lab, drills_dir: Path, *, progress: Progress = lambda _: None) -> None:
        self.lab = lab
        self.gameday = GameDayRunner(lab, drills_dir, progress=progress)
        self.drills = self.gameday.drills
        self.progress = progress

    def run(self, rounds: tuple[Round, ...], cluster: Cluster, *, seed: int, kinds: tuple[str, ...],
            users: int, user_rate: float, accounts: int = 100, journals_dir: Path | None = None) -> Soak:
        cluster.require_drills_allowed()
        coord = Coordinator(self.lab.topology.zookeeper_hosts(), self.lab.topology.name,
                            identity=f"soak:{socket.gethostname()}:{os.getpid()}")
        coord.start(timeout=10)
        try:
            coord.acquire_drill_lock(f"soak seed {seed} pid {os.getpid()} since {time.strftime('%H:%M:%S')}")
            try:
                return self._run(rounds, cluster, coord, seed=seed, kinds=kinds, users=users, user_rate=user_rate,
                                 accounts=accounts, journals_dir=journals_dir)
            finally:
                coord.release_drill_lock()
        finally:
            coord.stop()

    def _spec(self, cluster: Cluster, users: int, accounts: int) -> DrillSpec:
        """A drill shape for the drill runner's steady-state and load helpers."""
        return DrillSpec(name="soak", description="soak", cluster=cluster.name,
                         load=LoadProfile(users=users, spawn_rate=float(users), duration_s=_LOAD_CAP_S,
                                          accounts=accounts),
                         fault=KillPrimary(kind=FaultKind.KILL_PRIMARY), fault_at_s=_LOAD_CAP_S / 2, observe_s=1)

    def _full_redundancy(self, spec: DrillSpec, cluster: Cluster, timeout: float) -> bool:
        try:
            self.drills._steady_state(spec, cluster, timeout=timeout)
        except LabError:
            return False
        return True

    def _run(self, rounds: tuple[Round, ...], cluster: Cluster, coord: Coordinator, *, seed: int,
             kinds: tuple[str, ...], users: int, user_rate: float, accounts: int, journals_dir: Path | None) -> Soak:
        spec = self._spec(cluster, users, accounts)
        expected = accounts * INITIAL_BALANCE
        self.progress("checking steady state")
        self.drills._steady_state(spec, cluster, timeout=90)
        conninfo = self.lab.app_connection_string(cluster)
        bank.setup(conninfo, accounts, INITIAL_BALANCE)
        work = Path(tempfile.mkdtemp(prefix="soak-"))
        started = time.time()
        self.progress(f"starting load: {users} users; {len(rounds)} round(s), seed {seed}")
        load = start_load(conninfo, work / "journal", users, float(users), _LOAD_CAP_S, accounts, user_rate, work)
        executed: list[Executed] = []
        aborted: str | None = None
        try:
            self.drills._wait_for_load(spec, load, deadline=time.time() + 120)
            for planned in rounds:
                executed.append(self._round(planned, spec, cluster, coord, load, conninfo, expected))
                if executed[-1].aborted:
                    aborted = f"round {planned.index}: {executed[-1].aborted}"
                    break
            time.sleep(1.0)   # the last round's window: acks after its recovery
        except OrchestratorError as exc:
            aborted = f"soak stopped: {exc}"
        except KeyboardInterrupt:   # Ctrl-C: judge and report the rounds run so far
            aborted = f"interrupted by the operator after {len(executed)} round(s)"
        finally:
            finished = time.time()
            if load.running:
                load.stop()
        self.progress("reading the journal and judging every round")
        self.lab.restart_services()
        self._full_redundancy(spec, cluster, _RECOVERY_S)
        records = read_journal(load.journal_files())
        try:
            present = bank.present_transfers(conninfo, ids_to_look_up(records))
            duplicates = bank.duplicate_transfers(conninfo)
        except OrchestratorError as exc:
            # A cluster left without a primary (the round that broke it is the report's point):
            # report what is known rather than nothing; no transfer is counted lost unseen.
            present, duplicates = set(ids_to_look_up(records)), 0
            aborted = (f"{aborted}; " if aborted else "") + (
                f"the bank could not be read after the soak ({exc}): lost transfers and duplicates not judged")
        ends = [e.at for e in executed[1:]] + [finished]
        results = []
        for done, planned, end in zip(executed, rounds, ends, strict=False):
            done = done.model_copy(update={"end": end})
            result = judge_round(done, planned.fault, self.lab.topology, records, present, window_start=started)
            if not result.ok and journals_dir is not None:
                journals_dir.mkdir(parents=True, exist_ok=True)
                path = journals_dir / f"round-{planned.index:04d}-journal.jsonl"
                window = [r for r in records if done.at - 5.0 <= r.start < end]
                path.write_text("".join(line + "\n" for line in iter_lines(window)))
                result = result.model_copy(update={"journal": str(path)})
            results.append(result)
        loss_total = sum(r.lost for r in results)
        return Soak(
            cluster=cluster.name, seed=seed, rounds_planned=len(rounds), kinds=kinds, started_at=started,
            finished_at=finished, stall_tolerance_s=stall_tolerance_s(self.lab.topology), rounds=tuple(results),
            summary=summarise(results), acked=len({r.id for r in records if r.outcome.value == "ack"}),
            lost=loss_total, writer_conflicts=sum(r.writer_conflicts for r in results),
            false_failovers=sum(r.false_failovers for r in results), duplicates=duplicates,
            aborted=aborted)

    def _round(self, planned: Round, spec: DrillSpec, cluster: Cluster, coord: Coordinator, load: LoadHandle,
               conninfo: str, expected: int) -> Executed:
        if not self._full_redundancy(spec, cluster, _RECOVERY_S):
            raise OrchestratorError(f"round {planned.index}: the cluster is not at full redundancy; see "
                                    "'drctl lab status'")
        time.sleep(planned.delay_s)   # the drawn moment of the fault, not a synchronisation
        if not load.running:
            raise OrchestratorError(f"the load generator stopped early; see {load.log}")
        old = current_primary(coord, cluster)
        fault = self.gameday._retarget(planned.fault, cluster, old)
        expects = expects_new_primary(fault, cluster.member(old).datacenter)
        self.progress(f"round {planned.index}: {planned.kind} ({fault.model_dump(exclude={'kind'})})")
        aborted: str | None = None
        at = time.time()
        healed: float | None = None
        description = planned.kind
        try:
            injected = inject(self.lab, coord, cluster, fault)
            at, healed, description = injected.at, injected.healed_at, injected.description
            # A process killed a moment ago still exits: restarting its server now would find the
            # old PID running (and the new one could not bind its ports). Stalls killed nothing.
            killed = injected.pids if healed is None else ()
            if not poll(lambda: not any(is_running(p) for p in killed), timeout=30, interval=0.05):
                raise OrchestratorError(f"killed processes {list(killed)} still run after 30 s")
            self.gameday._recover(spec, cluster, coord, old,
                                  expects, at, 10 * cluster.targets.rto_seconds)
        except OrchestratorError as exc:
            aborted = str(exc)
            self.lab.restart_services()
        back = self._full_redundancy(spec, cluster, _RECOVERY_S)
        redundancy = time.time() - (healed or at) if back else None
        if not back and aborted is None:
            aborted = f"no full redundancy within {_RECOVERY_S:.0f} s"
        total = self._total(conninfo)
        state, _ = coord.read_state(cluster.name)
        history = (*state.history, *((state.operation,) if state.operation else ())) if state else ()
        return Executed(index=planned.index, kind=planned.kind, description=description, at=at, healed_at=healed,
                        expect_new_primary=expects, end=time.time(), redundancy_s=redundancy,
                        money=(total, expected), promotions=promotions(history, fault_at=at, until=time.time()),
                        aborted=aborted)

    def _total(self, conninfo: str) -> int:
        """The bank's total balance (a consistent snapshot: conserved under load), retried briefly."""
        found: list[int] = []

        def read() -> bool:
            try:
                found.append(bank.total_balance(conninfo))
            except OrchestratorError:
                return False
            return True

        if not poll(read, timeout=30, interval=0.2):
            raise OrchestratorError("could not read the bank's total balance for 30 s")
        return found[0]
