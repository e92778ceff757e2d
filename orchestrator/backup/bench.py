"""The backup benchmark (``make backup-bench``): archive lag under load, backup and restore at two sizes.

On a throw-away lab of its own (one PostgreSQL 15 primary archiving to a SeaweedFS store
over HTTPS, both on loopback, ports from ``--port-base``):

1. **Archive lag**: ``pgbench -c 4`` (TPC-B) for ``--seconds`` while the segment files'
   ``archive_status`` is polled every 10 ms: the lag of a segment is from its ``.ready``
   marker's creation (PostgreSQL completed it) to the moment it was seen renamed ``.done``
   (the engine's ``archive-push`` returned: the object is durable in the store).
2. For each ``pgbench -i -s`` scale: a full base backup (time, MB/s), a restore of it plus the
   WAL after it into a scratch directory (copy time and MB/s, recovery time to promotion),
   and a plain copy of the same backup's objects from the same endpoint with boto3, for
   comparison.

Prints a Markdown table and writes ``reports/backup-bench-<time>.json``. Every process it
starts is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator import pgserver
from orchestrator import postgres as pg
from orchestrator.backup.restore import Target
from orchestrator.backup.service import BackupService, lab_store
from orchestrator.errors import LabError
from orchestrator.lab import Lab
from orchestrator.topology import Topology, parse_topology
from orchestrator.waiting import poll


def bench_topology(port_base: int, archive_async: bool) -> Topology:
    return parse_topology({
        "name": "bkbench",
        "regions": [{"name": "east", "datacenters": [{"name": "dc1"}]}],
        "ports": {"base": port_base + 20, "span": 20},
        "postgres": {"shared_buffers": "128MB"},
        "clusters": [{
            "name": "bench",
            "members": [{"name": "n1", "datacenter": "dc1", "role": "primary"}],
            "replication": {"quorum": 0},
            "targets": {"rpo_seconds": 1},
            "backup": {"endpoint": f"https://127.0.0.1:{port_base}", "bucket": "drctl-bench",
                       "credentials_file": "s3/credentials.json", "ca_file": "s3/tls/cert.pem",
                       "compression": "lz4", "process_max": 2, "archive_async": archive_async},
        }],
    })


def _wal_lsn(conn: pg.Connection) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()
    assert row is not None
    return int(str(row[0]))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class LagSampler:
    """Polls ``archive_status`` every 10 ms; lag = first sight of ``.done`` minus the ``.ready`` marker's mtime."""

    def __init__(self, status_dir: Path) -> None:
        self.status_dir = status_dir
        self.ready_at: dict[str, float] = {}
        self.lags: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            now = time.time()
            for name in os.listdir(self.status_dir):
                segment, _, state = name.rpartition(".")
                if state == "ready" and segment not in self.ready_at:
                    try:
                        self.ready_at[segment] = (self.status_dir / name).stat().st_mtime
                    except FileNotFoundError:
                        continue
                elif state == "done" and segment in self.ready_at and segment not in self.lags:
                    self.lags[segment] = now - self.ready_at[segment]

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _pgbench(lab: Lab, port: int, *args: str, timeout: float = 1800) -> None:
    creds = lab.credentials
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": creds.superuser_password, "LC_ALL": "C.UTF-8"}
    subprocess.run([str(Path(lab.topology.postgres.bin_dir) / "pgbench"), "-h", "127.0.0.1", "-p", str(port),
                    "-U", creds.superuser, *args, "bench"], env=env, check=True, capture_output=True, timeout=timeout)


def run(port_base: int, scales: list[int], seconds: int, reports: Path, *, archive_async: bool = False,
        wal_rate_tps: int = 150) -> dict[str, Any]:
    topology = bench_topology(port_base, archive_async)
    root = Path(tempfile.mkdtemp(prefix="drctl-backup-bench-"))
    root.chmod(0o755)
    lab = Lab(topology, root, controllers=False, agents=False)
    store = lab_store(topology, root)
    assert store is not None
    mode = "asynchronous, process-max 2" if archive_async else "synchronous"
    result: dict[str, Any] = {"engine": f"pgbackrest archive-push ({mode})", "compression": "lz4",
                              "wal_segment_mb": topology.postgres.wal_segsize_mb, "sizes": []}
    try:
        store.start()
        lab.up()
        service = BackupService(topology, "bench", root, lab.credentials)
        service.setup()
        layout = service.layout("n1")
        port = layout.endpoint.port
        _pgbench(lab, port, "-i", "-s", "10", "-q")
        status = layout.data / "pg_wal" / "archive_status"
        # The initial load leaves a backlog of segments: measure steady-state lag, not the drain.
        drain_started = time.monotonic()
        if not poll(lambda: not any(p.suffix == ".ready" for p in status.iterdir()), timeout=600, interval=0.1):
            raise LabError("the archive backlog of pgbench -i did not drain within 600 s")
        result["initial_backlog_drain_s"] = round(time.monotonic() - drain_started, 1)
        script = root / "lagload.sql"
        script.write_text("INSERT INTO lagload (payload) SELECT repeat(md5(random()::text), 4) "
                          "FROM generate_series(1, 150);\n")
        script.chmod(0o644)
        with pg.connect(layout.endpoint, lab.credentials, dbname="bench", timeout=10) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS lagload (id bigserial PRIMARY KEY, payload text)")
            lsn_before = _wal_lsn(conn)
        with LagSampler(status) as sampler:
            started = time.monotonic()
            _pgbench(lab, port, "-n", "-f", str(script), "-c", "4", "-j", "2", "-R", str(wal_rate_tps),
                     "-T", str(seconds), timeout=seconds + 120)
            elapsed = time.monotonic() - started
            with pg.connect(layout.endpoint, lab.credentials, dbname="bench", timeout=10) as conn:
                wal_mb_per_s = (_wal_lsn(conn) - lsn_before) / 1e6 / elapsed
            lags = list(sampler.lags.values())
        pending = [s for s in sampler.ready_at if s not in sampler.lags]
        result["archive_lag"] = {
            "load": f"pgbench -c 4 -j 2 -R {wal_rate_tps} -T {seconds}, 150 rows of 128 B per transaction, after "
                    "the backlog drained", "wal_mb_per_s": round(wal_mb_per_s, 2),
            "segments": len(lags),
            "segments_per_s": round(len(sampler.ready_at) / elapsed, 1),
            "p50_s": round(statistics.median(lags), 3), "p95_s": round(_percentile(lags, 0.95), 3),
            "p99_s": round(_percentile(lags, 0.99), 3), "max_s": round(max(lags), 3),
            "pending_at_end": len(pending),
        }
        for scale in scales:
            _pgbench(lab, port, "-i", "-s", str(scale), "-q")
            backup, backup_s = service.run("full")
            _pgbench(lab, port, "-c", "2", "-T", "5")            # WAL after the backup, replayed by the restore
            scratch = Path(tempfile.mkdtemp(prefix="drctl-bench-restore-", dir=root))
            report = service.restore("n1", Target(), scratch=scratch, port=topology.ports.end)
            pgserver.stop(service.layout("n1", scratch), mode="immediate")
            shutil.rmtree(scratch, ignore_errors=True)
            copied, copy_s = service.store.read_all(f"{service.repo}/backup/bench/{backup.label}/")
            result["sizes"].append({
                "scale": scale, "database_mb": round(backup.size / 1e6, 1), "stored_mb": round(backup.stored / 1e6, 1),
                "backup_s": round(backup_s, 1), "backup_mb_per_s": round(backup.size / 1e6 / backup_s, 1),
                "restore_copy_s": round(report.restore_seconds, 1), "restore_mb_per_s": round(report.mb_per_s, 1),
                "recovery_s": round(report.recovery_seconds, 1), "restore_total_s": round(report.total_seconds, 1),
                "plain_copy_mb": round(copied / 1e6, 1), "plain_copy_s": round(copy_s, 1),
                "plain_copy_mb_per_s": round(copied / 1e6 / copy_s, 1) if copy_s else 0.0,
            })
    finally:
        lab.down()       # before the store: a stopping primary still archives its last segments
        store.stop()
        shutil.rmtree(root, ignore_errors=True)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"backup-bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    return result


def markdown(result: dict[str, Any]) -> str:
    lag = result["archive_lag"]
    lines = [
        f"archive lag ({result['engine']}, {result['wal_segment_mb']} MB segments, {lag['load']}, "
        f"{lag['wal_mb_per_s']} MB/s of WAL): "
        f"{lag['segments']} segments ({lag['segments_per_s']}/s), p50 {lag['p50_s']} s, p95 {lag['p95_s']} s, "
        f"p99 {lag['p99_s']} s, max {lag['max_s']} s, {lag['pending_at_end']} pending at the end; the backlog "
        f"of pgbench -i -s 10 drained in {result['initial_backlog_drain_s']} s",
        "",
        "| pgbench scale | database MB | stored MB | backup s (MB/s) | restore copy s (MB/s) | recovery s | "
        "restore total s | plain copy of the backup's objects s (MB/s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['scale']} | {s['database_mb']} | {s['stored_mb']} | {s['backup_s']} ({s['backup_mb_per_s']}) | "
        f"{s['restore_copy_s']} ({s['restore_mb_per_s']}) | {s['recovery_s']} | {s['restore_total_s']} | "
        f"{s['plain_copy_s']} ({s['plain_copy_mb_per_s']}) |"
        for s in result["sizes"]
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-base", type=int, default=24600, help="first of the 40 ports used")
    parser.add_argument("--scales", default="10,60", help="pgbench -i -s scales, comma-separated")
    parser.add_argument("--seconds", type=int, default=60, help="how long the archive-lag load runs")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    parser.add_argument("--async", dest="archive_async", action="store_true",
                        help="asynchronous archive-push (default: synchronous, the topology's default)")
    parser.add_argument("--rate", type=int, default=150, help="transactions/s of the archive-lag load (≈ 33 kB each)")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    result = run(args.port_base, scales, args.seconds, args.reports_dir, archive_async=args.archive_async,
                 wal_rate_tps=args.rate)
    print(markdown(result))


if __name__ == "__main__":
    main()
