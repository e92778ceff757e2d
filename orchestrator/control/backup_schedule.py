"""The leader's backup schedule: base backups (each proven by a verified restore) and re-verification.

A cluster's ``backup.schedule`` (cron, UTC) starts ``drctl backup run CLUSTER --verify``: a
full base backup, then its verification (``BackupService.verify``: restore to the end of the
archive, the checks, the record). ``backup.verify_schedule`` starts ``drctl backup verify
CLUSTER`` (the newest backup, proven again with the WAL archived since); ``backup.replica.schedule``
starts ``drctl backup replicate CLUSTER`` (new objects copied to the other region's store). Each runs as a child
process, so a backup taking minutes never holds up the leader's rounds; pgBackRest's own lock
keeps two backups of one stanza from overlapping.

:func:`due_backup_jobs` is pure (clock passed in). :class:`BackupScheduler` keeps the last start
of each job where the scheduled drills keep theirs (``coord.schedule_last_runs``, as
``backup:<cluster>`` and ``verify:<cluster>``, names no drill can take), written before the
child starts: a leader crash neither repeats nor, past the next slot, skips a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from orchestrator.schedule import next_after
from orchestrator.topology import Topology


class JobKind(StrEnum):
    BACKUP = "backup"   # base backup, then its verification
    VERIFY = "verify"   # verify the newest backup again
    REPLICATE = "replicate"   # copy the repository's new objects to the replica store


@dataclass(frozen=True)
class BackupJob:
    cluster: str
    kind: JobKind

    @property
    def key(self) -> str:
        """Its name among the schedule's last runs (a ':' no drill name has)."""
        return f"{self.kind.value}:{self.cluster}"

    def argv(self, root: Path) -> list[str]:
        command = {JobKind.BACKUP: ["backup", "run", self.cluster, "--verify"],
                   JobKind.VERIFY: ["backup", "verify", self.cluster],
                   JobKind.REPLICATE: ["backup", "replicate", self.cluster]}[self.kind]
        return [sys.executable, "-m", "orchestrator.cli", *command, "--lab-dir", str(root)]


def backup_schedules(topology: Topology) -> dict[BackupJob, str]:
    """Every scheduled backup job of the topology and its cron expression."""
    jobs: dict[BackupJob, str] = {}
    for cluster in topology.clusters:
        spec = cluster.backup
        if spec is None:
            continue
        if spec.schedule:
            jobs[BackupJob(cluster.name, JobKind.BACKUP)] = spec.schedule
        if spec.verify_schedule:
            jobs[BackupJob(cluster.name, JobKind.VERIFY)] = spec.verify_schedule
        if spec.replica is not None and spec.replica.schedule:
            jobs[BackupJob(cluster.name, JobKind.REPLICATE)] = spec.replica.schedule
    return jobs


def due_backup_jobs(schedules: Mapping[BackupJob, str], last_runs: Mapping[str, float], now: float, since: float
                    ) -> list[BackupJob]:
    """Jobs whose next slot after their last start (or ``since``, never started) has come; a job
    missed several times runs once. A cluster's base backup, which proves itself, makes its
    verification due at the same moment redundant: only the backup runs (replication runs beside it)."""
    due = [job for job, cron in schedules.items() if next_after(cron, last_runs.get(job.key, since)) <= now]
    backups = {job.cluster for job in due if job.kind is JobKind.BACKUP}
    return sorted((job for job in due if job.kind is not JobKind.VERIFY or job.cluster not in backups),
                  key=lambda job: (job.cluster, job.kind.value))


class LastRuns(Protocol):
    def schedule_last_runs(self) -> dict[str, float]: ...

    def set_schedule_last_run(self, drill: str, at: float) -> None: ...


class BackupScheduler:
    """Starts due backup jobs; called by the leader between rounds (at most every ``every`` seconds)."""

    def __init__(self, topology: Topology, runs: LastRuns, spawn: Callable[[BackupJob], int],
                 emit: Callable[..., Any], *, every: float = 5.0) -> None:
        self._schedules = backup_schedules(topology)
        self._runs = runs
        self._spawn = spawn
        self._emit = emit
        self._every = every
        self._checked: float | None = None

    def run_due(self, now: float, since: float, guard: Callable[[str], Any]) -> list[BackupJob]:
        """Start every due job (``guard(what)`` is the term's guard: a context manager); the jobs started."""
        if not self._schedules or (self._checked is not None and now - self._checked < self._every):
            return []
        self._checked = now
        started = []
        for job in due_backup_jobs(self._schedules, self._runs.schedule_last_runs(), now, since):
            with guard(f"start scheduled {job.kind.value} of {job.cluster}"):
                self._runs.set_schedule_last_run(job.key, now)   # first: a crash must not repeat the run
            pid = self._spawn(job)
            self._emit("scheduled-backup", cluster=job.cluster, job=job.kind.value, pid=pid)
            started.append(job)
        return started
