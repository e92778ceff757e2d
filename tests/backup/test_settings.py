"""Pure parts: the topology's backup section, recovery targets, and the choice of base backup (no servers)."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backup.catalog import Backup, choose_backup, parse_info, parse_lsn
from orchestrator.backup.errors import BackupConfigError, BackupFailed
from orchestrator.backup.restore import Target, parse_time
from orchestrator.errors import TopologyError
from orchestrator.topology import Compression, load_topology, parse_topology
from tests.backup.conftest import backup_topology
from tests.conftest import REPO


def test_a_topology_without_backup_sections_stays_valid() -> None:
    topo = parse_topology(backup_topology())
    data = topo.model_dump(mode="json")
    data["clusters"][0].pop("backup")
    assert parse_topology(data).clusters[0].backup is None


def test_the_shipped_backup_topology_is_valid() -> None:
    from orchestrator.topology import load_topology

    topo = load_topology(REPO / "topology" / "lab-backup.yaml")
    spec = topo.cluster("payments").backup
    assert spec is not None and spec.host == "127.0.0.1" and spec.compression is Compression.LZ4
    # It is the shipped lab plus a backup section, nothing else: the two files never drift apart.
    shipped = load_topology(REPO / "topology" / "lab.yaml")
    without = topo.model_copy(update={"clusters": tuple(c.model_copy(update={"backup": None})
                                                        for c in topo.clusters)})
    assert without == shipped


def test_defaults_and_parsed_endpoint() -> None:
    spec = parse_topology(backup_topology(endpoint="https://s3.example.net/")).clusters[0].backup
    assert spec is not None
    assert (spec.endpoint, spec.host, spec.port, spec.region, spec.retention_full) == (
        "https://s3.example.net", "s3.example.net", 443, "us-east-1", 2)


@pytest.mark.parametrize(("change", "expected"), [
    ({"endpoint": "http://127.0.0.1:9000"}, "clusters.0.backup.endpoint: 'http://127.0.0.1:9000' is not an "
     "https://HOST[:PORT] URL; the backup engine (pgBackRest) speaks only HTTPS"),
    ({"endpoint": "https://127.0.0.1:99999"}, "clusters.0.backup.endpoint: 'https://127.0.0.1:99999': port 99999 is "
     "outside 1-65535"),
    ({"bucket": "Backups"}, "clusters.0.backup.bucket: 'Backups' is not a valid S3 bucket name"),
    ({"bucket": "ab"}, "clusters.0.backup.bucket: 'ab' is not a valid S3 bucket name"),
    ({"credentials_file": " "}, "clusters.0.backup.credentials_file: empty path"),
    ({"retention_full": 0}, "clusters.0.backup.retention_full: Input should be greater than or equal to 1"),
    ({"compression": "brotli"}, "clusters.0.backup.compression: Input should be 'none', 'gz', 'lz4' or 'zst'"),
    ({"prefix": "lab/x"}, "clusters.0.backup.prefix: 'lab/x' is not a key prefix like /lab/payments"),
    ({"secret_key": "x"}, "clusters.0.backup.secret_key: unknown field; remove it or check its spelling"),
], ids=["http", "port", "upper-bucket", "short-bucket", "empty-creds", "retention", "compression", "prefix",
        "secret-in-topology"])
def test_bad_backup_settings_are_one_line_naming_the_field(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(backup_topology(**change))
    assert str(caught.value).startswith("topology: " + expected), str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_endpoint_names_the_field() -> None:
    data = backup_topology()
    data["clusters"][0]["backup"].pop("endpoint")
    with pytest.raises(TopologyError, match=r"^topology: clusters\.0\.backup\.endpoint: required field is missing"):
        parse_topology(data)


# ---- recovery targets -------------------------------------------------------------------------------


def test_targets_render_the_engine_options() -> None:
    when = datetime.datetime(2026, 12, 2, 9, 30, 0, 250000, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert Target(time=when).engine_options() == ["--type=time", "--target=2026-12-02 07:30:00.250000+00:00",
                                                  "--target-action=promote"]
    assert Target(lsn="0/3000060").engine_options() == ["--type=lsn", "--target=0/3000060", "--target-action=promote"]
    assert Target(immediate=True).engine_options() == ["--type=immediate", "--target-action=promote"]
    assert Target().engine_options() == ["--type=default"]


@pytest.mark.parametrize(("text", "expected"), [
    ("yesterday", "--target-time: 'yesterday' is not an ISO 8601 time"),
    ("2026-12-02T07:40:00", "--target-time: '2026-12-02T07:40:00' has no time zone; add one"),
])
def test_bad_target_times(text: str, expected: str) -> None:
    with pytest.raises(BackupConfigError, match="^" + re.escape(expected)):
        parse_time(text)


def test_bad_targets() -> None:
    with pytest.raises(BackupConfigError, match=r"^--target-lsn: '3000060' is not an LSN"):
        Target(lsn="3000060")
    with pytest.raises(BackupConfigError, match="give one recovery target, not both"):
        Target(time=datetime.datetime.now(datetime.UTC), lsn="0/1")
    assert parse_lsn("1/0000002A") == (1 << 32) + 42


# ---- choosing the base backup ---------------------------------------------------------------------------


def _backup(n: int, stopped: float, lsn: int) -> Backup:
    return Backup(label=f"b{n}", kind="full", started=stopped - 1, stopped=stopped, size=1, stored=1,
                  wal_start="", wal_stop="", lsn_start="0/0", lsn_stop=f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}")


_backups = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2**40)), min_size=1, max_size=8).map(
    lambda pairs: [_backup(i, float(t), lsn) for i, (t, lsn) in enumerate(pairs)])


@given(_backups, st.floats(0, 10_002))
def test_a_time_target_gets_the_newest_backup_finished_a_second_before_it(backups: list[Backup], target: float
                                                                          ) -> None:
    eligible = [b for b in backups if b.stopped + 1 <= target]
    if not eligible:
        with pytest.raises(BackupConfigError, match=r"^--target-time: every backup finished after the target"):
            choose_backup(backups, target_time=target)
        return
    chosen = choose_backup(backups, target_time=target)
    assert chosen.stopped + 1 <= target
    assert chosen.stopped == max(b.stopped for b in eligible)


@given(_backups, st.integers(0, 2**40))
def test_an_lsn_target_gets_a_backup_ending_at_or_before_it(backups: list[Backup], target: int) -> None:
    eligible = [b for b in backups if b.lsn_stop_int <= target]
    if not eligible:
        with pytest.raises(BackupConfigError, match=r"^--target-lsn: every backup ends past the target LSN"):
            choose_backup(backups, target_lsn=target)
        return
    assert choose_backup(backups, target_lsn=target).lsn_stop_int <= target


def test_no_backup_at_all_says_to_take_one() -> None:
    with pytest.raises(BackupConfigError, match="run 'drctl backup run CLUSTER' first"):
        choose_backup([])


def test_info_without_the_stanza_says_to_set_it_up() -> None:
    with pytest.raises(BackupFailed, match="has no stanza 'ledger'; run 'drctl backup setup ledger'"):
        parse_info([{"name": "other", "status": {"code": 0}}], "ledger")


def test_the_repository_passphrase_is_read_from_a_private_file_and_refused_otherwise(tmp_path: Path) -> None:
    from orchestrator.backup.s3 import StoreSettings, load_passphrase, write_passphrase

    topo = load_topology(REPO / "topology" / "lab-backup.yaml")
    spec = topo.cluster("payments").backup
    assert spec is not None and spec.encryption_key_file
    settings = StoreSettings.resolve(spec, "payments", tmp_path)
    field = "clusters.payments.backup.encryption_key_file"
    with pytest.raises(BackupConfigError, match=f"^{field}: .* does not exist; write the repository passphrase"):
        load_passphrase(settings)
    write_passphrase(tmp_path / spec.encryption_key_file)
    path = tmp_path / spec.encryption_key_file
    first = load_passphrase(settings)
    assert first is not None and len(first) >= 48 and (path.stat().st_mode & 0o777) == 0o600
    write_passphrase(path)                      # never replaced: the old backups need the old passphrase
    assert load_passphrase(settings) == first
    path.chmod(0o644)
    with pytest.raises(BackupConfigError, match=f"^{field}: .* is readable by others .*chmod 600 it"):
        load_passphrase(settings)
    unencrypted = StoreSettings.resolve(spec.model_copy(update={"encryption_key_file": ""}), "payments", tmp_path)
    assert load_passphrase(unencrypted) is None
