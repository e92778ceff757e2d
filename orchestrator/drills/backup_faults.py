"""The backup faults of a drill: ``archive-outage`` and ``total-loss-restore`` (``faults.inject`` delegates here).

* :func:`archive_outage`: the cluster's S3 store is stopped by PID for ``duration_s`` under load,
  then started again. While it is down the primary's ``pg_wal`` is sampled (its peak against
  ``backup.max_pg_wal_mb``); after it returns, the injector waits until the archive holds the
  last segment completed when the store came back (the catch-up time), then checks that every
  segment from the one in progress at the fault through that one is in the store (no WAL
  dropped) and that the leader raised ``archive-failed`` (its event in a controller log).
* :func:`total_loss_restore`: every database member killed (``kill -9`` of postmasters and
  agents) and its data directory removed; the member ZooKeeper records as primary is restored
  from the store through ``playbooks/restore.yml`` (``drctl restore``'s path) to the end of the
  archive and promoted; the controllers' rejoin re-clones the other members from it (without
  controllers, the lab's own set-up does).
  RTO (first acknowledged write) and RPO (acknowledged transfers missing) come from the
  drill's usual measurement.

Each returns a :class:`BackupInjected`: the fault as injected, healed, with its facts and its
own verdict checks, which the runner adds to the drill's. :func:`outage_checks` is pure.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import postgres as pg
from orchestrator.backup.proof import segment_name, segment_range
from orchestrator.backup.service import BackupService, lab_store
from orchestrator.backup.store import SeaweedStore
from orchestrator.coordination import Coordinator
from orchestrator.decisions.archiving import in_trouble
from orchestrator.drills.faults import Injected, _kill, current_primary
from orchestrator.drills.spec import ArchiveOutage, TotalLossRestore
from orchestrator.drills.verdict import Check, CheckName, Verdict
from orchestrator.errors import DatabaseUnavailable, OrchestratorError
from orchestrator.lab import Lab
from orchestrator.topology import Cluster
from orchestrator.waiting import poll

MB = 1024 * 1024


@dataclass(frozen=True)
class BackupInjected(Injected):
    """A backup fault as injected, with what it measured and its own checks for the verdict."""

    facts: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()

    def judged(self, verdict: Verdict) -> Verdict:
        checks = (*verdict.checks, *self.checks)
        return Verdict(passed=all(c.passed for c in checks), checks=checks)


def outage_checks(facts: dict[str, Any], budget_mb: int) -> tuple[Check, ...]:
    """The archive-outage verdict rows from its facts (pure)."""
    missing: list[str] = facts["missing_segments"]
    peak = float(facts["pg_wal_peak_mb"])
    caught = facts["catch_up_seconds"]
    rows = [
        (CheckName.NO_WAL_DROPPED, not missing,
         f"all {facts['segments_checked']} segments from {facts['first_segment']} to {facts['last_segment']} "
         "are in the archive",
         f"{len(missing)} of {facts['segments_checked']} segments are missing from the archive "
         f"(first {missing[0] if missing else '?'})"),
        (CheckName.PG_WAL_WITHIN_BUDGET, peak <= budget_mb,
         f"pg_wal peaked at {peak:.1f} MB, within the {budget_mb} MB budget (backup.max_pg_wal_mb)",
         f"pg_wal peaked at {peak:.1f} MB, over the {budget_mb} MB budget (backup.max_pg_wal_mb)"),
        (CheckName.ARCHIVE_ALERT, facts["alert_at"] is not None,
         f"archive-failed was raised {facts['alert_after_s']} s into the outage",
         "no archive-failed alert was raised during the outage"),
        (CheckName.ARCHIVE_CAUGHT_UP, caught is not None,
         f"archiving caught up {caught} s after the store returned",
         f"archiving had not caught up {facts['catch_up_timeout_s']:g} s after the store returned"),
    ]
    return tuple(Check(name=name, passed=ok, reason=good if ok else bad) for name, ok, good, bad in rows)


def _wal_state(endpoint: pg.Endpoint, creds: pg.Credentials) -> tuple[float, int, str]:
    """The primary's pg_wal size (MB), its ``.ready`` segments, and the segment it writes now."""
    with pg.connect(endpoint, creds, timeout=2) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())::bigint, "
            "(SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'), "
            "pg_walfile_name(pg_current_wal_lsn())").fetchone()
    assert row is not None
    return int(str(row[0])) / MB, int(str(row[1])), str(row[2])


def _previous(name: str, segment_bytes: int) -> str:
    per_xlogid = 0x1_0000_0000 // segment_bytes
    number = int(name[8:16], 16) * per_xlogid + int(name[16:24], 16) - 1
    return segment_name(int(name[:8], 16), number * segment_bytes, segment_bytes)


def archived_segments(service: BackupService) -> set[str]:
    """The WAL segment names the cluster's archive holds (pgBackRest names them ``SEGMENT-<sha1>[.ext]``)."""
    keys = service.store.list_objects(f"{service.repo}/archive/{service.cluster.name}/")
    names = {Path(key).name.split("-", 1)[0] for key, _ in keys}
    return {n for n in names if len(n) == 24 and all(c in "0123456789ABCDEF" for c in n)}


def alert_in_logs(logs: Path, cluster: str, since: float) -> float | None:
    """When a controller first logged ``archive-failed`` for ``cluster`` at or after ``since``; None: never."""
    found: list[float] = []
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"archive-failed"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "archive-failed" and event.get("cluster") == cluster \
                    and float(event.get("ts", 0)) >= since:
                found.append(float(event["ts"]))
    return min(found, default=None)


LEADER_READ_S = 10.0   # the leader reads pg_stat_archiver this often (Controller._watch_archiving)


def _healthy_archiving(primary: pg.Endpoint, creds: pg.Credentials, stall_s: float, timeout: float = 90.0) -> None:
    """Wait until archiving has been healthy (no failure, no stall) for one leader read interval, so the
    outage starts a new ``archive-failed`` streak rather than continuing one (e.g. from ``lab up``).

    :raises OrchestratorError: not within ``timeout``.
    """
    since: list[float] = []

    def healthy_long_enough() -> bool:
        if in_trouble(pg.archiver_stats(primary, creds), stall_s):
            since.clear()
            return False
        since[:] = since or [time.monotonic()]
        return time.monotonic() - since[0] > LEADER_READ_S + 1

    if not poll(healthy_long_enough, timeout=timeout, interval=0.5):
        raise OrchestratorError(f"{primary.name}: archiving was not healthy for {LEADER_READ_S + 1:g} s in a row "
                                f"within {timeout:g} s (pg_stat_archiver); fix it before this drill")


def run_archive_outage(service: BackupService, store: SeaweedStore, primary: pg.Endpoint, fault: ArchiveOutage,
                       alerted: Callable[[float], float | None], *, datacenter: str | None = None
                       ) -> BackupInjected:
    """Stop ``store`` by PID for ``fault.duration_s``, start it, wait for archiving to catch up, judge.

    ``alerted(since)``: when ``archive-failed`` was raised since then (None: not yet).

    :raises OrchestratorError: the store does not run, or does not come back (it is left stopped).
    """
    creds = service.creds
    segment_bytes = service.topology.postgres.wal_segsize_mb * MB
    budget = service.spec.max_pg_wal_mb
    pid = store.pid()
    if pid is None:
        raise OrchestratorError(f"{service.cluster.name}: the S3 store does not run; nothing to stop")
    _healthy_archiving(primary, creds, service.spec.archive_stall_alert_s)
    peak_mb, _, first = _wal_state(primary, creds)
    peak_ready = 0
    at = time.time()
    store.stop()                           # by PID: SIGTERM, SIGKILL after 2 s, waited for
    stopped_s = time.time() - at

    def sample() -> None:
        nonlocal peak_mb, peak_ready
        try:
            size, ready, _ = _wal_state(primary, creds)
        except DatabaseUnavailable:
            return
        peak_mb, peak_ready = max(peak_mb, size), max(peak_ready, ready)

    while time.time() < at + fault.duration_s:
        sample()
        time.sleep(0.5)
    store.start(timeout=120)
    healed_at = time.time()
    _, _, current = _wal_state(primary, creds)
    last = _previous(current, segment_bytes)   # the last segment completed when the store came back
    caught_at: float | None = None

    def caught_up() -> bool:
        nonlocal caught_at
        sample()
        stats = pg.archiver_stats(primary, creds)
        if stats.last_archived_wal is not None and stats.last_archived_wal >= last:
            caught_at = time.time()
            return True
        return False

    poll(caught_up, timeout=fault.catch_up_timeout_s, interval=0.2)
    alert_at: float | None = None

    def alert_seen() -> bool:
        nonlocal alert_at
        alert_at = alerted(at)
        return alert_at is not None

    poll(alert_seen, timeout=15, interval=0.5)   # the leader reads pg_stat_archiver every 10 s
    expected = segment_range(first, last, segment_bytes)
    present = archived_segments(service)
    facts: dict[str, Any] = {
        "duration_s": fault.duration_s, "store_pid": pid, "store_stop_seconds": round(stopped_s, 3),
        "first_segment": first, "last_segment": last, "segments_checked": len(expected),
        "missing_segments": [s for s in expected if s not in present],
        "pg_wal_peak_mb": round(peak_mb, 1), "pg_wal_budget_mb": budget, "ready_peak": peak_ready,
        "catch_up_seconds": round(caught_at - healed_at, 3) if caught_at is not None else None,
        "catch_up_timeout_s": fault.catch_up_timeout_s,
        "alert_at": alert_at, "alert_after_s": round(alert_at - at, 3) if alert_at is not None else None,
    }
    return BackupInjected(at, f"S3 store stopped (pid {pid}) for {fault.duration_s:g} s, then restarted; "
                              f"pg_wal peak {facts['pg_wal_peak_mb']} MB, catch-up {facts['catch_up_seconds']} s, "
                              f"{len(facts['missing_segments'])} segment(s) missing",
                          (pid,), datacenter, healed_at, facts, outage_checks(facts, budget))


def archive_outage(lab: Lab, coord: Coordinator, cluster: Cluster, fault: ArchiveOutage) -> BackupInjected:
    """The drill's archive-outage against the lab: its store, the recorded primary, the controllers' logs."""
    service = BackupService(lab.topology, cluster.name, lab.root, lab.credentials)
    store = lab_store(lab.topology, lab.root)
    if store is None:
        raise OrchestratorError(f"{cluster.name}: the backup endpoint is not the lab's own store")
    primary = cluster.member(current_primary(coord, cluster))
    return run_archive_outage(service, store, lab.layout(cluster, primary).endpoint, fault,
                              lambda since: alert_in_logs(lab.root / "controller", cluster.name, since),
                              datacenter=primary.datacenter)


def total_loss_restore(lab: Lab, coord: Coordinator, cluster: Cluster, fault: TotalLossRestore
                       ) -> BackupInjected:
    """Every member lost; the recorded primary restored from the store and promoted; the rest re-cloned.

    :raises OrchestratorError: the repository holds no base backup (nothing is touched then).
    """
    from orchestrator.backup.restore import Target
    from orchestrator.playbooks import PlaybookRunner

    service = BackupService(lab.topology, cluster.name, lab.root, lab.credentials)
    backups = service.catalog().backups
    if not backups:
        raise OrchestratorError(f"{cluster.name}: the repository holds no base backup; run 'drctl backup run "
                                f"{cluster.name}' before this drill")
    primary = cluster.member(current_primary(coord, cluster))
    layouts = [lab.layout(cluster, m) for m in cluster.members]
    pids = [p for layout in layouts if (p := layout.postmaster_pid()) is not None]
    if lab.with_agents:
        pids += [p for m in cluster.members if (p := lab.agent_pid(cluster.name, m.name)) is not None]
    at = time.time()
    _kill(pids)
    poll(lambda: all(layout.postmaster_pid() is None for layout in layouts), timeout=10, interval=0.05)
    for layout in layouts:
        shutil.rmtree(layout.data, ignore_errors=True)
    lost_at = time.time()
    report = service.restore(primary.name, Target(), runner=PlaybookRunner(lab.topology, lab.root / "ansible"))
    restored_at = time.time()
    if not lab.with_controllers:
        # Without controllers nothing rejoins the lost standbys: the lab's own set-up re-clones them. With
        # controllers, the leader's rejoin does it (both at once would re-clone each member twice).
        lab._up_cluster(cluster, timeout=300)
    rebuilt_at = time.time()
    facts = {"members_lost": [m.name for m in cluster.members], "restored": primary.name, "backup": report.backup,
             "restore_seconds": round(report.restore_seconds, 3), "recovery_seconds": round(report.recovery_seconds, 3),
             "restored_bytes": report.restored_bytes, "mb_per_s": round(report.mb_per_s, 1),
             "lost_to_promoted_seconds": round(restored_at - at, 3),
             "standbys_recloned_by": "the controllers' rejoin" if lab.with_controllers else "the lab",
             "data_removed_seconds": round(lost_at - at, 3)}
    check = Check(name=CheckName.RESTORED_FROM_STORE, passed=True,
                  reason=f"{primary.name} restored from backup {report.backup} plus the archive and promoted "
                         f"{facts['lost_to_promoted_seconds']} s after the loss (copy {facts['restore_seconds']} s, "
                         f"recovery {facts['recovery_seconds']} s); standbys re-cloned by "
                         f"{facts['standbys_recloned_by']}")
    return BackupInjected(at, f"total loss of {', '.join(m.name for m in cluster.members)} (kill -9, data removed); "
                              f"{primary.name} restored from the store ({report.via}) and promoted",
                          tuple(pids), primary.datacenter, rebuilt_at, facts, (check,))
