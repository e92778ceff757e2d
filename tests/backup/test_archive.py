"""WAL archiving to the real S3 store: a completed segment lands in the store and comes back byte for byte;
a broken store setting stops archiving, never writes, and archiving catches up once it is fixed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.waiting import poll
from tests.backup.conftest import CLUSTER, BackupLab

pytestmark = pytest.mark.lab


def _switch_wal(bl: BackupLab) -> str:
    """Complete the current segment (after writing something into it); return its file name."""
    with bl.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS archive_probe (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO archive_probe DEFAULT VALUES")
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert row is not None
    return str(row[0])


def _archived(bl: BackupLab, segment: str, timeout: float = 30.0) -> bool:
    def done() -> bool:
        with bl.connect() as conn:
            row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
        return row is not None and row[0] is not None and str(row[0]) >= segment
    return bool(poll(done, timeout=timeout, interval=0.05))


def test_a_completed_segment_is_archived_and_fetched_back_byte_for_byte(backup_lab: BackupLab) -> None:
    segment = _switch_wal(backup_lab)
    assert _archived(backup_lab, segment)
    keys = [key for key, _ in backup_lab.service.store.list_objects(f"{backup_lab.service.repo}/archive/{CLUSTER}/")]
    assert any(Path(key).name.startswith(segment + "-") for key in keys), keys[-5:]
    layout = backup_lab.service.layout("n1")
    engine = backup_lab.service.engine(layout)
    fetched = engine.home / f"fetched-{segment}"
    engine.archive_get(segment, fetched)
    original = (layout.data / "pg_wal" / segment).read_bytes()
    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(original).digest()
    assert len(original) == backup_lab.topology.postgres.wal_segsize_mb * 1024 * 1024
