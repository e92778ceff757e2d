"""Restore and point-in-time recovery: a base backup plus archived WAL into a data directory, started and timed.

:func:`restore_instance` runs ``pgbackrest restore`` for one chosen backup into an empty (or,
for a member, stopped) data directory, writes the instance's own ``postgresql.conf`` over the
copied one, starts the server and waits until recovery has reached the target and the server
has promoted itself (``--target-action=promote``). It reports how long the copy took, at what
rate, and how long WAL replay took. The caller (:mod:`.service`) chooses the backup and the
configuration; nothing here decides which backup or which member.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import pgserver
from orchestrator import postgres as pg
from orchestrator.backup.catalog import Backup, parse_lsn
from orchestrator.backup.errors import BackupConfigError, BackupFailed
from orchestrator.backup.pgbackrest import EngineConfig, binary
from orchestrator.errors import DatabaseUnavailable, LabError
from orchestrator.pgserver import InstanceLayout
from orchestrator.processes import is_running
from orchestrator.waiting import poll

if TYPE_CHECKING:
    from orchestrator.playbooks import PlaybookRunner


@dataclass(frozen=True)
class Target:
    """Where recovery stops: a time, an LSN, the backup's consistency point, or (none) the archive's end."""

    time: datetime.datetime | None = None
    lsn: str | None = None
    immediate: bool = False

    def __post_init__(self) -> None:
        if sum((self.time is not None, self.lsn is not None, self.immediate)) > 1:
            raise BackupConfigError("--target-time/--target-lsn: give one recovery target, not both")
        if self.time is not None and self.time.tzinfo is None:
            raise BackupConfigError("--target-time: give a time zone, e.g. 2026-12-02T07:40:00+00:00")
        if self.lsn is not None:
            parse_lsn(self.lsn)

    @property
    def epoch(self) -> float | None:
        return self.time.timestamp() if self.time is not None else None

    @property
    def lsn_int(self) -> int | None:
        return parse_lsn(self.lsn) if self.lsn is not None else None

    def engine_options(self) -> list[str]:
        if self.time is not None:
            stamp = self.time.astimezone(datetime.UTC).isoformat(sep=" ")
            return ["--type=time", f"--target={stamp}", "--target-action=promote"]
        if self.lsn is not None:
            return ["--type=lsn", f"--target={self.lsn}", "--target-action=promote"]
        if self.immediate:
            return ["--type=immediate", "--target-action=promote"]
        return ["--type=default"]

    def describe(self) -> str:
        if self.time is not None:
            return f"time {self.time.isoformat()}"
        if self.lsn is not None:
            return f"LSN {self.lsn}"
        return "consistency point" if self.immediate else "end of the archive"


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 time with a zone, for ``--target-time``.

    :raises BackupConfigError: not ISO 8601, or no time zone.
    """
    try:
        value = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BackupConfigError(f"--target-time: {text!r} is not an ISO 8601 time; give e.g. "
                                "2026-12-02T07:40:00+00:00") from None
    if value.tzinfo is None:
        raise BackupConfigError(f"--target-time: {text!r} has no time zone; add one, e.g. +00:00")
    return value


@dataclass(frozen=True)
class RestoreReport:
    backup: str
    target: str
    data_dir: Path
    port: int
    pid: int
    restore_seconds: float      # the engine copying the base backup out of the store
    restored_bytes: int
    recovery_seconds: float     # server start until recovery reached the target and it promoted
    total_seconds: float
    via: str = "direct"         # or the playbook that copied and started it

    @property
    def mb_per_s(self) -> float:
        return self.restored_bytes / 1e6 / self.restore_seconds if self.restore_seconds > 0 else 0.0


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


RESTORE_TASK = "Restore the base backup (pgbackrest restore)"


def restore_extravars(engine: EngineConfig, layout: InstanceLayout, options: list[str], postgresql_conf: str
                      ) -> dict[str, str | int | float | bool]:
    """What ``playbooks/restore.yml`` needs: the member's paths, the engine configuration, the restore options."""
    pgspec = layout.topology.postgres
    return {
        "member": layout.member.name, "pgdata": str(layout.data), "socket_dir": str(layout.socket_dir),
        "bin_dir": pgspec.bin_dir, "os_user": pgspec.os_user, "log_file": str(layout.log),
        "engine_home": str(engine.home), "engine_conf": engine.render(), "engine_conf_file": str(engine.conf_file),
        "pgbackrest": binary(), "stanza": engine.stanza, "restore_options": "\n".join(options),
        "postgresql_conf": postgresql_conf,
    }


def _task_seconds(artifacts: Path | None, task: str) -> float | None:
    """How long one task of a finished run took, from ansible-runner's job events (its ``delta``)."""
    if artifacts is None:
        return None
    for path in (artifacts / "job_events").glob("*.json"):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        data = event.get("event_data", {})
        delta = data.get("res", {}).get("delta") if event.get("event") == "runner_on_ok" else None
        if data.get("task") == task and isinstance(delta, str):
            hours, minutes, seconds = delta.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def restore_instance(
    engine: EngineConfig,
    layout: InstanceLayout,
    backup: Backup,
    target: Target,
    *,
    postgresql_conf: str,
    creds: pg.Credentials,
    port: int,
    archive: bool,
    runner: PlaybookRunner | None = None,
    timeout: float = 1800.0,
) -> RestoreReport:
    """Restore ``backup`` into ``layout``'s data directory, recover to ``target``, start and promote it.

    The data directory must be absent or empty, or hold a stopped server (then the engine
    restores in delta mode, rewriting only what differs). With ``archive=False`` the restored
    server does not archive (a scratch copy must not add a timeline to the cluster's archive).
    With ``runner`` the copy and start run on the member's host through ``playbooks/restore.yml``;
    without, here, directly.

    :raises BackupConfigError: the member's server runs.
    :raises BackupFailed: the engine failed, or recovery stopped before the target (the server log says why).
    :raises PlaybookFailed: the playbook failed (one line: task and cause).
    """
    if layout.postmaster_pid() is not None:
        raise BackupConfigError(f"--to: {layout.member.name}'s server runs (pid {layout.postmaster_pid()}) on "
                                f"{layout.data}; stop it first, restore never overwrites a running server")
    delta = layout.data.exists() and any(layout.data.iterdir())
    options = [f"--set={backup.label}", *target.engine_options(),
               f"--recovery-option=restore_command={engine.restore_command()}"]
    if not archive:
        options.append("--archive-mode=off")
    if delta:
        options.append("--delta")
    started = time.monotonic()
    if runner is not None:
        from orchestrator.playbooks import member_host

        result = runner.run("restore.yml", limit=member_host(layout.topology, layout.member),
                            extravars=restore_extravars(engine, layout, options, postgresql_conf))
        restore_seconds = _task_seconds(result.artifacts, RESTORE_TASK) or result.duration
        restored = tree_size(layout.data)
        recovery_started = time.monotonic()
        pid = poll(layout.postmaster_pid, timeout=10, interval=0.05)
        if pid is None:
            raise BackupFailed(f"the restore playbook ended but {layout.member.name} runs no server; "
                               f"{_log_tail(layout)}")
    else:
        pgserver.prepare_home(layout)
        engine.write()
        engine.run("restore", *options)
        restore_seconds = time.monotonic() - started
        restored = tree_size(layout.data)
        pgserver.write_owned(layout.data / "postgresql.conf", postgresql_conf, layout.topology.postgres.os_user)
        (layout.data / "standby.signal").unlink(missing_ok=True)
        recovery_started = time.monotonic()
        try:
            pid = pgserver.start(layout, timeout=min(timeout, 600))
        except LabError as exc:
            raise BackupFailed(f"restored server did not start: {exc}; {_log_tail(layout)}") from None
    endpoint = pg.Endpoint(layout.member.name, layout.endpoint.address, port)

    def promoted() -> bool:
        if not is_running(pid):
            raise BackupFailed(f"restored server stopped during recovery to {target.describe()}: {_log_tail(layout)}")
        try:
            with pg.connect(endpoint, creds, timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                return row is not None and not row[0]
        except DatabaseUnavailable:
            return False

    if not poll(promoted, timeout=timeout, interval=0.05):
        raise BackupFailed(f"restored server still recovering after {timeout:.0f}s; see {layout.log}")
    now = time.monotonic()
    return RestoreReport(backup.label, target.describe(), layout.data, port, pid, restore_seconds, restored,
                         now - recovery_started, now - started, "playbook restore.yml" if runner else "direct")


def _log_tail(layout: InstanceLayout) -> str:
    try:
        lines = [ln for ln in layout.log.read_text(errors="replace").splitlines() if "FATAL" in ln or "ERROR" in ln]
    except OSError:
        return f"no server log at {layout.log}"
    return (lines[-1].split("] ", 1)[-1] if lines else "nothing in the log") + f" (log: {layout.log})"
