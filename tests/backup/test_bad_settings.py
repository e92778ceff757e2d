"""A wrong endpoint, CA or key is one line naming the topology field and the fix, and the primary's writes go
on while archiving fails; archiving catches up once the setting is fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.backup.errors import BackupConfigError, BackupFailed
from orchestrator.backup.s3 import S3Keys, write_keys
from orchestrator.backup.service import BackupService
from orchestrator.topology import parse_topology
from orchestrator.waiting import poll
from tests.backup.conftest import CLUSTER, LAB_BASE, STORE_PORT, BackupLab, backup_topology
from tests.conftest import REPO

pytestmark = pytest.mark.lab
FIELD = f"clusters.{CLUSTER}.backup"


def _service(bl: BackupLab, **backup: Any) -> BackupService:
    return BackupService(parse_topology(backup_topology(**backup)), CLUSTER, bl.root, bl.lab.credentials)


def _wrong_keys(bl: BackupLab, name: str, mode: int = 0o600) -> str:
    real = json.loads(bl.store.credentials_file.read_text())
    path = bl.root / "s3" / name
    write_keys(path, S3Keys(real["access_key"], real["secret_key"] + "x"))
    os.chmod(path, mode)
    return f"s3/{name}"


def test_an_endpoint_nothing_listens_on_names_the_endpoint_field(backup_lab: BackupLab) -> None:
    service = _service(backup_lab, endpoint=f"https://127.0.0.1:{LAB_BASE + 19}")
    with pytest.raises(BackupFailed) as caught:
        service.catalog()
    assert str(caught.value).startswith(f"{FIELD}.endpoint: cannot reach https://127.0.0.1:{LAB_BASE + 19}")
    assert "\n" not in str(caught.value)


def test_a_wrong_secret_names_the_credentials_file(backup_lab: BackupLab) -> None:
    service = _service(backup_lab, credentials_file=_wrong_keys(backup_lab, "wrong.json"))
    with pytest.raises(BackupConfigError) as caught:
        service.run("full")
    assert str(caught.value).startswith(f"{FIELD}.credentials_file: https://127.0.0.1:{STORE_PORT} rejected the keys")
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert str(backup_lab.root / "s3" / "wrong.json") in str(caught.value)


@pytest.mark.parametrize(("change", "expected"), [
    ({"credentials_file": "s3/missing.json"}, f"{FIELD}.credentials_file: "),
    ({"ca_file": "s3/tls/missing.pem"}, f"{FIELD}.ca_file: "),
    ({"ca_file": ""}, f"{FIELD}.ca_file: TLS verification of https://127.0.0.1:{STORE_PORT} failed"),
    ({"bucket": "no-such-bucket"}, f"{FIELD}.bucket: https://127.0.0.1:{STORE_PORT} has no bucket 'no-such-bucket'"),
], ids=["missing-keys", "missing-ca", "system-cas", "bucket"])
def test_bad_store_settings_name_their_field(backup_lab: BackupLab, change: dict[str, str], expected: str) -> None:
    with pytest.raises(BackupConfigError) as caught:
        _service(backup_lab, **change).listing()
    assert str(caught.value).startswith(expected)


def test_a_credentials_file_readable_by_others_is_refused(backup_lab: BackupLab) -> None:
    name = _wrong_keys(backup_lab, "open.json", mode=0o644)
    with pytest.raises(BackupConfigError, match=r"credentials_file: .* is readable by others \(mode 644\); chmod 600"):
        _service(backup_lab, credentials_file=name).catalog()


def test_the_cli_prints_one_line_naming_the_field(backup_lab: BackupLab, tmp_path: Path) -> None:
    topology = tmp_path / "t.yaml"
    topology.write_text(yaml.safe_dump(backup_topology(credentials_file=_wrong_keys(backup_lab, "cli.json"))))
    env = {k: v for k, v in os.environ.items() if k not in ("DRCTL_TOPOLOGY", "DRCTL_LAB_DIR")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "backup", "list", CLUSTER, "--topology",
                           str(topology), "--lab-dir", str(backup_lab.root)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO, env={**env, "COLUMNS": "300"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {FIELD}.credentials_file: "), proc.stderr


def test_writes_go_on_while_archiving_fails_and_archiving_catches_up_once_fixed(backup_lab: BackupLab) -> None:
    layout = backup_lab.service.layout("n1")
    broken = _service(backup_lab, credentials_file=_wrong_keys(backup_lab, "outage.json"))
    with backup_lab.connect() as conn:
        failed_before = int(conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0])  # type: ignore[index]
        conn.execute("CREATE TABLE IF NOT EXISTS during_outage (id int PRIMARY KEY)")
    try:
        broken.engine(layout).write()                      # the member's archive_command now gets refused
        segment = backup_lab.switch_wal()
        with backup_lab.connect() as conn:
            def failing() -> bool:
                row = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()
                return row is not None and int(row[0]) > failed_before
            assert poll(failing, timeout=30, interval=0.05)
            conn.execute("SET statement_timeout = '5s'")
            conn.execute("INSERT INTO during_outage SELECT generate_series(1, 1000)")
            row = conn.execute("SELECT count(*), (SELECT last_archived_wal FROM pg_stat_archiver) "
                               "FROM during_outage").fetchone()
            assert row is not None and row[0] == 1000
            assert row[1] is None or str(row[1]) < segment      # nothing was reported archived that was not
            assert (layout.data / "pg_wal" / "archive_status" / f"{segment}.ready").exists()   # kept, not dropped
    finally:
        backup_lab.service.write_configs()
    assert backup_lab.archived(segment)
