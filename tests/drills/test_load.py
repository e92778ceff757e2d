"""The bank-transfer load against real servers: journals, Locust statistics, a failover under load.

A lab of its own (ports from DRCTL_TEST_PORT_BASE+1000), no controllers: the failover test kills the primary
and promotes the most advanced synchronous standby by hand (re-pointing the other one, so
the new primary's quorum can confirm commits), and the workload must find the new primary
through the multi-host connection string alone. Another test cuts COMMITs waiting for the
quorum to check they are journaled as indeterminate, not as failures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator import postgres as pg
from orchestrator.drills import bank
from orchestrator.drills.journal import JournalRecord, Outcome, read_journal
from orchestrator.drills.load import LoadHandle, LoadStats, master_port, parse_stats, start_load
from orchestrator.errors import LabError
from orchestrator.lab import Lab
from orchestrator.state import MemberStatus, Role
from orchestrator.topology import Cluster, Member, load_topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import REPO, TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

PORT_BASE = TEST_PORT_BASE + 1000
ACCOUNTS = 20
INITIAL_BALANCE = 1_000


@pytest.fixture(scope="module")
def bank_lab() -> Iterator[Lab]:
    lab = Lab(with_port_base(load_topology(REPO / "topology" / "lab.yaml"), PORT_BASE),
              make_lab_dir("drctl-load-"), controllers=False)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture
def cluster(bank_lab: Lab) -> Cluster:
    return bank_lab.topology.cluster("payments")


@pytest.fixture
def conninfo(bank_lab: Lab, cluster: Cluster) -> str:
    return bank_lab.app_connection_string(cluster)


def _load(conninfo: str, tmp_path: Path, *, users: int, duration_s: float) -> LoadHandle:
    return start_load(conninfo, tmp_path / "journal", users=users, spawn_rate=users, duration_s=duration_s,
                      accounts=ACCOUNTS, user_rate=50, workdir=tmp_path / "locust")


def _records_so_far(handle: LoadHandle) -> list[JournalRecord]:
    """The complete lines written so far (the load may be mid-line)."""
    records: list[JournalRecord] = []
    for path in handle.journal_files():
        for line in path.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                records.append(JournalRecord.model_validate_json(line))
    return records


def _wait_until(what: str, condition: Callable[[], bool], timeout: float, handle: LoadHandle | None = None) -> None:
    def done() -> bool:
        if condition():
            return True
        assert handle is None or handle.running, f"load exited early; see {handle.log}"
        return False

    assert poll(done, timeout=timeout, interval=0.02), f"{what}: not within {timeout}s"


def _acks(records: list[JournalRecord], server: str | None = None) -> list[JournalRecord]:
    return [r for r in records if r.outcome is Outcome.ACK and (server is None or r.server == server)]


def _stopped(record: JournalRecord) -> bool:
    """An attempt cut off because the load itself was ending."""
    return (record.error or "").startswith("interrupted")


def _server(lab: Lab, cluster: Cluster, member: Member) -> str:
    endpoint = lab.layout(cluster, member).endpoint
    return f"{endpoint.address}:{endpoint.port}"


def _primary(lab: Lab, cluster: Cluster) -> Member:
    prober = pg.Prober(lab.credentials, timeout=1)
    try:
        primaries = [m for m in cluster.members
                     if prober.probe(lab.layout(cluster, m).endpoint).role is Role.PRIMARY]
    finally:
        prober.close()
    assert len(primaries) == 1, primaries
    return primaries[0]


def _most_advanced_standby(lab: Lab, cluster: Cluster, candidates: list[Member]) -> Member:
    """The candidate holding the most WAL once the dead primary's streams are closed.

    With a quorum of ANY 1, an acknowledged commit may be on one candidate only: promoting
    a less advanced one would lose it and leave the other unable to follow.
    """
    prober = pg.Prober(lab.credentials, timeout=1)
    try:
        def statuses() -> dict[str, MemberStatus]:
            return {m.name: prober.probe(lab.layout(cluster, m).endpoint) for m in candidates}

        _wait_until("walreceivers stop streaming from the killed primary",
                    lambda: not any(s.streaming for s in statuses().values()), timeout=10)
        final = statuses()
    finally:
        prober.close()
    return max(candidates, key=lambda m: final[m.name].wal_lsn or 0)


def test_load_journals_every_transfer_and_conserves_money(tmp_path: Path, conninfo: str) -> None:
    bank.setup(conninfo, ACCOUNTS, INITIAL_BALANCE)
    # Stopped once 50 transfers were acknowledged (how long that takes depends on the machine's load).
    handle = _load(conninfo, tmp_path, users=4, duration_s=120)
    try:
        _wait_until("50 acknowledged transfers", lambda: len(_acks(_records_so_far(handle))) >= 50,
                    timeout=110, handle=handle)
    finally:
        handle.stop()

    records = read_journal(handle.journal_files())
    acks = _acks(records)
    # Only the attempts cut off when the run was stopped may be anything but acknowledged.
    assert all(r.outcome is Outcome.ACK or _stopped(r) for r in records)
    assert len(acks) >= 50
    assert len({r.id for r in records}) == len(records)
    assert len({r.server for r in acks}) == 1 and all(r.timeline for r in acks)
    assert bank.present_transfers(conninfo, [r.id for r in acks]) == {r.id for r in acks}
    assert bank.total_balance(conninfo) == ACCOUNTS * INITIAL_BALANCE
    assert bank.duplicate_transfers(conninfo) == 0

    stats = handle.stats()
    assert stats.requests > 0 and stats.failures == 0
    assert stats.requests == len(acks)
    assert stats.median_ms is not None and stats.p99_ms is not None and stats.rps > 0


def test_distributed_load_spreads_users_over_workers_and_merges_their_journals(
    tmp_path: Path, bank_lab: Lab, conninfo: str
) -> None:
    bank.setup(conninfo, ACCOUNTS, INITIAL_BALANCE)
    handle = start_load(conninfo, tmp_path / "journal", users=4, spawn_rate=4, duration_s=6, accounts=ACCOUNTS,
                        user_rate=20, workdir=tmp_path / "locust", workers=2,
                        master_port=master_port(bank_lab.topology))
    try:
        handle.wait(timeout=150)   # the master quits after its run time and tells its workers to quit
    finally:
        handle.stop()

    assert len(handle.workers) == 2 and all(w.poll() is not None for w in handle.workers)
    per_file = {path.name: _acks(read_journal([path])) for path in handle.journal_files()}
    assert sum(1 for acks in per_file.values() if acks) == 2, {k: len(v) for k, v in per_file.items()}
    records = read_journal(handle.journal_files())
    acks = _acks(records)
    assert all(r.outcome is Outcome.ACK or _stopped(r) for r in records)
    assert len({r.id for r in records}) == len(records)
    assert bank.present_transfers(conninfo, [r.id for r in acks]) == {r.id for r in acks}
    assert bank.total_balance(conninfo) == ACCOUNTS * INITIAL_BALANCE
    # The master's statistics count every worker's transfers.
    assert handle.stats().requests == len(acks)


def test_failover_under_load_loses_no_acknowledged_transfer(
    tmp_path: Path, bank_lab: Lab, cluster: Cluster, conninfo: str
) -> None:
    lab, creds = bank_lab, bank_lab.credentials
    old = _primary(lab, cluster)
    candidates = [cluster.member(n) for n in lab.topology.synchronous_members(cluster) if n != old.name]
    bank.setup(conninfo, ACCOUNTS, INITIAL_BALANCE)
    handle = _load(conninfo, tmp_path, users=4, duration_s=40)
    try:
        _wait_until("acks from the primary", lambda: len(_acks(_records_so_far(handle))) >= 100, 20, handle)
        pid = lab.layout(cluster, old).postmaster_pid()
        assert pid is not None
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)

        new = _most_advanced_standby(lab, cluster, candidates)
        new_endpoint = lab.layout(cluster, new).endpoint
        pg.promote(new_endpoint, creds)
        # The remaining candidate must stream from the new primary for its sync commits to be confirmed.
        for other in candidates:
            if other != new:
                layout = lab.layout(cluster, other)
                pg.repoint(layout.endpoint, creds, slot=other.slot_name,
                           conninfo=pg.primary_conninfo(new_endpoint, other.name, creds, str(layout.passfile)))
        new_server = _server(lab, cluster, new)
        _wait_until("acks from the new primary",
                    lambda: len(_acks(_records_so_far(handle), new_server)) >= 100, 20, handle)
    finally:
        handle.stop()

    records = read_journal(handle.journal_files())
    old_acks, new_acks = _acks(records, _server(lab, cluster, old)), _acks(records, new_server)
    assert {r.server for r in _acks(records)} == {_server(lab, cluster, old), new_server}
    assert max(r.timeline or 0 for r in old_acks) < min(r.timeline or 0 for r in new_acks)
    last_old, first_new = max(r.end for r in old_acks), min(r.end for r in new_acks)
    assert last_old < first_new
    between = [r for r in records if r.outcome is not Outcome.ACK and last_old <= r.end <= first_new]
    assert between, "the kill cut no transfer: every user should see its connection break once"
    assert first_new - killed_at < 10, f"writes resumed {first_new - killed_at:.2f}s after the kill"

    acked = {r.id for r in _acks(records)}
    assert bank.present_transfers(conninfo, acked) == acked  # the string now lands on the new primary only
    assert bank.total_balance(conninfo) == ACCOUNTS * INITIAL_BALANCE
    assert bank.duplicate_transfers(conninfo) == 0
    stats = handle.stats()
    assert stats.requests >= len(acked) and stats.failures >= len(between)


def test_commit_cut_during_the_sync_wait_is_indeterminate(
    tmp_path: Path, bank_lab: Lab, cluster: Cluster, conninfo: str
) -> None:
    """COMMITs that wait for a quorum and lose their connection: outcome unknown, and indeed committed locally."""
    lab, users = bank_lab, 4
    endpoint = lab.layout(cluster, _primary(lab, cluster)).endpoint
    bank.setup(conninfo, ACCOUNTS, INITIAL_BALANCE)
    handle = _load(conninfo, tmp_path, users=users, duration_s=40)
    try:
        with pg.connect(endpoint, lab.credentials, dbname=cluster.database) as admin:
            _wait_until("acks", lambda: len(_acks(_records_so_far(handle))) >= 50, 20, handle)
            # No standby can confirm now: every user's next COMMIT waits for the quorum.
            admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (nobody)'")
            admin.execute("SELECT pg_reload_conf()")
            # Users whose rows a waiting COMMIT still locks wait on the lock, before their own COMMIT.
            blocked = ("SELECT count(*) FILTER (WHERE wait_event = 'SyncRep') > 0 AND count(*) = %s "
                       "FROM pg_stat_activity WHERE application_name = 'drctl-load' "
                       "AND (wait_event = 'SyncRep' OR wait_event_type = 'Lock')")

            def all_blocked() -> bool:
                row = admin.execute(blocked, (users,)).fetchone()
                return row is not None and row[0] is True

            _wait_until("every user blocked, some in COMMIT", all_blocked, 10, handle)
            row = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE application_name = 'drctl-load' AND wait_event = 'SyncRep'").fetchone()
            cut = int(str(row[0])) if row else 0
            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            admin.execute("SELECT pg_reload_conf()")
            cut_at = time.time()
            _wait_until("acks after the cut",
                        lambda: len([r for r in _acks(_records_so_far(handle)) if r.start > cut_at]) >= 50, 20, handle)
    finally:
        handle.stop()

    records = read_journal(handle.journal_files())
    unknown = [r for r in records if r.outcome is Outcome.INDETERMINATE and not _stopped(r)]
    assert cut > 0 and len(unknown) == cut, unknown
    # The wait was cut after the local commit: every one of them is in fact there.
    assert bank.present_transfers(conninfo, [r.id for r in unknown]) == {r.id for r in unknown}
    acked = {r.id for r in _acks(records)}
    assert bank.present_transfers(conninfo, acked) == acked
    assert bank.total_balance(conninfo) == ACCOUNTS * INITIAL_BALANCE


def test_stats_without_measurements_read_as_none(tmp_path: Path) -> None:
    path = tmp_path / "run_stats.csv"
    path.write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
        "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
        "99.99%,100%\n"
        ",Aggregated,0,0,0,0,0,0,0,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A\n"
    )
    assert parse_stats(path) == LoadStats(requests=0, failures=0, median_ms=None, p95_ms=None, p99_ms=None, rps=0.0)
    with pytest.raises(LabError, match="no Locust statistics"):
        parse_stats(tmp_path / "missing_stats.csv")


def test_drill_side_modules_never_import_gevent() -> None:
    """Locust's monkey-patching must stay in the load process: the runner imports only these."""
    probe = ("import sys, orchestrator.drills.bank, orchestrator.drills.load; "
             "print(sorted(m for m in ('locust', 'gevent') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
