"""The benchmark as ``drctl bench failover`` and ``make bench`` run it.

Builds the five systems (dr-orchestrator; Patroni with its default and its most aggressive
accepted timings; pg_auto_failover with default and aggressive monitor settings), gives
Patroni a ZooKeeper ensemble of its own whose session ceiling grants its real ``ttl``,
runs the rounds and writes the report. Every process is stopped by PID at the end, also
when a round fails or the run is interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import ensemble
from orchestrator.bench.ours import DrOrchestratorSystem
from orchestrator.bench.patroni import PatroniSystem, dcs_topology
from orchestrator.bench.pgautofailover import PgAutoFailoverSystem
from orchestrator.bench.report import write_bench
from orchestrator.bench.runner import FULL_ROUNDS, QUICK_ROUNDS, BenchResult, run_bench
from orchestrator.bench.system import System
from orchestrator.errors import InvalidInput, LabError

# One port range per system, away from the lab (25400), the test lab (26000) and the tests' ranges.
PORTS = {"dr-orchestrator": 33000, "patroni-default": 33100, "patroni-aggressive": 33200,
         "pg_auto_failover-default": 33300, "pg_auto_failover-aggressive": 33400, "patroni-dcs": 33500}
# Observation windows: each peer's measured outage on this machine plus a margin.
OBSERVE_S = {"dr-orchestrator": 10.0, "patroni-default": 45.0, "patroni-aggressive": 30.0,
             "pg_auto_failover-default": 70.0, "pg_auto_failover-aggressive": 15.0}
SYSTEMS = tuple(OBSERVE_S)


@dataclass(frozen=True)
class BenchRun:
    result: BenchResult
    path: Path


def run(reports_dir: Path, workdir: Path, *, rounds: int | None = None, quick: bool = False,
        only: tuple[str, ...] = (), progress: Callable[[str], None] = lambda _: None) -> BenchRun:
    """Run the benchmark; ``only`` limits it to some systems (names as in :data:`SYSTEMS`).

    :raises InvalidInput: an unknown system name or a bad round count.
    """
    unknown = [name for name in only if name not in SYSTEMS]
    if unknown:
        raise InvalidInput(f"--system: unknown {', '.join(unknown)}; use some of {', '.join(SYSTEMS)}")
    chosen = only or SYSTEMS
    count = rounds if rounds is not None else (QUICK_ROUNDS if quick else FULL_ROUNDS)
    if count < 1:
        raise InvalidInput(f"--rounds: {count} is not a number of rounds; give 1 or more")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the postgres user must traverse it
    servers: list[ensemble.ZooKeeperServer] = []
    try:
        hosts = ""
        if any(name.startswith("patroni") for name in chosen):
            # Patroni's default ttl is 30 s: the ensemble must grant sessions that long.
            topo = dcs_topology(PORTS["patroni-dcs"], max_session_ms=30_000)
            servers = ensemble.servers(topo, workdir / "patroni-dcs")
            for server in servers:
                server.start()
            deadline = time.monotonic() + 60
            while not ensemble.ensemble_ready(servers):
                if time.monotonic() > deadline:
                    raise LabError(f"Patroni's ZooKeeper ensemble has no leader; see {workdir}/patroni-dcs")
                time.sleep(0.1)
            hosts = topo.zookeeper_hosts()
        systems: list[System] = []
        for name in chosen:
            if name == "dr-orchestrator":
                systems.append(DrOrchestratorSystem(PORTS[name]))
            elif name.startswith("patroni-"):
                systems.append(PatroniSystem("default" if name.endswith("default") else "aggressive",
                                             PORTS[name], zookeeper_hosts=hosts))
            else:
                systems.append(PgAutoFailoverSystem("default" if name.endswith("default") else "aggressive",
                                                    PORTS[name]))
        result = run_bench(systems, count, workdir, users=10, duration_s=14, fault_at_s=4, accounts=100,
                           user_rate=20, progress=progress, observe_s={n: OBSERVE_S[n] for n in chosen})
        return BenchRun(result, write_bench(result, reports_dir))
    finally:
        for server in servers:
            server.stop()
