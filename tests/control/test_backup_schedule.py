"""The leader's backup schedule: which jobs are due (pure), and the scheduler's bookkeeping (in-memory fakes)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.control.backup_schedule import BackupJob, BackupScheduler, JobKind, backup_schedules, due_backup_jobs
from orchestrator.errors import LostLeadership, TopologyError
from orchestrator.topology import Topology, parse_topology


def at(hour: int, minute: int = 0) -> float:
    return datetime(2026, 12, 3, hour, minute, tzinfo=UTC).timestamp()


def topology(**backup: Any) -> Topology:
    spec = {"endpoint": "https://127.0.0.1:9000", "bucket": "b-1", "credentials_file": "s3/c.json", **backup}
    return parse_topology({
        "name": "t", "regions": [{"name": "east", "datacenters": [{"name": "dc1"}]}],
        "ports": {"base": 30000, "span": 20},
        "clusters": [{"name": "ledger", "members": [{"name": "n1", "datacenter": "dc1", "role": "primary"}],
                      "replication": {"quorum": 0}, "targets": {"rpo_seconds": 1}, "backup": spec},
                     {"name": "plain", "members": [{"name": "p1", "datacenter": "dc1", "role": "primary"}],
                      "replication": {"quorum": 0}, "targets": {"rpo_seconds": 1}}],
    })


BACKUP, VERIFY = BackupJob("ledger", JobKind.BACKUP), BackupJob("ledger", JobKind.VERIFY)
REPLICATE = BackupJob("ledger", JobKind.REPLICATE)
DAILY = {BACKUP: "0 2 * * *", VERIFY: "0 * * * *"}


@pytest.mark.parametrize(("last", "now", "due"), [
    ({}, at(1, 30), []),                                                  # leading since 01:00, nothing yet
    ({}, at(2, 0), [BACKUP]),                                             # 02:00: the backup proves itself
    ({"backup:ledger": at(2), "verify:ledger": at(2)}, at(2, 59), []),
    ({"backup:ledger": at(2), "verify:ledger": at(2)}, at(3, 0), [VERIFY]),
    ({"backup:ledger": at(2), "verify:ledger": at(3)}, at(9, 0), [VERIFY]),  # missed six slots: runs once
    ({"verify:ledger": at(1)}, at(2, 0), [BACKUP]),
], ids=["not-yet", "backup-not-also-verify", "between", "hourly-verify", "missed-once", "backup-slot"])
def test_due_backup_jobs(last: dict[str, float], now: float, due: list[BackupJob]) -> None:
    assert due_backup_jobs(DAILY, last, now, since=at(1)) == due


def test_schedules_come_from_the_clusters_with_a_backup_section() -> None:
    assert backup_schedules(topology(schedule="0 2 * * *", verify_schedule="0 * * * *")) == DAILY
    assert backup_schedules(topology()) == {}


def test_the_commands_are_drctl_backup_run_verify_and_backup_verify() -> None:
    assert BACKUP.argv(Path("/lab"))[3:] == ["backup", "run", "ledger", "--verify", "--lab-dir", "/lab"]
    assert VERIFY.argv(Path("/lab"))[3:] == ["backup", "verify", "ledger", "--lab-dir", "/lab"]
    assert REPLICATE.argv(Path("/lab"))[3:] == ["backup", "replicate", "ledger", "--lab-dir", "/lab"]


def test_replication_has_its_own_schedule_and_runs_beside_a_backup() -> None:
    replica = {"endpoint": "https://127.0.0.2:9000", "bucket": "b-2", "credentials_file": "s3/r.json",
               "schedule": "*/5 * * * *"}
    jobs = backup_schedules(topology(schedule="0 2 * * *", replica=replica))
    assert jobs == {BACKUP: "0 2 * * *", REPLICATE: "*/5 * * * *"}
    assert due_backup_jobs({**jobs, VERIFY: "0 * * * *"}, {}, at(2), since=at(1, 58)) == [BACKUP, REPLICATE]


def test_a_bad_cron_names_the_field() -> None:
    with pytest.raises(TopologyError, match=r"^topology: clusters\.0\.backup\.schedule: 'every day' is not a valid "
                                            "cron expression"):
        topology(schedule="every day")


class FakeRuns:
    def __init__(self) -> None:
        self.runs: dict[str, float] = {}

    def schedule_last_runs(self) -> dict[str, float]:
        return dict(self.runs)

    def set_schedule_last_run(self, drill: str, at: float) -> None:
        self.runs[drill] = at


def test_the_scheduler_records_each_start_before_spawning_and_runs_it_once() -> None:
    runs, spawned, events = FakeRuns(), [], []

    def spawn(job: BackupJob) -> int:
        assert runs.runs[job.key] == at(2) + 3      # recorded first: a crash cannot repeat it
        spawned.append(job)
        return 4242

    @contextlib.contextmanager
    def guard(_what: str) -> Iterator[None]:
        yield

    scheduler = BackupScheduler(topology(schedule="0 2 * * *"), runs, spawn,
                                lambda event, **f: events.append((event, f)), every=5)
    assert scheduler.run_due(at(2) - 3, since=at(1), guard=guard) == []         # not due yet
    assert scheduler.run_due(at(2), since=at(1), guard=guard) == []             # checked < 5 s ago
    assert scheduler.run_due(at(2) + 3, since=at(1), guard=guard) == [BACKUP]
    assert scheduler.run_due(at(2) + 10, since=at(1), guard=guard) == []        # started once
    assert spawned == [BACKUP]
    assert events == [("scheduled-backup", {"cluster": "ledger", "job": "backup", "pid": 4242})]


def test_a_leader_that_lost_its_lease_starts_nothing() -> None:
    runs, spawned = FakeRuns(), []

    @contextlib.contextmanager
    def guard(what: str) -> Iterator[None]:
        raise LostLeadership(f"deposed before: {what}")
        yield

    scheduler = BackupScheduler(topology(schedule="0 2 * * *"), runs, lambda job: spawned.append(job) or 1,
                                lambda *_a, **_f: None)
    with pytest.raises(LostLeadership, match="scheduled backup of ledger"):
        scheduler.run_due(at(2, 1), since=at(1), guard=guard)
    assert spawned == [] and runs.runs == {}
