"""Total loss of a member's data: ``drctl restore CLUSTER --to MEMBER`` rebuilds it from the store through
``playbooks/restore.yml``, with every archived commit, and it takes writes and archives again (a new timeline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from orchestrator import pgserver
from tests.backup.conftest import CLUSTER, SCRATCH_PORT, BackupLab
from tests.conftest import REPO

pytestmark = pytest.mark.lab


def test_a_wiped_member_is_restored_through_the_playbook_with_every_archived_commit(backup_lab: BackupLab) -> None:
    service = backup_lab.service
    service.run("full")
    with backup_lab.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS survivors (id int PRIMARY KEY)")
        conn.execute("INSERT INTO survivors SELECT g FROM generate_series(1, 500) g ON CONFLICT DO NOTHING")
        count = conn.execute("SELECT count(*) FROM survivors").fetchone()
    assert backup_lab.archived(backup_lab.switch_wal())
    layout = service.layout("n1")
    pgserver.stop(layout, mode="immediate")
    shutil.rmtree(layout.data)                      # the member's data are gone

    env = {k: v for k, v in os.environ.items() if k not in ("DRCTL_TOPOLOGY", "DRCTL_LAB_DIR")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "restore", CLUSTER, "--to", "n1", "--lab-dir",
                           str(backup_lab.root)], capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
                          env={**env, "COLUMNS": "300"})

    assert proc.returncode == 0, proc.stderr
    assert "(playbook restore.yml) to the end of the archive" in proc.stdout
    with backup_lab.connect() as conn:
        assert conn.execute("SELECT count(*) FROM survivors").fetchone() == count
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        conn.execute("INSERT INTO survivors VALUES (501)")
    segment = backup_lab.switch_wal()
    assert int(segment[:8], 16) >= 2                # the restored server promoted onto a new timeline ...
    assert backup_lab.archived(segment)             # ... and archives again


def test_the_cli_verifies_a_backup_and_lists_it_as_proven(backup_lab: BackupLab) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DRCTL_TOPOLOGY", "DRCTL_LAB_DIR")}

    def drctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--lab-dir", str(backup_lab.root)],
                              capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
                              env={**env, "COLUMNS": "300"})

    label = backup_lab.service.run("full")[0].label
    verify = drctl("backup", "verify", CLUSTER, "--set", label, "--port", str(SCRATCH_PORT))
    listed = drctl("backup", "list", CLUSTER, "--json")

    assert verify.returncode == 0, verify.stderr
    assert f"backup {label} restored and checked" in verify.stdout
    assert listed.returncode == 0, listed.stderr
    rows = {row["label"]: row for row in json.loads(listed.stdout)}
    assert rows[label]["verified"]["checks"]["databases"] == ["ledger", "postgres", "template1"]
    assert rows[label]["size"] > 0 and rows[label]["wal_start"] <= rows[label]["wal_stop"]
    assert not list(backup_lab.root.glob("drctl-verify-*"))   # the scratch copy is gone
