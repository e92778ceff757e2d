"""Replicating the backup bucket to the other region's S3 endpoint (``drctl backup replicate``).

pgBackRest writes its repository once, to one store; a region loss must not take the backups
with it. :func:`replicate` copies every object of the cluster's repository prefix that the
replica lacks, or holds with another size (a rewritten ``backup.info``, for instance), from the
primary store to the replica bucket under the same key, so ``pgbackrest restore`` pointed at the
replica finds the same repository. Objects the engine expired at the source stay at the replica
(a copy is never a deletion path). :func:`to_copy` is the pure plan.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.backup.s3 import ObjectStore


def to_copy(source: Iterable[tuple[str, int]], replica: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """The source objects (key, size) missing from the replica or of another size there, in key order."""
    held = dict(replica)
    return sorted((key, size) for key, size in source if held.get(key) != size)


@dataclass(frozen=True)
class ReplicationReport:
    copied: int          # objects copied now
    copied_bytes: int
    in_sync: int         # objects the replica already held
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.copied_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def replicate(source: ObjectStore, replica: ObjectStore, prefix: str) -> ReplicationReport:
    """Copy what the replica lacks under ``prefix``; creates the replica bucket if missing.

    :raises BackupConfigError, BackupFailed: either store refused or failed (named by its field).
    """
    started = time.monotonic()
    replica.ensure_bucket()
    objects = source.list_objects(prefix)
    plan = to_copy(objects, replica.list_objects(prefix))
    copied = sum(source.copy_to(key, replica) for key, _ in plan)
    return ReplicationReport(len(plan), copied, len(objects) - len(plan), time.monotonic() - started)
