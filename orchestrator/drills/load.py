"""Runs the bank-transfer load (``loadtests/bank_transfer.py``) in a Locust process of its own.

The drill runner calls :func:`start_load` before it injects a fault, then waits for or
stops the load and reads what it left behind: the per-process journals (one JSON line
per transfer attempt, see :mod:`orchestrator.drills.journal`) and Locust's CSV summary
(:meth:`LoadHandle.stats`). Locust monkey-patches its process with gevent, which must
never reach the controller or the drill runner, so this module never imports Locust: it
starts ``locust --headless`` as a child in a session of its own, talks to it only through
environment variables and files, and stops it by PID.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import LabError
from orchestrator.topology import Topology

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "bank_transfer.py"
_STOP_GRACE_S = 30.0  # Locust's start-up and shutdown on top of the run time


@dataclass(frozen=True)
class LoadStats:
    """Locust's totals for the ``transfer`` requests; latencies in ms, None when nothing was measured."""

    requests: int
    failures: int
    median_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rps: float


def _number(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "N/A"):
        return None
    return float(text)


def parse_stats(path: Path, name: str = "transfer") -> LoadStats:
    """The row named ``name`` of a Locust ``<prefix>_stats.csv`` (zeros when it has none).

    :raises LabError: the file is missing or is not Locust's stats format.
    """
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise LabError(f"{path}: no Locust statistics ({exc.strerror}); did the load run to its end?") from exc
    for row in rows:
        if row.get("Name") == name and row.get("Type") != "":
            try:
                return LoadStats(
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    median_ms=_number(row.get("Median Response Time")),
                    p95_ms=_number(row.get("95%")),
                    p99_ms=_number(row.get("99%")),
                    rps=_number(row.get("Requests/s")) or 0.0,
                )
            except (KeyError, ValueError) as exc:
                raise LabError(f"{path}: not Locust's stats format ({exc!r}); check the Locust version") from exc
    return LoadStats(requests=0, failures=0, median_ms=None, p95_ms=None, p99_ms=None, rps=0.0)


class LoadHandle:
    """A running (or finished) Locust process started by :func:`start_load`, with its workers if distributed."""

    def __init__(self, process: subprocess.Popen[bytes], *, journal_dir: Path, journal_stem: str,
                 csv_prefix: Path, log: Path, duration_s: int,
                 workers: tuple[subprocess.Popen[bytes], ...] = ()) -> None:
        self._process = process
        self.workers = workers
        self.journal_dir = journal_dir
        self._journal_stem = journal_stem
        self.csv_prefix = csv_prefix
        self.log = log
        self._duration_s = duration_s

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the run to end by itself (default: its duration plus a grace period).

        :raises LabError: still running after ``timeout`` (it is left running: call
            :meth:`stop`), or Locust exited with an error.
        """
        limit = self._duration_s + _STOP_GRACE_S if timeout is None else timeout
        try:
            code = self._process.wait(limit)
        except subprocess.TimeoutExpired:
            raise LabError(f"load generator {self.pid} still running after {limit:.0f}s; stop it") from None
        if code != 0:
            self._stop_workers()
            raise LabError(f"load generator {self.pid} exited with {code}: {self._log_tail()}; see {self.log}")
        # The master tells its workers to quit as it ends: each writes its journal's last lines and exits.
        self._stop_workers(grace=_STOP_GRACE_S)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the run early: SIGTERM to its PID, then SIGKILL to its process group after ``timeout``.

        Locust ends its users and writes its statistics on SIGTERM. Stopping a finished
        run is a no-op.
        """
        _terminate(self._process, timeout)
        self._stop_workers(grace=timeout)

    def _stop_workers(self, grace: float = 0.0) -> None:
        """Each worker by its PID: given ``grace`` to exit after its master, then SIGTERM, then SIGKILL."""
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(grace)
            _terminate(worker, 10.0)

    def journal_files(self) -> list[Path]:
        """Every journal this run wrote (one per Locust process), sorted by name."""
        return sorted(self.journal_dir.glob(f"{self._journal_stem}-*.jsonl"))

    def stats(self) -> LoadStats:
        """Locust's totals for the transfers, from its CSV summary (written when the run ends).

        :raises LabError: the run has not written its statistics (still running, or crashed).
        """
        return parse_stats(Path(f"{self.csv_prefix}_stats.csv"))

    def _log_tail(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to a Locust process, then SIGKILL to its process group (its own session) after ``timeout``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        # Its own session: the group holds Locust and nothing of ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def master_port(topology: Topology) -> int:
    """The port a distributed run's Locust master listens on (loopback): the first port of the
    topology's range that no server of its plan uses.

    :raises LabError: every port of the range is taken.
    """
    used = set(topology.port_plan().values())
    port = next((p for p in range(topology.ports.base, topology.ports.end) if p not in used), None)
    if port is None:
        raise LabError(f"ports: no port of {topology.ports.base}-{topology.ports.end - 1} is left for the Locust "
                       "master of a distributed run; raise ports.span")
    return port


def locust_executable() -> Path:
    """The ``locust`` script of the interpreter running us (the project's venv)."""
    path = Path(sys.executable).parent / "locust"
    if not path.exists():
        raise LabError(f"{path}: Locust is not installed next to {sys.executable}; run 'make setup'")
    return path


def start_load(
    conninfo: str,
    journal_dir: Path,
    users: int,
    spawn_rate: float,
    duration_s: float,
    accounts: int,
    user_rate: float,
    workdir: Path,
    *,
    locustfile: Path = LOCUSTFILE,
    workers: int = 0,
    master_port: int | None = None,
) -> LoadHandle:
    """Start ``users`` bank users (``spawn_rate`` per second) for ``duration_s`` seconds and return at once.

    ``workers`` > 0: distributed Locust, a master on ``127.0.0.1:master_port`` that spreads the users
    over that many worker processes; each worker writes its own journal (all are read back by
    :meth:`LoadHandle.journal_files`) and the master's statistics cover them all.

    Each user makes ``user_rate`` transfers per second over ``accounts`` accounts on the
    multi-host ``conninfo`` (passed in the environment, not on the command line: it holds
    a password). Journals go to ``journal_dir``; Locust's CSV files and log to ``workdir``.
    Every run gets its own file names, so directories can be shared between runs.

    :raises LabError: Locust is not installed, or the arguments cannot make a run.
    """
    if workers < 0 or (workers > 0 and master_port is None):
        raise LabError(f"load.workers: {workers} workers need a master port and workers >= 0; use 0 for one process")
    if users < 1 or spawn_rate <= 0 or duration_s <= 0 or accounts < 2 or user_rate < 0:
        raise LabError(
            f"load: users={users}, spawn_rate={spawn_rate}, duration_s={duration_s}, accounts={accounts}, "
            f"user_rate={user_rate}: need users >= 1, spawn_rate > 0, duration_s > 0, accounts >= 2, "
            "user_rate >= 0"
        )
    executable = locust_executable()
    run = uuid.uuid4().hex[:8]
    journal_dir, workdir = journal_dir.resolve(), workdir.resolve()
    journal_dir.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    stem = f"transfers-{run}"
    csv_prefix = workdir / f"locust-{run}"
    log = workdir / f"locust-{run}.log"
    seconds = max(1, round(duration_s))
    env = {
        **os.environ,
        "DRCTL_CONNINFO": conninfo,
        "DRCTL_JOURNAL": str(journal_dir / f"{stem}.jsonl"),
        "DRCTL_ACCOUNTS": str(accounts),
        "DRCTL_USER_RATE": str(user_rate),
        # The run time is enforced by the locustfile on the real clock (not Locust's -t, whose gevent
        # timer can fire at once when the process starts on a starved machine).
        "DRCTL_RUN_SECONDS": str(seconds),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [
        str(executable), "-f", str(locustfile), "--headless", "-u", str(users), "-r", str(spawn_rate),
        "--csv", str(csv_prefix), "--only-summary",
        # fail and indeterminate transfers are the point of a drill, not a failed run
        "--exit-code-on-error", "0",
    ]
    if workers > 0:
        argv += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
                 "--expect-workers", str(workers), "--expect-workers-max-wait", "120"]
    started: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            started.append(process)
            for number in range(workers):
                with (workdir / f"locust-{run}-worker-{number}.log").open("ab") as worker_out:
                    started.append(subprocess.Popen(
                        [str(executable), "-f", str(locustfile), "--worker", "--master-host", "127.0.0.1",
                         "--master-port", str(master_port)],
                        cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=worker_out,
                        stderr=subprocess.STDOUT, start_new_session=True,
                    ))
    except OSError as exc:
        for each in started:   # nothing half-started is left running
            _terminate(each, 5.0)
        raise LabError(f"{executable}: cannot start Locust ({exc.strerror})") from exc
    return LoadHandle(process, journal_dir=journal_dir, journal_stem=stem, csv_prefix=csv_prefix, log=log,
                      duration_s=seconds, workers=tuple(started[1:]))
