"""The archive-outage fault on the real store: stopped by PID under write load, started again; no segment is
dropped, pg_wal holds the backlog, the leader's archive watch raises archive-failed on the real
pg_stat_archiver readings, and archiving catches up (orchestrator/drills/backup_faults.py)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from orchestrator import postgres as pg
from orchestrator.control.archive_watch import ArchiveWatch
from orchestrator.drills import bank
from orchestrator.drills.backup_faults import alert_in_logs, run_archive_outage
from orchestrator.drills.spec import ArchiveOutage, FaultKind
from orchestrator.drills.verdict import CheckName
from orchestrator.errors import DatabaseUnavailable
from orchestrator.waiting import poll
from tests.backup.conftest import CLUSTER, BackupLab

pytestmark = pytest.mark.lab


def _load(conninfo: str, stop: threading.Event, done: list[int]) -> None:
    """Bank transfers with a 4 kB note each until ``stop``: a few segments of WAL per second."""
    rng = random.Random(7)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while not stop.is_set():
            src, dst = rng.sample(range(1, 51), 2)
            with conn.transaction():
                conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (src,))
                conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (dst,))
                conn.execute("INSERT INTO transfers (id, src, dst, amount) VALUES (%s, %s, %s, 1)",
                             (str(uuid.uuid4()), src, dst))
                conn.execute("INSERT INTO outage_padding SELECT repeat(md5(random()::text), 128)")
            done[0] += 1


def test_an_archive_outage_under_load_drops_no_wal_alerts_and_catches_up(backup_lab: BackupLab) -> None:
    creds = backup_lab.lab.credentials
    conninfo = backup_lab.primary.conninfo(creds.app_user, creds.app_password, "ledger", timeout=5)
    bank.setup(conninfo, 50, 1000, reset=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS outage_padding (note text)")
    assert backup_lab.archived(backup_lab.switch_wal())   # archiving works before the outage
    stop, done = threading.Event(), [0]
    events: list[tuple[float, dict[str, object]]] = []
    noted: list[object] = []
    watch = ArchiveWatch(lambda _event, **f: events.append((time.time(), f)), lambda *reading: noted.append(reading))

    def leader() -> None:   # the leader's reading of pg_stat_archiver, on the real primary
        while not stop.is_set():
            with contextlib.suppress(DatabaseUnavailable):
                # stall_s as backup.archive_stall_alert_s would set it: the outage here is 6 s, not minutes
                watch.observe(CLUSTER, "n1", pg.archiver_stats(backup_lab.primary, creds), stall_s=3.0)
            stop.wait(0.5)

    threads = [threading.Thread(target=_load, args=(conninfo, stop, done)), threading.Thread(target=leader)]
    for thread in threads:
        thread.start()
    try:
        assert poll(lambda: bool(noted), timeout=10, interval=0.05)   # a first, healthy reading
        assert not events, events
        fault = ArchiveOutage(kind=FaultKind.ARCHIVE_OUTAGE, duration_s=6, catch_up_timeout_s=120)
        injected = run_archive_outage(backup_lab.service, backup_lab.store, backup_lab.primary, fault,
                                      lambda since: min((t for t, _ in events if t >= since), default=None))
        writes_at_heal = done[0]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        if backup_lab.store.pid() is None:
            backup_lab.store.start(timeout=120)   # later tests need the store

    facts = injected.facts
    assert backup_lab.store.pid() is not None and injected.pids[0] != backup_lab.store.pid()
    assert facts["segments_checked"] >= 3 and facts["missing_segments"] == []
    assert facts["ready_peak"] >= 1                 # segments really waited in pg_wal for the store
    assert writes_at_heal > 0                       # writes went on while the store was down
    assert facts["alert_at"] is not None and facts["catch_up_seconds"] is not None, (facts, events)
    assert "segment(s) waiting to be archived" in str(events[0][1]["error"])   # a hang, not a failure
    assert injected.healed_at is not None and injected.healed_at > injected.at
    assert {c.name: c.passed for c in injected.checks} == {
        CheckName.NO_WAL_DROPPED: True, CheckName.PG_WAL_WITHIN_BUDGET: True, CheckName.ARCHIVE_ALERT: True,
        CheckName.ARCHIVE_CAUGHT_UP: True}
    assert bank.total_balance(conninfo) == 50 * 1000


def test_the_drill_finds_the_leaders_archive_failed_event_in_the_controller_logs(tmp_path: Path) -> None:
    (tmp_path / "dc1.log").write_text(
        '{"ts": 100.0, "event": "archive-failed", "cluster": "payments", "member": "dc1-a"}\n'
        '{"ts": 200.5, "event": "elected", "epoch": 3}\nnot json "archive-failed"\n'
        '{"ts": 210.0, "event": "archive-failed", "cluster": "other", "member": "x"}\n')
    (tmp_path / "dc3.log").write_text('{"ts": 205.25, "event": "archive-failed", "cluster": "payments"}\n')
    assert alert_in_logs(tmp_path, "payments", since=150.0) == 205.25
    assert alert_in_logs(tmp_path, "payments", since=300.0) is None
