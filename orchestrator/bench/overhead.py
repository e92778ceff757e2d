"""What measuring costs (``python -m orchestrator.bench.overhead``): the same paced bank load with and
without the journal, and the analysis of what the journal recorded.

Against a running lab (``--lab-dir``), the Locust bank workload runs ``--rounds`` times in each mode,
alternating: ``journal`` (what drills and game days run) and ``off`` (``DRCTL_MEASURE=off``: the
same transfers, no journal line). Every Locust process is our child, so its CPU time (user + system)
is read exactly with ``getrusage(RUSAGE_CHILDREN)`` around its run. Each journal run is then analysed
the way a drill analyses it (:func:`orchestrator.drills.journal.read_journal` and
:func:`orchestrator.drills.measure.measure`), timed with ``process_time``. Reported: CPU seconds per
1,000 transfers in each mode, the journal's overhead over plain Locust, and the analysis's. Prints
a Markdown table and writes ``reports/overhead-bench-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.drills.journal import Outcome, read_journal
from orchestrator.drills.load import start_load
from orchestrator.drills.measure import measure
from orchestrator.lab import Lab, recorded_topology
from orchestrator.topology import Targets


@dataclass(frozen=True)
class Sample:
    mode: str                # "journal" or "off"
    transfers: int           # Locust's request count
    locust_cpu_s: float
    analysis_cpu_s: float    # 0 without a journal

    @property
    def cpu_per_1000(self) -> float:
        return 1000.0 * self.locust_cpu_s / max(self.transfers, 1)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(conninfo: str, mode: str, *, users: int, user_rate: float, seconds: float, work: Path) -> Sample:
    os.environ["DRCTL_MEASURE"] = mode
    before = _children_cpu()
    load = start_load(conninfo, work / f"journal-{mode}", users, float(users), seconds, 100, user_rate, work)
    try:
        load.wait()
    finally:
        load.stop()
    locust_cpu = _children_cpu() - before
    transfers = load.stats().requests
    analysis = 0.0
    if mode == "journal":
        started = time.process_time()
        records = read_journal(load.journal_files())
        if records:
            acks = [r.id for r in records if r.outcome is Outcome.ACK]
            measure(records, fault_at=records[len(records) // 2].start, window_end=records[-1].end,
                    present_ids=set(acks), expected_total=0, observed_total=0, targets=Targets(),
                    window_start=records[0].start)
        analysis = time.process_time() - started
        for path in load.journal_files():
            path.unlink()
    return Sample(mode, transfers, locust_cpu, analysis)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.bench.overhead", description=__doc__)
    parser.add_argument("--lab-dir", type=Path, default=Path(".lab"))
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--user-rate", type=float, default=25.0, help="transfers per second per user")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs in each mode, alternating")
    parser.add_argument("--cluster", default="payments")
    args = parser.parse_args(argv)
    root = args.lab_dir.resolve()
    topology = recorded_topology(root)
    if topology is None:
        parser.error(f"--lab-dir: {root} holds no lab; run 'drctl lab up' first")
    conninfo = Lab(topology, root).app_connection_string(topology.cluster(args.cluster))
    work = Path(tempfile.mkdtemp(prefix="overhead-bench-"))
    samples: list[Sample] = []
    for round_no in range(args.rounds):
        for mode in ("journal", "off") if round_no % 2 == 0 else ("off", "journal"):
            sample = run_once(conninfo, mode, users=args.users, user_rate=args.user_rate, seconds=args.seconds,
                              work=work)
            samples.append(sample)
            print(f"round {round_no} {mode}: {sample.transfers} transfers, Locust CPU {sample.locust_cpu_s:.2f} s, "
                  f"analysis {sample.analysis_cpu_s:.3f} s", flush=True)
    per = {mode: statistics.median(s.cpu_per_1000 for s in samples if s.mode == mode) for mode in ("journal", "off")}
    journal_runs = [s for s in samples if s.mode == "journal"]
    analysis_share = sum(s.analysis_cpu_s for s in journal_runs) / sum(s.locust_cpu_s for s in journal_runs)
    overhead = per["journal"] / per["off"] - 1.0
    print("\n| mode | runs | transfers/run | Locust CPU s per 1,000 transfers (median) |\n|---|---|---|---|")
    for mode in ("off", "journal"):
        runs = [s for s in samples if s.mode == mode]
        print(f"| {mode} | {len(runs)} | {statistics.median(s.transfers for s in runs):,.0f} | {per[mode]:.3f} |")
    together = 100 * (overhead + analysis_share)
    print(f"\njournal overhead over plain Locust: {100 * overhead:+.1f}% CPU; analysis: "
          f"{100 * analysis_share:.1f}% of the journal runs' Locust CPU; together {together:+.1f}%")
    out = Path("reports") / f"overhead-bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                               "samples": [asdict(s) for s in samples], "cpu_per_1000": per,
                               "journal_overhead": overhead, "analysis_share": analysis_share}, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
