"""Backup -> restore -> the data are there, and point-in-time recovery lands exactly on its target.

Real PostgreSQL 15 and a real SeaweedFS store (tests/backup/conftest.py). The workload is the
drills' bank: money moves between accounts, each transfer a row with a unique id, so a restore
is checked by the money-conservation sum and by the exact set of transfer ids it holds.
"""

from __future__ import annotations

import datetime
import random
import uuid
from pathlib import Path

import psycopg
import pytest

from orchestrator import postgres as pg
from orchestrator.backup import proof
from orchestrator.backup.restore import Target
from orchestrator.drills import bank
from orchestrator.waiting import poll
from tests.backup.conftest import SCRATCH_PORT, BackupLab

pytestmark = pytest.mark.lab

ACCOUNTS, BALANCE = 50, 1000


def _conninfo(endpoint: pg.Endpoint, creds: pg.Credentials) -> str:
    return endpoint.conninfo(creds.app_user, creds.app_password, "ledger", timeout=5)


def _transfer(conninfo: str, count: int, rng: random.Random) -> list[str]:
    """``count`` committed transfers, one transaction each; their ids."""
    ids = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for _ in range(count):
            src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)
            amount, tid = rng.randint(1, 50), str(uuid.uuid4())
            with conn.transaction():
                conn.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, src))
                conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, dst))
                conn.execute("INSERT INTO transfers (id, src, dst, amount) VALUES (%s, %s, %s, %s)",
                             (tid, src, dst, amount))
            ids.append(tid)
    return ids


def _transfer_ids(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {str(row[0]) for row in conn.execute("SELECT id FROM transfers").fetchall()}


def _server_now(bl: BackupLab) -> datetime.datetime:
    with bl.connect() as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime.datetime)
    return row[0]


@pytest.fixture(scope="module")
def base_backup(backup_lab: BackupLab) -> str:
    """The bank, a few transfers, and a full base backup of it; the backup's label."""
    conninfo = _conninfo(backup_lab.primary, backup_lab.lab.credentials)
    bank.setup(conninfo, ACCOUNTS, BALANCE)
    _transfer(conninfo, 30, random.Random(1))
    backup, _ = backup_lab.service.run("full")
    return backup.label


def _restored(bl: BackupLab) -> str:
    return _conninfo(pg.Endpoint("restored", "127.0.0.1", SCRATCH_PORT), bl.lab.credentials)


def test_backup_then_restore_holds_every_committed_transfer_and_conserves_money(
        backup_lab: BackupLab, base_backup: str, scratch: Path) -> None:
    primary = _conninfo(backup_lab.primary, backup_lab.lab.credentials)
    _transfer(primary, 40, random.Random(2))       # after the backup: only the WAL archive has them
    assert backup_lab.archived(backup_lab.switch_wal())
    expected = _transfer_ids(primary)

    report = backup_lab.service.restore("n1", Target(), scratch=scratch, port=SCRATCH_PORT)

    assert report.backup == base_backup
    assert _transfer_ids(_restored(backup_lab)) == expected
    assert bank.total_balance(_restored(backup_lab)) == ACCOUNTS * BALANCE
    assert report.restored_bytes > 20_000_000 and report.mb_per_s > 0


@pytest.mark.parametrize("kind", ["time", "lsn"])
def test_point_in_time_recovery_holds_exactly_the_transfers_committed_before_the_target(
        backup_lab: BackupLab, base_backup: str, scratch: Path, kind: str) -> None:
    primary = _conninfo(backup_lab.primary, backup_lab.lab.credentials)
    backups = {b.label: b for b in backup_lab.service.catalog().backups}
    # A time target must fall at least a second after the backup finished (whole-second stamps).
    assert poll(lambda: _server_now(backup_lab).timestamp() >= backups[base_backup].stopped + 1.05, timeout=5,
                interval=0.05)
    _transfer(primary, 25, random.Random(3))
    with backup_lab.connect() as conn:
        row = conn.execute("SELECT clock_timestamp(), pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    before = _transfer_ids(primary)
    after = _transfer(primary, 25, random.Random(4))
    assert backup_lab.archived(backup_lab.switch_wal())
    target = Target(time=row[0]) if kind == "time" else Target(lsn=str(row[1]))

    backup_lab.service.restore("n1", target, scratch=scratch, port=SCRATCH_PORT)

    restored = _transfer_ids(_restored(backup_lab))
    assert restored == before                       # none before the target missing ...
    assert not restored & set(after)                # ... none after it present
    assert bank.total_balance(_restored(backup_lab)) == ACCOUNTS * BALANCE


def test_a_verified_restore_is_recorded_and_listed_and_a_newer_backup_is_unproven(
        backup_lab: BackupLab, base_backup: str, scratch: Path) -> None:
    def money(endpoint: pg.Endpoint) -> dict[str, object]:
        total = bank.total_balance(_conninfo(endpoint, backup_lab.lab.credentials))
        assert total == ACCOUNTS * BALANCE
        return {"total_balance": total}

    record = backup_lab.service.verify(base_backup, scratch=scratch, port=SCRATCH_PORT, check=money)
    newer, _ = backup_lab.service.run("incr")

    rows = {row.backup.label: row for row in backup_lab.service.listing()}
    checks = record["checks"]
    assert checks["total_balance"] == ACCOUNTS * BALANCE
    assert checks["pgbackrest_verify"] == "ok" and checks["pg_amcheck"] == "ok"
    # restored to the end of the archive: the newest archived segment was replayed
    assert checks["wal_reached"] >= checks["wal_last_archived"] >= rows[base_backup].backup.wal_stop
    assert checks["bank_opening"] == BALANCE and checks["bank_accounts"] == ACCOUNTS
    assert checks["bank_total"] == ACCOUNTS * BALANCE and checks["bank_transfers"] >= 30
    assert rows[base_backup].verified == record
    assert rows[newer.label].verified is None
    assert backup_lab.service.last_verified_at() == record["verified_at"]   # drctl_backup_last_verified_restore_...
    assert rows[newer.label].backup.kind == "incr"
    assert rows[base_backup].backup.wal_start <= rows[base_backup].backup.wal_stop < rows[newer.label].backup.wal_start
    assert not list(scratch.rglob("PG_VERSION"))    # the scratch copy was stopped and removed


def test_a_failed_check_is_recorded_as_a_failed_verification_and_the_backup_stays_unproven(
        backup_lab: BackupLab, base_backup: str, scratch: Path) -> None:
    def corrupt(endpoint: pg.Endpoint) -> dict[str, object]:
        with pg.connect(endpoint, backup_lab.lab.credentials, dbname="ledger", timeout=5) as conn:
            conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")   # money from nowhere
            return proof.bank_conservation(conn) or {}

    newest, _ = backup_lab.service.run("incr")
    with pytest.raises(proof.ProofFailed, match="bank: money not conserved"):
        backup_lab.service.verify(newest.label, scratch=scratch, port=SCRATCH_PORT, check=corrupt)

    rows = {row.backup.label: row for row in backup_lab.service.listing()}
    assert rows[newest.label].verified is None
    assert rows[newest.label].failed is not None
    assert "money not conserved" in rows[newest.label].failed["error"]
    assert not list(scratch.rglob("PG_VERSION"))


def test_a_backup_of_a_primary_with_synchronous_standbys_is_verified_without_them(
        backup_lab: BackupLab, base_backup: str, scratch: Path) -> None:
    # The leader keeps synchronous_standby_names in postgresql.auto.conf, which the backup copies; a
    # scratch copy has no standbys, so pg_amcheck's CREATE EXTENSION would wait for one forever.
    with backup_lab.connect() as conn:       # written to the file only: no reload, the primary never waits
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (nobody)'")
    try:
        label = backup_lab.service.run("incr")[0].label
    finally:
        with backup_lab.connect() as conn:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")

    record = backup_lab.service.verify(label, scratch=scratch, port=SCRATCH_PORT)

    assert record["checks"]["pg_amcheck"] == "ok" and record["label"] == label
