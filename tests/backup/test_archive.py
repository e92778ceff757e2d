"""WAL archiving to the real S3 store: a completed segment lands in the store and comes back byte for byte;
a broken store setting stops archiving, never writes, and archiving catches up once it is fixed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.backup.conftest import CLUSTER, BackupLab

pytestmark = pytest.mark.lab


def test_a_completed_segment_is_archived_and_fetched_back_byte_for_byte(backup_lab: BackupLab) -> None:
    segment = backup_lab.switch_wal()
    assert backup_lab.archived(segment)
    keys = [key for key, _ in backup_lab.service.store.list_objects(f"{backup_lab.service.repo}/archive/{CLUSTER}/")]
    assert any(Path(key).name.startswith(segment + "-") for key in keys), keys[-5:]
    layout = backup_lab.service.layout("n1")
    engine = backup_lab.service.engine(layout)
    fetched = engine.home / f"fetched-{segment}"
    engine.archive_get(segment, fetched)
    original = (layout.data / "pg_wal" / segment).read_bytes()
    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(original).digest()
    assert len(original) == backup_lab.topology.postgres.wal_segsize_mb * 1024 * 1024
