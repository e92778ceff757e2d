"""Pure: the engine's backup list as typed records, and the choice of a base backup for a recovery target.

:func:`parse_info` reads ``pgbackrest info --output=json`` for one stanza; :func:`choose_backup`
picks the base backup a restore starts from: the newest one that was consistent before the
target (a backup that ends after the target cannot stop there). No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.backup.errors import BackupConfigError, BackupFailed

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str, *, field: str = "--target-lsn") -> int:
    """``'0/3000060'`` as an integer.

    :raises BackupConfigError: not an LSN.
    """
    match = _LSN_RE.match(text.strip())
    if match is None:
        raise BackupConfigError(f"{field}: {text!r} is not an LSN like 0/3000060; take one from pg_current_wal_lsn()")
    return (int(match[1], 16) << 32) | int(match[2], 16)


@dataclass(frozen=True)
class Backup:
    """One base backup in the repository."""

    label: str
    kind: str                 # full, diff or incr
    started: float            # epoch seconds (whole seconds, as the engine records them)
    stopped: float
    size: int                 # bytes of the database it copied
    stored: int               # bytes in the repository (compressed)
    wal_start: str            # the first and last WAL segment the backup needs
    wal_stop: str
    lsn_start: str
    lsn_stop: str

    @property
    def lsn_stop_int(self) -> int:
        return parse_lsn(self.lsn_stop, field=f"backup {self.label}")


@dataclass(frozen=True)
class Catalog:
    """A stanza's backups (oldest first) and the WAL range its archive holds (None when empty)."""

    backups: tuple[Backup, ...]
    wal_min: str | None
    wal_max: str | None


def parse_info(document: Any, stanza: str) -> Catalog:
    """The stanza's catalog from ``pgbackrest info --output=json``.

    :raises BackupFailed: the document does not hold the stanza, or the stanza reports an error.
    """
    entry = next((s for s in document if isinstance(s, dict) and s.get("name") == stanza), None) \
        if isinstance(document, list) else None
    if entry is None:
        raise BackupFailed(f"backup info: the repository has no stanza {stanza!r}; run 'drctl backup setup {stanza}'")
    status = entry.get("status", {})
    if status.get("code") not in (0, 2):   # 2: no backups yet
        raise BackupFailed(f"backup info for {stanza}: {status.get('message', 'unknown status')}")
    backups = tuple(
        Backup(
            label=str(b["label"]), kind=str(b["type"]),
            started=float(b["timestamp"]["start"]), stopped=float(b["timestamp"]["stop"]),
            size=int(b["info"]["size"]), stored=int(b["info"]["repository"]["size"]),
            wal_start=str((b.get("archive") or {}).get("start") or ""),
            wal_stop=str((b.get("archive") or {}).get("stop") or ""),
            lsn_start=str((b.get("lsn") or {}).get("start") or ""),
            lsn_stop=str((b.get("lsn") or {}).get("stop") or ""),
        )
        for b in entry.get("backup", []) if not b.get("error")
    )
    archives = [a for a in entry.get("archive", []) if a.get("min")]
    return Catalog(
        backups=tuple(sorted(backups, key=lambda b: (b.stopped, b.label))),
        wal_min=str(archives[0]["min"]) if archives else None,
        wal_max=str(archives[-1]["max"]) if archives else None,
    )


def choose_backup(backups: Sequence[Backup], *, target_time: float | None = None, target_lsn: int | None = None
                  ) -> Backup:
    """The base backup to restore from: the newest one consistent before the target.

    With a time target the backup must have stopped at least one second before it (the
    engine records whole seconds, truncated); with an LSN target its stop LSN must not pass
    it; with no target, the newest backup.

    :raises BackupConfigError: both targets given, or no backup qualifies.
    """
    if target_time is not None and target_lsn is not None:
        raise BackupConfigError("--target-time/--target-lsn: give one recovery target, not both")
    if not backups:
        raise BackupConfigError("backup: the repository holds no base backup yet; run 'drctl backup run CLUSTER' "
                                "first")
    if target_time is not None:
        eligible = [b for b in backups if b.stopped + 1 <= target_time]
        what = "--target-time: every backup finished after the target"
    elif target_lsn is not None:
        eligible = [b for b in backups if b.lsn_stop_int <= target_lsn]
        what = "--target-lsn: every backup ends past the target LSN"
    else:
        eligible = list(backups)
        what = ""
    if not eligible:
        oldest = min(backups, key=lambda b: b.stopped)
        raise BackupConfigError(f"{what} (the oldest, {oldest.label}, stopped at {oldest.lsn_stop}); pick a later "
                                "target or restore from an older repository")
    return max(eligible, key=lambda b: (b.stopped, b.lsn_stop_int, b.label))
