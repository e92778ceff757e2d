"""The DR lag bound measured (``python -m orchestrator.bench.dr_lag``): alert mode against bounded mode.

For each mode, a throw-away lab of the shipped topology (ports from ``--port-base``) with
``dr_lag: {max_seconds: --bound, mode}`` runs a write load (``--writers`` threads of single-row
inserts through the read-write connection string) for a *steady* phase, then a *stalled* phase
in which dc3-a's walreceiver is stopped (SIGSTOP) for ``--stall`` seconds every ``--every``
seconds. Meanwhile dc3-a's receive and replay lag are sampled every 50 ms with the controller's
own definition (``decisions.lag``: the primary's WAL history, sampled here independently of the
controller), and so is the span of *acknowledged* commits dc3-a lacks (from the oldest WAL it
lacks to the newest commit acknowledged by then: what a region loss would lose, which bounded mode
caps while the lag itself keeps growing during a stall). Reported per mode and phase: lag and
acknowledged-at-risk p50 / p99 / max, commits per second, and the
``dr-hold`` / ``dr-lag-over`` events the controllers logged. Prints a Markdown table and writes
``reports/dr-lag-bench-<time>.json``; every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from orchestrator import decisions as d
from orchestrator import postgres as pg
from orchestrator.drills.writers import Writers
from orchestrator.lab import Lab
from orchestrator.pgserver import member_endpoint
from orchestrator.state import lsn_to_int
from orchestrator.topology import load_topology, parse_topology, with_port_base

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "payments"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Sampler:
    """dc3-a's receive/replay lag every ``interval`` s, by decisions.lag's definition."""

    def __init__(self, primary: pg.Endpoint, dr: pg.Endpoint, creds: pg.Credentials, interval: float = 0.05) -> None:
        self._primary = pg.connect(primary, creds, timeout=5.0)
        self._dr = pg.connect(dr, creds, timeout=5.0)
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (at, receive s, replay s)
        self.halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        history = d.WalHistory()
        while not self.halt.wait(self.interval):
            try:
                row = self._primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                now = time.time()
                history = d.observe(history, "primary", lsn_to_int(str(row[0])) if row else None, now)
                dr = self._dr.execute("SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text"
                                      ).fetchone()
            except psycopg.Error:
                continue
            if dr is None:
                continue
            receive, _ = d.seconds_behind(history, lsn_to_int(str(dr[0])), now)
            replay, _ = d.seconds_behind(history, lsn_to_int(str(dr[1])), now)
            if receive is not None and replay is not None:
                self.samples.append((now, receive, replay))

    def stop(self) -> None:
        self.halt.set()
        self._thread.join(timeout=10)
        self._primary.close()
        self._dr.close()


def _events(root: Path, name: str) -> int:
    count = 0
    for log in (root / "controller").glob("*.log"):
        count += sum(1 for line in log.read_text(errors="replace").splitlines() if f'"event": "{name}"' in line)
    return count


def _exposure(at: float, receive: float, acks: list[float]) -> float:
    """Seconds of acknowledged commits dc3-a lacks at ``at``: from the oldest WAL it lacks to the newest
    commit acknowledged by then (the RPO a region loss would cause; 0 when it holds everything)."""
    if receive <= 0:
        return 0.0
    newest = bisect.bisect_right(acks, at) - 1
    return max(acks[newest] - (at - receive), 0.0) if newest >= 0 else 0.0


def _phase(samples: list[tuple[float, float, float]], acks: list[float], start: float, end: float
           ) -> dict[str, Any]:
    receive = [s[1] for s in samples if start <= s[0] < end]
    replay = [s[2] for s in samples if start <= s[0] < end]
    ordered = sorted(acks)
    exposure = [_exposure(s[0], s[1], ordered) for s in samples if start <= s[0] < end]
    commits = len([a for a in acks if start <= a < end])
    return {"seconds": round(end - start, 1), "commits_per_s": round(commits / (end - start), 1),
            "acked_at_risk_p50_s": _percentile(exposure, 0.5), "acked_at_risk_p99_s": _percentile(exposure, 0.99),
            "acked_at_risk_max_s": max(exposure, default=None),
            "receive_lag_p50_s": _percentile(receive, 0.5), "receive_lag_p99_s": _percentile(receive, 0.99),
            "receive_lag_max_s": max(receive, default=None),
            "replay_lag_p50_s": _percentile(replay, 0.5), "replay_lag_p99_s": _percentile(replay, 0.99),
            "samples": len(receive)}


def run_mode(mode: str, args: argparse.Namespace, lab_dir: Path) -> dict[str, Any]:
    data = with_port_base(load_topology(REPO / "topology" / "lab.yaml"), args.port_base).model_dump(mode="json")
    data["clusters"][0]["replication"]["dr_lag"] = {"max_seconds": args.bound, "mode": mode}
    topo = parse_topology(data)
    cluster = topo.cluster(CLUSTER)
    lab = Lab(topo, lab_dir, agents=False)  # nothing fails over here; see the lab test
    lab.up()
    try:
        creds = lab.credentials
        primary = member_endpoint(topo, cluster, cluster.member("dc1-a"))
        dr = member_endpoint(topo, cluster, cluster.member("dc3-a"))
        with psycopg.connect(lab.app_connection_string(cluster), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS dr_lag_bench (id text PRIMARY KEY, filler text)")
        load = Writers(lab.app_connection_string(cluster), "dr_lag_bench", count=args.writers, filler_bytes=200,
                       retry_pause=0.05)
        sampler = _Sampler(primary, dr, creds)
        load.start()
        sampler.start()
        time.sleep(3)  # warm-up (a benchmark's pacing, not synchronisation)
        steady_start = time.time()
        time.sleep(args.steady)
        stall_start = time.time()
        while time.time() - stall_start < args.seconds:
            with pg.connect(dr, creds, timeout=5.0) as conn:
                row = conn.execute("SELECT pid FROM pg_stat_wal_receiver").fetchone()
            pid = int(str(row[0])) if row and row[0] is not None else None
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)
                try:
                    time.sleep(args.stall)
                finally:
                    os.kill(pid, signal.SIGCONT)
            time.sleep(max(args.every - args.stall, 0.5))
        stall_end = time.time()
        load.stop()
        sampler.stop()
        acks = [ack.wall for ack in load.snapshot()]
        return {"mode": mode, "bound_s": args.bound,
                "steady": _phase(sampler.samples, acks, steady_start, stall_start),
                "stalled": _phase(sampler.samples, acks, stall_start, stall_end),
                "events": {name: _events(lab.root, name) for name in ("dr-lag-over", "dr-lag-recovered",
                                                                       "dr-hold", "dr-release")}}
    finally:
        lab.down()


def _row(result: dict[str, Any], phase: str) -> str:
    p = result[phase]

    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return (f"| {result['mode']} | {phase} | {p['seconds']} | {p['commits_per_s']} | {s(p['receive_lag_p50_s'])} | "
            f"{s(p['receive_lag_p99_s'])} | {s(p['receive_lag_max_s'])} | {s(p['replay_lag_p50_s'])} | "
            f"{s(p['replay_lag_p99_s'])} | {s(p['acked_at_risk_p50_s'])} | {s(p['acked_at_risk_p99_s'])} | "
            f"{s(p['acked_at_risk_max_s'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-base", type=int, default=14600)
    parser.add_argument("--bound", type=float, default=2.0, help="dr_lag.max_seconds")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of load without a stall")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of load with periodic stalls")
    parser.add_argument("--stall", type=float, default=4.0, help="seconds dc3-a's walreceiver is stopped")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between stall starts")
    parser.add_argument("--modes", default="alert,bounded")
    args = parser.parse_args()
    results = []
    for mode in args.modes.split(","):
        lab_dir = Path(tempfile.mkdtemp(prefix=f"drctl-drlag-bench-{mode}-"))
        lab_dir.chmod(0o755)
        results.append(run_mode(mode, args, lab_dir))
    print("| mode | phase | s | commits/s | receive lag p50 | p99 | max | replay lag p50 | p99 | "
          "acked at risk p50 | p99 | max |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(_row(result, "steady"))
        print(_row(result, "stalled"))
    for result in results:
        print(f"{result['mode']}: events {result['events']}")
    out = REPO / "reports" / f"dr-lag-bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
