"""Fixtures for the backup tests: one real SeaweedFS S3 store and one real PostgreSQL 15 primary per session.

Both live in one lab directory (the store under ``s3/``, as ``drctl`` expects): a one-member
cluster ``ledger`` whose topology has a ``backup:`` section pointing at the store over HTTPS.
Ports: the store from DRCTL_TEST_PORT_BASE+1500 (8 ports), the lab from +1520 (20 ports; the
member gets +1523, scratch restores +1540 upwards). Every process is stopped by PID.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import postgres as pg
from orchestrator.backup.service import BackupService, lab_store
from orchestrator.backup.store import SeaweedStore
from orchestrator.lab import Lab
from orchestrator.processes import read_pid, stop
from orchestrator.topology import Topology, parse_topology
from orchestrator.waiting import poll
from tests.conftest import TEST_PORT_BASE, make_lab_dir

STORE_PORT = TEST_PORT_BASE + 1500
LAB_BASE = TEST_PORT_BASE + 1520
SCRATCH_PORT = TEST_PORT_BASE + 1540
CLUSTER = "ledger"


def backup_topology(**backup: Any) -> dict[str, Any]:
    spec = {"endpoint": f"https://127.0.0.1:{STORE_PORT}", "bucket": "drctl-test", "credentials_file":
            "s3/credentials.json", "ca_file": "s3/tls/cert.pem", "retention_full": 2, "compression": "lz4",
            "encryption_key_file": "s3/repository.passphrase", **backup}
    return {
        "name": "bk",
        "regions": [{"name": "east", "datacenters": [{"name": "dc1"}]}],
        "ports": {"base": LAB_BASE, "span": 20},
        "clusters": [{
            "name": CLUSTER,
            "members": [{"name": "n1", "datacenter": "dc1", "role": "primary"}],
            "replication": {"quorum": 0},
            "targets": {"rpo_seconds": 1},
            "backup": spec,
        }],
    }


@dataclass
class BackupLab:
    lab: Lab
    store: SeaweedStore
    service: BackupService

    @property
    def topology(self) -> Topology:
        return self.lab.topology

    @property
    def root(self) -> Path:
        return self.lab.root

    @property
    def primary(self) -> pg.Endpoint:
        return self.service.layout("n1").endpoint

    def connect(self, dbname: str = "postgres") -> pg.Connection:
        return pg.connect(self.primary, self.lab.credentials, dbname=dbname, timeout=10)

    def switch_wal(self) -> str:
        """Complete the current segment (after writing something into it); return its file name."""
        with self.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS archive_probe (id serial PRIMARY KEY, at timestamptz "
                         "DEFAULT now())")
            conn.execute("INSERT INTO archive_probe DEFAULT VALUES")
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        return str(row[0])

    def archived(self, segment: str, timeout: float = 30.0) -> bool:
        """Whether the primary reports ``segment`` (or a later one) archived within ``timeout``."""
        def done() -> bool:
            with self.connect() as conn:
                row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            return row is not None and row[0] is not None and str(row[0]) >= segment
        return bool(poll(done, timeout=timeout, interval=0.05))


@pytest.fixture(scope="session")
def backup_lab() -> Iterator[BackupLab]:
    """``lab up`` of a one-member cluster with a backup section: the store runs and the member archives to it."""
    topology = parse_topology(backup_topology())
    lab = Lab(topology, make_lab_dir("drctl-backup-"), controllers=False, agents=False)
    store = lab_store(topology, lab.root)
    assert store is not None
    try:
        lab.up()           # starts the store and creates the bucket and the stanza (Lab._start_backups)
        assert store.pid() is not None
        yield BackupLab(lab, store, BackupService(topology, CLUSTER, lab.root, lab.credentials))
    finally:
        lab.down()      # stops the store too, after the primary (whose archiver still pushes its last segments)
        store.stop()    # a no-op unless lab.up failed half-way


@pytest.fixture
def scratch() -> Iterator[Path]:
    """An empty directory the postgres user can use; any server restored into it is stopped by PID after the test."""
    path = make_lab_dir("drctl-restore-")
    try:
        yield path
    finally:
        for pidfile in path.glob("pg/*/*/data/postmaster.pid"):
            pid = read_pid(pidfile)
            if pid is not None:
                stop(pid, timeout=10)
        shutil.rmtree(path, ignore_errors=True)
