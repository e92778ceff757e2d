"""The failover benchmark loop: every system, round after round, same load, same fault.

``drctl bench failover`` calls :func:`run_bench` and hands the :class:`BenchResult` to
:mod:`orchestrator.bench.report`. Rounds alternate the order of the systems (forward, then
backward) so that machine noise hits all alike. Each round: the system comes up healthy,
the bank is reset, the drills' Locust workload starts at the same per-user rate for every
system, the primary's node is killed at ``fault_at_s``, the system observes for its own
window while the load runs, and the round is measured from the client journal with the
drills' measurement (:func:`~orchestrator.drills.measure.write_outage`,
:func:`~orchestrator.drills.measure.data_loss`) plus the zero-loss hole: acknowledgements
from a primary whose ``synchronous_standby_names`` was empty (:func:`sync_off_acks`).

Every round of every system starts from nothing and ends with nothing: before ``start``
the runner waits until every port of the system is bindable (:func:`procs.wait_ports_free`;
a client's socket in TIME_WAIT can hold a port of the ephemeral range for 60 s); after
the round it calls ``stop()``, waits for the system's listeners to close, looks for any
process still working in the system's directory (psutil), kills such survivors by PID and
fails the round loudly with them as evidence; then it keeps the logs under
``workdir/rounds/<round>/logs`` and removes the system's directory. So no process of one
system competes with the next one for the cores, and no port is shared between rounds.

A round that fails is recorded with its error and the bench goes on; every system's
``stop()`` runs at the end too, also on Ctrl-C. The measuring functions are pure.
"""

from __future__ import annotations

import math
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.bench import procs
from orchestrator.bench.system import Fault, RoundFacts, SyncSample, System
from orchestrator.drills import bank
from orchestrator.drills.journal import JournalRecord, Outcome, read_journal
from orchestrator.drills.load import LoadHandle, start_load
from orchestrator.drills.measure import DataLoss, WriteOutage, data_loss, ids_to_look_up, write_outage
from orchestrator.errors import InvalidInput, LabError
from orchestrator.waiting import poll

INITIAL_BALANCE = 1_000
FULL_ROUNDS = 10
QUICK_ROUNDS = 2
LOAD_SLACK_S = 2.0          # the load outlives the observation window: a slow Locust start never cuts it
ACK_WAIT_S = 15.0           # how long the fault waits for the first acknowledged transfer
ADDRESS = "127.0.0.1"       # every system listens on loopback
PORT_WAIT_S = 75.0          # a client-side TIME_WAIT holds a port for 60 s
RELEASE_WAIT_S = 30.0       # after stop(): the system's listeners must close within this
LOG_LIMIT_BYTES = 20_000_000
_ACK_MARK = f'"outcome":"{Outcome.ACK.value}"'

Progress = Callable[[str], None]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyncChange(_Frozen):
    """A sample whose ``synchronous_standby_names`` differs from the previous one of that server."""

    at: float
    server: str
    synchronous_standby_names: str


class RoundResult(_Frozen):
    """One system in one round; ``ok`` is False (and ``error`` says why) when it could not be measured."""

    system: str
    round: int
    ok: bool
    error: str | None = None
    started_at: float
    observe_s: float
    fault_at: float | None = None
    fault_member: str | None = None
    killed_pids: tuple[int, ...] = ()
    new_primary: str | None = None
    rto_seconds: float | None = None
    unrecovered: bool = False
    acked: int = 0
    lost: int = 0
    indeterminate: int = 0
    expected_total: int | None = None
    observed_total: int | None = None
    sync_off_acks: int = 0
    sync_off_seconds: float = 0.0
    sync_samples: int = 0
    sync_changes: tuple[SyncChange, ...] = ()
    old_primary_rejoined: bool = False
    outage: WriteOutage | None = None
    loss: DataLoss | None = None
    load_stats: dict[str, Any] = Field(default_factory=dict)
    notes: dict[str, Any] = Field(default_factory=dict)
    preflight: dict[str, Any] = Field(default_factory=dict)   # ports checked free before start
    teardown: dict[str, Any] = Field(default_factory=dict)    # stop(), survivors, ports released

    @property
    def balance_conserved(self) -> bool:
        return self.expected_total is not None and self.expected_total == self.observed_total


class LoadSettings(_Frozen):
    users: int
    spawn_rate: float
    user_rate: float                 # transfers per second per user, the same for every system
    accounts: int
    initial_balance: int
    fault_at_s: float
    duration_s: dict[str, float]     # per system: covers its observation window
    observe_s: dict[str, float]      # per system: the measured window after the fault


class BenchResult(_Frozen):
    """Everything one bench run produced; ``bench.json`` is its JSON."""

    schema_version: Literal[1] = 1
    started_at: float
    finished_at: float
    systems: tuple[str, ...]
    reference: str | None            # the system the others are compared with (ours)
    rounds_requested: int
    load: LoadSettings
    settings: dict[str, dict[str, Any]]
    rounds: tuple[RoundResult, ...]
    stop_errors: dict[str, str] = Field(default_factory=dict)


# ---- pure measurement ---------------------------------------------------------------------


def sync_off_intervals(samples: Iterable[SyncSample]) -> dict[str, list[tuple[float, float]]]:
    """Per server, the times its ``synchronous_standby_names`` was (as far as polled) empty.

    Each sample holds until the next sample of the same server; the first sample also
    covers everything before it (acks from a new primary before its first poll) and the
    last everything after it. The resolution is the poll interval (~50 ms).
    """
    by_server: dict[str, list[SyncSample]] = {}
    for sample in samples:
        by_server.setdefault(sample.server, []).append(sample)
    out: dict[str, list[tuple[float, float]]] = {}
    for server, rows in by_server.items():
        rows.sort(key=lambda s: s.at)
        intervals: list[tuple[float, float]] = []
        for i, sample in enumerate(rows):
            if sample.synchronous_standby_names.strip():
                continue
            begin = -math.inf if i == 0 else sample.at
            end = math.inf if i == len(rows) - 1 else rows[i + 1].at
            if intervals and intervals[-1][1] == begin:
                begin = intervals.pop()[0]
            intervals.append((begin, end))
        if intervals:
            out[server] = intervals
    return out


def sync_off_acks(records: Iterable[JournalRecord], samples: Iterable[SyncSample]) -> int:
    """Acknowledged transfers whose server had synchronous replication off when the ack ended."""
    intervals = sync_off_intervals(samples)
    return sum(
        1 for r in records
        if r.outcome is Outcome.ACK and r.server is not None
        and any(begin <= r.end < end for begin, end in intervals.get(r.server, ()))
    )


def sync_off_seconds(samples: Iterable[SyncSample]) -> float:
    """Polled time with synchronous replication off, summed over servers (between their samples)."""
    by_server: dict[str, list[SyncSample]] = {}
    for sample in samples:
        by_server.setdefault(sample.server, []).append(sample)
    total = 0.0
    for rows in by_server.values():
        rows.sort(key=lambda s: s.at)
        total += sum(b.at - a.at for a, b in pairwise(rows) if not a.synchronous_standby_names.strip())
    return total


def sync_changes(samples: Iterable[SyncSample]) -> tuple[SyncChange, ...]:
    """Each server's first sample and every change after it, in time order."""
    last: dict[str, str] = {}
    changes = []
    for sample in sorted(samples, key=lambda s: s.at):
        if last.get(sample.server) != sample.synchronous_standby_names:
            last[sample.server] = sample.synchronous_standby_names
            changes.append(SyncChange(at=sample.at, server=sample.server,
                                      synchronous_standby_names=sample.synchronous_standby_names))
    return tuple(changes)


def measure_round(
    *, system: str, round_no: int, started_at: float, observe_s: float, fault: Fault, facts: RoundFacts,
    records: Sequence[JournalRecord], present_ids: Iterable[str], expected_total: int, observed_total: int,
    load_stats: Mapping[str, Any] | None = None,
) -> RoundResult:
    """One round's figures from frozen inputs: the journal, the ids and total found afterwards, the facts."""
    outage = write_outage(records, fault_at=fault.at, window_end=fault.at + observe_s, window_start=started_at,
                          expect_new_primary=True)
    loss = data_loss(records, frozenset(present_ids))
    ok = outage.acks_before_fault > 0
    return RoundResult(
        system=system, round=round_no, ok=ok,
        error=None if ok else "no transfer was acknowledged before the fault: the round proves nothing",
        started_at=started_at, observe_s=observe_s, fault_at=fault.at, fault_member=fault.member,
        killed_pids=fault.pids, new_primary=facts.new_primary, rto_seconds=outage.rto_seconds,
        unrecovered=outage.unrecovered, acked=loss.acked, lost=loss.lost, indeterminate=loss.indeterminate,
        expected_total=expected_total, observed_total=observed_total,
        sync_off_acks=sync_off_acks(records, facts.sync_samples),
        sync_off_seconds=sync_off_seconds(facts.sync_samples), sync_samples=len(facts.sync_samples),
        sync_changes=sync_changes(facts.sync_samples), old_primary_rejoined=facts.old_primary_rejoined,
        outage=outage, loss=loss, load_stats=dict(load_stats or {}), notes=dict(facts.notes),
    )


def observe_window(system: System, overrides: Mapping[str, float] | None, default: float) -> float:
    """A system's observation window: ``overrides[name]``, else its ``observe_s`` attribute, else ``default``."""
    if overrides is not None and system.name in overrides:
        return float(overrides[system.name])
    declared = getattr(system, "observe_s", None)
    if isinstance(declared, int | float) and not isinstance(declared, bool):
        return float(declared)
    return default


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "system"


# ---- the loop -----------------------------------------------------------------------------


def run_bench(
    systems: Sequence[System], rounds: int, workdir: Path, *, users: int, duration_s: float, fault_at_s: float,
    accounts: int, user_rate: float, progress: Progress = lambda _: None,
    observe_s: Mapping[str, float] | None = None, spawn_rate: float | None = None,
) -> BenchResult:
    """Run ``rounds`` rounds of every system and return every round's result.

    ``observe_s`` maps system names to their observation windows (default: the system's
    ``observe_s`` attribute, else ``duration_s - fault_at_s``); each system's load lasts
    ``max(duration_s, fault_at_s + its window + 2 s)`` at the same ``user_rate`` per user.
    Each system is stopped after each of its rounds, checked for surviving processes and
    removed (:func:`_teardown`). Working files go to ``workdir/<system>`` (removed after
    each round) and ``workdir/rounds/<NN-system>`` (journals, logs; kept).

    :raises InvalidInput: no systems, duplicate names, or settings that cannot make a round.
    """
    names = [s.name for s in systems]
    if not systems or len(set(names)) != len(names):
        raise InvalidInput(f"bench: systems {names}: give at least one system, each with its own name")
    if rounds < 1 or users < 1 or accounts < 2 or user_rate <= 0 or not 0 < fault_at_s < duration_s:
        raise InvalidInput(f"bench: rounds={rounds}, users={users}, accounts={accounts}, user_rate={user_rate}, "
                           f"fault_at_s={fault_at_s}, duration_s={duration_s}: need rounds >= 1, users >= 1, "
                           "accounts >= 2, user_rate > 0 and 0 < fault_at_s < duration_s")
    windows = {s.name: observe_window(s, observe_s, duration_s - fault_at_s) for s in systems}
    load = LoadSettings(
        users=users, spawn_rate=spawn_rate or float(users), user_rate=user_rate, accounts=accounts,
        initial_balance=INITIAL_BALANCE, fault_at_s=fault_at_s, observe_s=windows,
        duration_s={n: max(duration_s, fault_at_s + w + LOAD_SLACK_S) for n, w in windows.items()},
    )
    _make_dir(workdir)
    restore = _interrupt_on_sigterm()
    started = time.time()
    results: list[RoundResult] = []
    settings: dict[str, dict[str, Any]] = {}
    stop_errors: dict[str, str] = {}
    try:
        for n in range(1, rounds + 1):
            for system in systems if n % 2 else list(reversed(systems)):
                progress(f"round {n}/{rounds}: {system.name}")
                result = _run_round(system, n, workdir, load, settings, progress)
                result = _teardown(system, result, workdir, progress)
                results.append(result)
                progress(_round_line(result))
    finally:
        interrupted: BaseException | None = None
        for system in systems:
            progress(f"stopping {system.name}")
            try:
                system.stop()
            except BaseException as exc:  # a second Ctrl-C must not skip the other systems
                stop_errors[system.name] = f"{type(exc).__name__}: {exc}"
                interrupted = interrupted or (exc if not isinstance(exc, Exception) else None)
        restore()
        if interrupted is not None:
            raise interrupted
    for system in systems:
        if system.name not in settings:
            settings[system.name] = _settings(system)
    return BenchResult(
        started_at=started, finished_at=time.time(), systems=tuple(names),
        reference=next((n for n in names if n == "dr-orchestrator"), names[0]), rounds_requested=rounds,
        load=load, settings=settings, rounds=tuple(results), stop_errors=stop_errors,
    )


def _make_dir(path: Path) -> None:
    """Create ``path``; directories made here are 0755 (the postgres user traverses them)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for made in missing:
        made.chmod(0o755)


def _settings(system: System) -> dict[str, Any]:
    try:
        return system.settings()
    except Exception as exc:
        return {"error": f"settings() failed: {type(exc).__name__}: {exc}"}


def _round_line(result: RoundResult) -> str:
    if not result.ok:
        return f"  {result.system} round {result.round} FAILED: {result.error}"
    rto = "unrecovered" if result.unrecovered else f"RTO {result.rto_seconds:.2f} s"
    return (f"  {result.system} round {result.round}: {rto}, {result.lost} of {result.acked} acked lost, "
            f"{result.sync_off_acks} acked with sync off, "
            f"old primary {'rejoined' if result.old_primary_rejoined else 'NOT rejoined'}")


def _run_round(system: System, n: int, workdir: Path, plan: LoadSettings, settings: dict[str, dict[str, Any]],
               progress: Progress) -> RoundResult:
    started = time.time()
    observe_s, duration_s = plan.observe_s[system.name], plan.duration_s[system.name]
    round_dir = _round_dir(workdir, n, system)
    handle: LoadHandle | None = None
    fault: Fault | None = None
    preflight: dict[str, Any] = {}
    try:
        home = workdir / slug(system.name)
        ports = system.ports()
        waited, holders = procs.wait_ports_free(ADDRESS, ports, PORT_WAIT_S)
        preflight = {"ports": list(ports), "waited_s": round(waited, 3), "held_by": [str(h) for h in holders]}
        if holders:
            progress(f"  {system.name}: waited {waited:.1f}s for its ports ({'; '.join(map(str, holders))})")
        _make_dir(home)
        system.start(home)
        if system.name not in settings:
            settings[system.name] = _settings(system)
        conninfo = system.conninfo()
        bank.setup(conninfo, plan.accounts, plan.initial_balance)
        started = time.time()
        handle = start_load(conninfo, round_dir / "journal", plan.users, plan.spawn_rate, duration_s,
                            plan.accounts, plan.user_rate, round_dir)
        time.sleep(max(0.0, started + plan.fault_at_s - time.time()))
        _wait_first_ack(handle, ACK_WAIT_S)
        fault = system.kill_primary()
        progress(f"  {system.name}: killed {fault.member} (pids {', '.join(map(str, fault.pids))}); "
                 f"observing {observe_s:.0f}s")
        facts = system.observe(fault, observe_s)
        handle.wait(timeout=duration_s + 60)
        records = read_journal(handle.journal_files())
        present = bank.present_transfers(conninfo, ids_to_look_up(records))
        observed = bank.total_balance(conninfo)
        try:
            stats = handle.stats().__dict__
        except LabError:
            stats = {}
        measured = measure_round(
            system=system.name, round_no=n, started_at=started, observe_s=observe_s, fault=fault, facts=facts,
            records=records, present_ids=present, expected_total=plan.accounts * plan.initial_balance,
            observed_total=observed, load_stats=stats,
        )
        return measured.model_copy(update={"preflight": preflight})
    except Exception as exc:
        return RoundResult(
            system=system.name, round=n, ok=False, error=f"{type(exc).__name__}: {exc}", started_at=started,
            observe_s=observe_s, fault_at=None if fault is None else fault.at,
            fault_member=None if fault is None else fault.member, killed_pids=() if fault is None else fault.pids,
            preflight=preflight,
        )
    finally:
        if handle is not None and handle.running:
            handle.stop()


def _wait_first_ack(handle: LoadHandle, timeout: float) -> None:
    """Until the journal holds an acknowledged transfer: a fault before any write measures nothing.

    :raises LabError: the load ended or acknowledged nothing within ``timeout``.
    """
    def acked() -> bool:
        # A substring test, not read_journal: the writer may be half-way through its last line.
        return any(_ACK_MARK in path.read_text(errors="replace") for path in handle.journal_files())

    if not poll(lambda: acked() or not handle.running, timeout=timeout, interval=0.1) or not acked():
        raise LabError(f"no transfer acknowledged {timeout:.0f}s after the planned fault time; see {handle.log}")


def _round_dir(workdir: Path, n: int, system: System) -> Path:
    return workdir / "rounds" / f"{n:02d}-{slug(system.name)}"


def _teardown(system: System, result: RoundResult, workdir: Path, progress: Progress) -> RoundResult:
    """Stop ``system``, prove nothing of it survives, keep its logs, remove its directory.

    A process still working in the system's directory after ``stop()`` is killed by PID and
    fails the round with the evidence, and so does a listener left on one of its ports
    (reported only: a process outside the directory may not be ours). A leak would compete
    with the next system for the cores and could hold its ports.
    """
    home = workdir / slug(system.name)
    report: dict[str, Any] = {}
    problems: list[str] = []
    try:
        system.stop()
    except Exception as exc:
        report["stop_error"] = f"{type(exc).__name__}: {exc}"
        problems.append(f"stop() failed: {report['stop_error']}")
    # The system's processes work in its directory; the round's load generator in the round's.
    survivors = [*(procs.processes_under(home) if home.exists() else []),
                 *procs.processes_under(_round_dir(workdir, result.round, system))]
    if survivors:
        report["survivors"] = [str(s) for s in survivors]
        left = procs.kill([s.pid for s in survivors])
        problems.append(f"{len(survivors)} process(es) outlived stop() and were killed by PID: "
                        + "; ".join(map(str, survivors)) + (f" (still alive: {left})" if left else ""))
    if result.preflight:   # the system got its ports: they must be released now
        released_s, listening = _wait_listeners_closed(_safe_ports(system))
        report["ports_released_s"] = released_s
        if listening:
            # Not under the system's directory (those were killed above): reported, never killed.
            report["listeners_left"] = [str(h) for h in listening]
            problems.append("listener(s) still open after stop(): " + "; ".join(map(str, listening)))
    if home.exists():
        report["logs_kept"] = _keep_logs(home, _round_dir(workdir, result.round, system) / "logs")
        shutil.rmtree(home, ignore_errors=True)
    if problems:
        progress(f"  {system.name} round {result.round} TEARDOWN FAILED: " + " | ".join(problems))
        error = "teardown: " + " | ".join(problems)
        return result.model_copy(update={"ok": False, "teardown": report,
                                         "error": error if result.error is None else f"{result.error}; {error}"})
    return result.model_copy(update={"teardown": report})


def _safe_ports(system: System) -> tuple[int, ...]:
    try:
        return tuple(system.ports())
    except Exception:
        return ()


def _wait_listeners_closed(ports: Sequence[int]) -> tuple[float, list[procs.Holder]]:
    """Seconds until no socket listens on ``ports`` (and the listeners left after :data:`RELEASE_WAIT_S`)."""
    started = time.monotonic()
    while True:
        listening = [h for h in procs.holders(ports) if h.status == "LISTEN"] if ports else []
        if not listening or time.monotonic() - started > RELEASE_WAIT_S:
            return round(time.monotonic() - started, 3), listening
        time.sleep(0.1)


def _keep_logs(home: Path, dest: Path) -> int:
    """Copy every log under ``home`` (``*.log``, ``log/``/``logs/`` directories) to ``dest``; return how many."""
    kept = 0
    for path in home.rglob("*"):
        try:
            if not path.is_file() or path.stat().st_size > LOG_LIMIT_BYTES:
                continue
        except OSError:
            continue
        if path.suffix == ".log" or path.parent.name in ("log", "logs"):
            target = dest / path.relative_to(home)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(path, target)
            except OSError:
                continue
            kept += 1
    return kept


def _interrupt_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise KeyboardInterrupt while the bench runs (main thread only), so that a
    terminated bench still stops every system by PID; return the function that restores it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
