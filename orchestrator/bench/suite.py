"""The benchmark as ``drctl bench failover`` and ``make bench`` run it.

Builds the five systems (dr-orchestrator; Patroni with its default and its most aggressive
accepted timings, each on a ZooKeeper ensemble of its own whose session ceiling grants its
real ``ttl``; pg_auto_failover with default and aggressive monitor settings), runs the
rounds and writes the report. Every process is stopped by PID after each round, also when
a round fails or the run is interrupted.

Ports: each system gets 100 from ``port_base`` (:data:`OFFSETS`). The default base lies
below the kernel's ephemeral range (32768-60999 here), outside the developer lab
(25400-25600) and CI (26000-33100): inside the ephemeral range any client's outgoing
connection can hold one of the bench's ports (it did: "Address already in use").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.bench import procs
from orchestrator.bench.ours import DrOrchestratorSystem
from orchestrator.bench.patroni import PatroniSystem
from orchestrator.bench.pgautofailover import PgAutoFailoverSystem
from orchestrator.bench.report import write_bench
from orchestrator.bench.runner import FULL_ROUNDS, QUICK_ROUNDS, BenchResult, run_bench
from orchestrator.bench.system import System
from orchestrator.errors import InvalidInput

DEFAULT_PORT_BASE = 24000
PORTS_PER_SYSTEM = 100
OFFSETS = {"dr-orchestrator": 0, "patroni-default": 100, "patroni-aggressive": 200,
           "pg_auto_failover-default": 300, "pg_auto_failover-aggressive": 400}
# Observation windows: each peer's measured outage on this machine plus a margin.
OBSERVE_S = {"dr-orchestrator": 10.0, "patroni-default": 45.0, "patroni-aggressive": 30.0,
             "pg_auto_failover-default": 70.0, "pg_auto_failover-aggressive": 15.0}
SYSTEMS = tuple(OBSERVE_S)
# Lab ranges a bench must never take (developer lab, CI).
RESERVED = ((25400, 25600), (26000, 33100))


@dataclass(frozen=True)
class BenchRun:
    result: BenchResult
    path: Path


def check_port_base(port_base: int) -> None:
    """:raises InvalidInput: the bench's 500 ports overlap a lab's range or leave 1024..65535."""
    last = port_base + PORTS_PER_SYSTEM * len(OFFSETS) - 1
    if port_base < 1024 or last > 65535:
        raise InvalidInput(f"--port-base: {port_base}..{last} is outside 1024..65535; pick another base")
    for low, high in RESERVED:
        if port_base <= high and last >= low:
            raise InvalidInput(f"--port-base: {port_base}..{last} overlaps the lab range {low}-{high}; "
                               f"pick a base such as {DEFAULT_PORT_BASE}")


def build(name: str, port_base: int) -> System:
    """The system ``name`` on its ports from ``port_base``."""
    base = port_base + OFFSETS[name]
    if name == "dr-orchestrator":
        return DrOrchestratorSystem(base)
    if name.startswith("patroni-"):
        return PatroniSystem("default" if name.endswith("default") else "aggressive", base)
    return PgAutoFailoverSystem("default" if name.endswith("default") else "aggressive", base)


def run(reports_dir: Path, workdir: Path, *, rounds: int | None = None, quick: bool = False,
        only: tuple[str, ...] = (), port_base: int = DEFAULT_PORT_BASE,
        progress: Callable[[str], None] = lambda _: None) -> BenchRun:
    """Run the benchmark; ``only`` limits it to some systems (names as in :data:`SYSTEMS`).

    :raises InvalidInput: an unknown system name, a bad round count or port base.
    """
    unknown = [name for name in only if name not in SYSTEMS]
    if unknown:
        raise InvalidInput(f"--system: unknown {', '.join(unknown)}; use some of {', '.join(SYSTEMS)}")
    chosen = only or SYSTEMS
    count = rounds if rounds is not None else (QUICK_ROUNDS if quick else FULL_ROUNDS)
    if count < 1:
        raise InvalidInput(f"--rounds: {count} is not a number of rounds; give 1 or more")
    check_port_base(port_base)
    low, high = procs.ephemeral_range()
    if port_base <= high and port_base + PORTS_PER_SYSTEM * len(OFFSETS) > low:
        progress(f"note: ports {port_base}+ lie in the ephemeral range {low}-{high}: a client's connection can "
                 "hold one; each round waits until its ports are free")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the postgres user must traverse it
    systems = [build(name, port_base) for name in chosen]
    result = run_bench(systems, count, workdir, users=10, duration_s=14, fault_at_s=4, accounts=100,
                       user_rate=20, progress=progress, observe_s={n: OBSERVE_S[n] for n in chosen})
    return BenchRun(result, write_bench(result, reports_dir))
