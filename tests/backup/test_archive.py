"""WAL archiving to the real S3 store: a completed segment lands in the store and comes back byte for byte;
the leader's reading of pg_stat_archiver (orchestrator.postgres.archiver_stats) sees a failing
archive_command start one failure streak and end it once archiving works again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator import postgres as pg
from orchestrator.control.archive_watch import ArchiveWatch
from orchestrator.decisions.archiving import ArchiverStats, failing
from orchestrator.waiting import poll
from tests.backup.conftest import CLUSTER, BackupLab

pytestmark = pytest.mark.lab


def test_a_completed_segment_is_archived_and_fetched_back_byte_for_byte(backup_lab: BackupLab) -> None:
    segment = backup_lab.switch_wal()
    assert backup_lab.archived(segment)
    keys = [key for key, _ in backup_lab.service.store.list_objects(f"{backup_lab.service.repo}/archive/{CLUSTER}/")]
    stored = [key for key in keys if Path(key).name.startswith(segment + "-")]
    assert stored, keys[-5:]
    # Encrypted at rest: the store holds only the engine's AES-256-CBC ciphertext (OpenSSL's salted format).
    assert backup_lab.service.store.get_bytes(stored[0]).startswith(b"Salted__")
    layout = backup_lab.service.layout("n1")
    engine = backup_lab.service.engine(layout)
    fetched = engine.home / f"fetched-{segment}"
    engine.archive_get(segment, fetched)
    original = (layout.data / "pg_wal" / segment).read_bytes()
    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(original).digest()
    assert len(original) == backup_lab.topology.postgres.wal_segsize_mb * 1024 * 1024


def test_a_failing_archive_command_is_one_failure_streak(backup_lab: BackupLab) -> None:
    creds = backup_lab.lab.credentials
    segment = backup_lab.switch_wal()
    assert backup_lab.archived(segment)
    working = pg.archiver_stats(backup_lab.primary, creds)
    assert working.last_archived_wal is not None and working.last_archived_wal >= segment
    assert not failing(working) and working.last_archived_at is not None
    with backup_lab.connect() as conn:
        command = conn.execute("SHOW archive_command").fetchone()
        assert command is not None
        conn.execute("ALTER SYSTEM SET archive_command = 'false'")
        conn.execute("SELECT pg_reload_conf()")
    readings: list[ArchiverStats] = [working]
    switched = [backup_lab.switch_wal()]
    try:
        def failed() -> bool:
            readings.append(pg.archiver_stats(backup_lab.primary, creds))
            if readings[-1].failed_count > working.failed_count:
                return True
            last = readings[-1].last_archived_wal
            if last is not None and last >= switched[-1]:
                # Archived with the old command: pg_reload_conf() had not reached the archiver yet.
                switched.append(backup_lab.switch_wal())
            return False
        assert poll(failed, timeout=60, interval=0.1), "archive_command 'false' never failed"
        broken = readings[-1].last_failed_wal
        assert failing(readings[-1]) and broken is not None and broken in switched, (broken, switched)
    finally:
        with backup_lab.connect() as conn:
            conn.execute("ALTER SYSTEM RESET archive_command")
            conn.execute("SELECT pg_reload_conf()")

        def restored() -> bool:  # the reload is asynchronous: a later session sees it
            with backup_lab.connect() as conn:
                return conn.execute("SHOW archive_command").fetchone() == command
        assert poll(restored, timeout=30, interval=0.05), "archive_command was not restored"
    assert backup_lab.archived(switched[-1], timeout=90), "archiving did not catch up once the command worked again"
    readings.append(pg.archiver_stats(backup_lab.primary, creds))
    assert not failing(readings[-1])
    # The leader's watch over these real readings: one archive-failed event for the streak.
    events: list[dict[str, object]] = []
    watch = ArchiveWatch(lambda _event, **fields: events.append(fields), lambda *_: None)
    for reading in readings:
        watch.observe(CLUSTER, "n1", reading)
    assert len(events) == 1, [(r.failed_count, r.last_failed_at, r.last_archived_at) for r in readings]
    assert f"on segment {broken}" in str(events[0]["error"])
