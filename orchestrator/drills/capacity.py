"""The capacity run: ramp the bank workload in steps until the latency objective or the error rate breaks.

``drctl load capacity CLUSTER`` calls :func:`run_capacity`: one Locust run per step (users
``step_users``, ``2 x step_users``, ... up to ``max_users``, each ``step_seconds`` long,
every user as fast as it can), read back through the client journal. Each step's latency
percentiles are exact (numpy over every acknowledged transfer in the step's measured part,
after ``settle_s``), not bucketed. The pure half (:func:`step_result`, :func:`summarise`)
decides which step broke, the sustainable throughput and the knee; the tests feed it
hand-made journals.
"""

from __future__ import annotations

import base64
import io
import tempfile
import time
from collections.abc import Callable, Iterable
from itertools import pairwise
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict

from orchestrator.drills.journal import JournalRecord, Outcome, read_journal

PERCENTILES = (50.0, 95.0, 99.0, 99.9)
_STARTUP_S = 5.0   # Locust's start-up on a busy machine, on top of each step
KNEE_GAIN = 0.10   # a step adding less than 10% throughput over the previous one is past the knee


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepResult(_Frozen):
    users: int
    seconds: float                    # the measured part of the step
    attempts: int
    acks: int
    throughput: float                 # acknowledged transfers per second
    error_percent: float
    latency_ms: dict[str, float]      # "p50", "p95", "p99", "p99.9" of acknowledged transfers
    broke: str | None                 # why the step broke the objectives, None when it met them


def latency_percentiles(latencies_ms: Iterable[float]) -> dict[str, float]:
    values = np.fromiter(latencies_ms, dtype=float)
    if not values.size:
        return {}
    return {f"p{q:g}": float(np.percentile(values, q, method="inverted_cdf")) for q in PERCENTILES}


def step_result(records: Iterable[JournalRecord], *, users: int, start: float, end: float,
                p99_objective_ms: float, max_error_percent: float) -> StepResult:
    """The step's figures over attempts that started in ``[start, end)``."""
    window = [r for r in records if start <= r.start < end]
    acks = [r for r in window if r.outcome is Outcome.ACK]
    errors = len(window) - len(acks)
    error_percent = 100.0 * errors / len(window) if window else 0.0
    latency = latency_percentiles(1000.0 * (r.end - r.start) for r in acks)
    broke = None
    if not acks:
        broke = "no transfer was acknowledged"
    elif latency["p99"] > p99_objective_ms:
        broke = f"p99 {latency['p99']:.1f} ms over the {p99_objective_ms:g} ms objective"
    elif error_percent > max_error_percent:
        broke = f"{error_percent:.2f}% errors over the {max_error_percent:g}% limit"
    seconds = max(end - start, 1e-9)
    return StepResult(users=users, seconds=seconds, attempts=len(window), acks=len(acks),
                      throughput=len(acks) / seconds, error_percent=error_percent, latency_ms=latency, broke=broke)


class Capacity(_Frozen):
    cluster: str
    p99_objective_ms: float
    max_error_percent: float
    steps: tuple[StepResult, ...]
    sustainable_throughput: float | None   # the best step that met every objective
    sustainable_users: int | None
    knee_users: int | None                 # the last step before the gain flattened or an objective broke
    stopped_by: str                        # the step that broke and why, or that max_users was reached

    def lines(self) -> list[str]:
        out = [f"{self.cluster}: p99 objective {self.p99_objective_ms:g} ms, error limit {self.max_error_percent:g}%"]
        out.append(f"{'users':>5} {'tx/s':>8} {'err%':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'p99.9':>7}  verdict")
        for s in self.steps:
            lat = [f"{s.latency_ms[k]:7.1f}" if k in s.latency_ms else f"{'—':>7}"
                   for k in ("p50", "p95", "p99", "p99.9")]
            out.append(f"{s.users:5d} {s.throughput:8.1f} {s.error_percent:6.2f} {' '.join(lat)}  "
                       f"{s.broke or 'ok'}")
        if self.sustainable_throughput is None:
            out.append("sustainable throughput: none (the first step already broke an objective)")
        else:
            out.append(f"sustainable throughput: {self.sustainable_throughput:.1f} transfers/s with "
                       f"{self.sustainable_users} users; knee at {self.knee_users} users")
        out.append(f"stopped: {self.stopped_by}")
        return out


def summarise(cluster: str, steps: list[StepResult], *, p99_objective_ms: float, max_error_percent: float,
              max_users: int) -> Capacity:
    good = [s for s in steps if s.broke is None]
    best = max(good, key=lambda s: s.throughput, default=None)
    knee = None
    for previous, current in pairwise(steps):
        if previous.broke is not None:
            break
        knee = previous.users
        if current.broke is not None or current.throughput < previous.throughput * (1 + KNEE_GAIN):
            break
    else:
        if steps and steps[-1].broke is None:
            knee = steps[-1].users
    broken = next((s for s in steps if s.broke is not None), None)
    stopped = (f"{broken.users} users: {broken.broke}" if broken is not None
               else f"reached max users {max_users} without breaking an objective")
    return Capacity(cluster=cluster, p99_objective_ms=p99_objective_ms, max_error_percent=max_error_percent,
                    steps=tuple(steps), sustainable_throughput=None if best is None else best.throughput,
                    sustainable_users=None if best is None else best.users, knee_users=knee, stopped_by=stopped)


def paced_load(capacity: Capacity, fraction: float) -> tuple[int, float]:
    """The users and per-user rate that offer ``fraction`` of the sustainable throughput: the
    concurrency the capacity run sustained it with, each user paced to an equal share.

    :raises ValueError: the run found no sustainable step, or ``fraction`` is not in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"capacity fraction {fraction:g} is not in (0, 1]; give e.g. 0.7")
    if capacity.sustainable_throughput is None or capacity.sustainable_users is None:
        raise ValueError(f"the capacity run of {capacity.cluster} found no step within its objectives "
                         f"({capacity.stopped_by}); fix the objective or the cluster, then run it again")
    users = capacity.sustainable_users
    return users, fraction * capacity.sustainable_throughput / users


def render_plot(capacity: Capacity) -> str:
    """A PNG (base64) of throughput and p99 per step, with the objective."""
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    users = [s.users for s in capacity.steps]
    ax.plot(users, [s.throughput for s in capacity.steps], "o-", color="tab:blue", label="transfers/s")
    ax.set_xlabel("users")
    ax.set_ylabel("acknowledged transfers per second")
    right = ax.twinx()
    right.plot(users, [s.latency_ms.get("p99", np.nan) for s in capacity.steps], "s--", color="tab:orange",
               label="p99 (ms)")
    right.axhline(capacity.p99_objective_ms, color="tab:red", linestyle=":", label="p99 objective")
    right.set_ylabel("p99 latency (ms)")
    fig.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(capacity: Capacity) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("orchestrator.drills", "templates"), autoescape=True,
                      undefined=StrictUndefined)
    return env.get_template("capacity.html.j2").render(c=capacity, lines=capacity.lines(), png=render_plot(capacity))


# ---- the run (I/O): Locust steps against a live cluster -----------------------------------


def run_capacity(conninfo: str, cluster: str, *, step_users: int, max_users: int, step_seconds: float,
                 p99_objective_ms: float, max_error_percent: float, accounts: int = 100, settle_s: float = 2.0,
                 progress: Callable[[str], None] = lambda _: None) -> Capacity:
    """Ramp until a step breaks an objective or ``max_users`` is reached.

    :raises LabError: Locust could not start or exited with an error.
    :raises InvalidInput: steps that cannot make a run.
    """
    from orchestrator.drills import bank
    from orchestrator.drills.load import start_load
    from orchestrator.errors import InvalidInput

    if step_users < 1 or max_users < step_users or step_seconds <= settle_s:
        raise InvalidInput(f"--step-users {step_users}, --max-users {max_users}, --step-seconds {step_seconds:g}: "
                           f"need 1 <= step-users <= max-users and step-seconds > {settle_s:g} (the settling time)")
    bank.setup(conninfo, accounts, 1_000)
    work = Path(tempfile.mkdtemp(prefix=f"capacity-{cluster}-"))
    steps: list[StepResult] = []
    for users in range(step_users, max_users + 1, step_users):
        progress(f"step: {users} users for {step_seconds:g}s")
        # Locust's run time includes its start-up; the step is measured from its first ack.
        load = start_load(conninfo, work / f"journal-{users}", users, float(users),
                          step_seconds + settle_s + _STARTUP_S, accounts, 0.0, work)
        try:
            load.wait()
        finally:
            load.stop()
        records = read_journal(load.journal_files())
        acks = [r.start for r in records if r.outcome is Outcome.ACK]
        begin = (min(acks) if acks else time.time()) + settle_s
        end = min(begin + step_seconds, max((r.start for r in records), default=begin))
        step = step_result(records, users=users, start=begin, end=end, p99_objective_ms=p99_objective_ms,
                           max_error_percent=max_error_percent)
        steps.append(step)
        progress(f"{users} users: {step.throughput:.0f} transfers/s, p99 {step.latency_ms.get('p99', 0):.1f} ms"
                 + (f": {step.broke}" if step.broke else ""))
        if step.broke is not None:
            break
    return summarise(cluster, steps, p99_objective_ms=p99_objective_ms, max_error_percent=max_error_percent,
                     max_users=max_users)
