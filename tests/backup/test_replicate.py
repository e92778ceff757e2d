"""Replicating the backup bucket to a second real SeaweedFS store (the other region's endpoint): the plan is
pure; the copy makes the replica a repository pgBackRest reads the same backups from, and copies
only what is new the next time."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.backup.replicate import to_copy
from orchestrator.backup.s3 import ObjectStore, StoreSettings
from orchestrator.backup.store import SeaweedStore
from tests.backup.conftest import BackupLab
from tests.conftest import TEST_PORT_BASE, make_lab_dir

REPLICA_PORT = TEST_PORT_BASE + 7000   # 8 ports: the replica store's S3, master, volume and filer ports


@pytest.mark.parametrize(("source", "replica", "plan"), [
    ([("a", 1), ("b", 2)], [], [("a", 1), ("b", 2)]),
    ([("a", 1), ("b", 2)], [("a", 1), ("b", 2)], []),
    ([("b", 2), ("a", 1)], [("a", 1)], [("b", 2)]),
    ([("info", 9)], [("info", 7)], [("info", 9)]),      # rewritten at the source: copied again
    ([("a", 1)], [("a", 1), ("expired", 5)], []),       # expired at the source: kept at the replica
], ids=["empty-replica", "in-sync", "new-object", "resized", "expired"])
def test_the_plan_copies_what_the_replica_lacks(source: list[tuple[str, int]], replica: list[tuple[str, int]],
                                                plan: list[tuple[str, int]]) -> None:
    assert to_copy(source, replica) == plan


@pytest.fixture
def replica_store() -> Iterator[SeaweedStore]:
    root = make_lab_dir("drctl-replica-")
    store = SeaweedStore(root / "s3", "127.0.0.1", REPLICA_PORT)
    try:
        store.start(timeout=60)
        yield store
    finally:
        store.stop()


@pytest.mark.lab
def test_replication_makes_a_second_repository_with_the_same_backups_and_copies_only_what_is_new(
        backup_lab: BackupLab, replica_store: SeaweedStore, scratch: Path) -> None:
    service = backup_lab.service
    service.run("incr")                      # at least one backup (a full one if none exists yet)
    spec = service.spec.model_copy(update={"endpoint": replica_store.endpoint, "bucket": "drctl-replica"})
    settings = StoreSettings(spec, "clusters.ledger.backup.replica", replica_store.credentials_file,
                             replica_store.ca_file)
    replica = ObjectStore(settings)
    before = service.store.list_objects(service.repo)

    first = service.replicate(replica)

    assert first.copied >= len(before) > 0 and first.copied_bytes > 0
    assert to_copy(before, replica.list_objects(service.repo)) == []
    wal = next(key for key, _ in before if "/archive/" in key and key.endswith(".lz4"))
    assert replica.get_bytes(wal) == service.store.get_bytes(wal)
    # pgBackRest reads the replica as the same repository: the same backups, the same WAL range.
    layout = service.layout("n1")
    engine = dataclasses.replace(service.engine(layout), store=settings, keys=replica.keys,
                                 home=scratch / "pgbackrest-replica")
    engine.write()
    assert engine.catalog().backups == service.catalog().backups

    assert backup_lab.archived(backup_lab.switch_wal())
    second = service.replicate(replica)
    assert 1 <= second.copied < first.copied and second.in_sync >= len(before)
