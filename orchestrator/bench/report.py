"""Bench reports: ``reports/bench-<UTC timestamp>/`` with bench.json, bench.md and rto-boxplot.png.

``drctl bench failover`` passes the :class:`~orchestrator.bench.runner.BenchResult` of
:func:`~orchestrator.bench.runner.run_bench` to :func:`write_bench` and prints
:func:`summary_lines`. ``bench.json`` holds every round and every system's settings
verbatim, so anyone can check fairness; ``bench.md`` is the table per system and the ratio
of each peer's median RTO to ours; the box plot shows the RTO spread on a log scale.
The aggregation (:func:`summarize_system`, :func:`percentile`, :func:`speedup`) is pure.
The plot uses matplotlib's object API on the Agg canvas: no pyplot, no global state.
"""

from __future__ import annotations

import io
import json
import os
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict

from orchestrator.bench.runner import BenchResult, RoundResult
from orchestrator.drills.report import new_run_dir

BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
BOXPLOT_PNG = "rto-boxplot.png"
TIMES = "\u00d7"   # the multiplication sign of "12.3x faster" (spelled out: ruff flags it in source)


class SystemSummary(BaseModel):
    """One system over every round. RTO figures cover the measured rounds; an unrecovered
    round counts with its whole observation window (a lower bound), flagged by ``unrecovered``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str
    rounds: int                    # attempted
    measured: int                  # rounds that produced figures
    failed: int
    unrecovered: int
    rto_median: float | None
    rto_p95: float | None
    rto_max: float | None
    acked_total: int
    lost_total: int
    balance_conserved_all: bool    # in every measured round (and at least one was measured)
    sync_off_acks_total: int
    sync_off_seconds_total: float
    rejoined: int                  # rounds where the old primary came back as a standby by itself


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks
    (:func:`statistics.quantiles`, inclusive method; its cut points stop at 1 and 99).

    :raises ValueError: no values, or ``q`` outside 0..100.
    """
    if not values or not 0 <= q <= 100:
        raise ValueError(f"percentile of {len(values)} value(s) at q={q}: need values and 0 <= q <= 100")
    if len(values) == 1 or q in (0, 100):
        return max(values) if q == 100 else min(values) if q == 0 else values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summarize_system(system: str, rounds: Sequence[RoundResult]) -> SystemSummary:
    mine = [r for r in rounds if r.system == system]
    measured = [r for r in mine if r.ok]
    rtos = [r.rto_seconds for r in measured if r.rto_seconds is not None]
    return SystemSummary(
        system=system, rounds=len(mine), measured=len(measured), failed=len(mine) - len(measured),
        unrecovered=sum(1 for r in measured if r.unrecovered),
        rto_median=statistics.median(rtos) if rtos else None,
        rto_p95=percentile(rtos, 95) if rtos else None,
        rto_max=max(rtos) if rtos else None,
        acked_total=sum(r.acked for r in measured), lost_total=sum(r.lost for r in measured),
        balance_conserved_all=bool(measured) and all(r.balance_conserved for r in measured),
        sync_off_acks_total=sum(r.sync_off_acks for r in measured),
        sync_off_seconds_total=sum(r.sync_off_seconds for r in measured),
        rejoined=sum(1 for r in measured if r.old_primary_rejoined),
    )


def summaries(result: BenchResult) -> list[SystemSummary]:
    return [summarize_system(name, result.rounds) for name in result.systems]


def speedup(reference: SystemSummary, peer: SystemSummary) -> float | None:
    """How many times faster the reference restores writes: peer median RTO / reference median RTO."""
    if reference.rto_median is None or peer.rto_median is None or reference.rto_median <= 0:
        return None
    return peer.rto_median / reference.rto_median


def comparison_lines(result: BenchResult) -> list[str]:
    """One line per peer: "dr-orchestrator restores writes N times faster than X (median a s vs b s)"."""
    table = {s.system: s for s in summaries(result)}
    ref = table.get(result.reference or "")
    if ref is None:
        return []
    lines = []
    for name, peer in table.items():
        if name == ref.system:
            continue
        ratio = speedup(ref, peer)
        if ratio is None:
            lines.append(f"{ref.system} vs {name}: no ratio (a median RTO is missing)")
            continue
        medians = f"(median {_secs(ref.rto_median)} vs {_secs(peer.rto_median)})"
        if ratio >= 1:
            lines.append(f"{ref.system} restores writes {ratio:.1f}{TIMES} faster than {name} {medians}")
        else:
            lines.append(f"{ref.system} restores writes {1 / ratio:.1f}{TIMES} slower than {name} {medians}")
    return lines


# ---- words --------------------------------------------------------------------------------


def _secs(value: float | None, *, lower_bound: bool = False) -> str:
    return "—" if value is None else f"{'≥ ' if lower_bound else ''}{value:.2f} s"


def summary_lines(result: BenchResult) -> list[str]:
    """Plain lines for the CLI: one per system, then the ratios, failed rounds and stop errors."""
    lines = []
    for s in summaries(result):
        bound = s.unrecovered > 0
        rto = (f"RTO median {_secs(s.rto_median, lower_bound=bound)}, p95 {_secs(s.rto_p95, lower_bound=bound)}, "
               f"max {_secs(s.rto_max, lower_bound=bound)}")
        lines.append(
            f"{s.system}: {s.measured}/{s.rounds} rounds measured; {rto}"
            + (f" ({s.unrecovered} unrecovered)" if s.unrecovered else "")
            + f"; {s.lost_total} of {s.acked_total:,} acknowledged transfers lost; balance "
            + ("conserved" if s.balance_conserved_all else "NOT conserved in every round")
            + f"; {s.sync_off_acks_total} acked with sync replication off; old primary rejoined {s.rejoined}/{s.rounds}"
        )
    lines += comparison_lines(result)
    lines += [f"{r.system} round {r.round} failed: {r.error}" for r in result.rounds if not r.ok]
    lines += [f"{name}: stop() failed: {error}" for name, error in result.stop_errors.items()]
    return lines


def hygiene_lines(result: BenchResult) -> list[str]:
    """Per round: how long the system's ports were held before its start (and by what), and
    whether anything of it outlived its ``stop()``: the evidence that rounds did not overlap."""
    out = ["## Round hygiene", "",
           "Before each start the runner waits until every port of the system can be bound; after each round "
           "it stops the system, checks with psutil that no process works in its directory and no socket "
           "listens on its ports, and removes the directory.", "",
           "| round | system | waited for ports | held by (first look) | listeners closed after stop | survivors |",
           "|---|---|---|---|---|---|"]
    for r in sorted(result.rounds, key=lambda r: (r.round, r.started_at)):
        held = "; ".join(r.preflight.get("held_by", [])) or "—"
        waited = r.preflight.get("waited_s")
        released = r.teardown.get("ports_released_s")
        survivors = "; ".join(r.teardown.get("survivors", []) + r.teardown.get("listeners_left", [])) or "none"
        out.append(f"| {r.round} | {r.system} | {'—' if waited is None else f'{waited:.1f} s'} | "
                   f"{held.replace('|', '/')} | {'—' if released is None else f'{released:.1f} s'} | "
                   f"{survivors.replace('|', '/')} |")
    return out


def render_markdown(result: BenchResult) -> str:
    load = result.load
    when = datetime.fromtimestamp(result.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    ref = result.reference or "—"
    out = [
        f"# Failover benchmark, {when}",
        "",
        f"Same machine, same load ({load.users} users {TIMES} {load.user_rate:g} transfers/s each over {load.accounts} "
        f"accounts, libpq multi-host `target_session_attrs=read-write`), same fault at {load.fault_at_s:g} s "
        "into the load: loss of the primary's node (kill -9 of its postgres and of that node's agent). "
        f"{result.rounds_requested} round(s), systems alternating order every round.",
        "",
        "| system | rounds | median RTO | p95 RTO | max RTO | acked lost (total) | balance conserved in all "
        f"rounds | writes acked with sync off (total) | old primary rejoined | median RTO vs {ref} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    table = summaries(result)
    reference = next((s for s in table if s.system == result.reference), None)
    for s in table:
        bound = s.unrecovered > 0
        ratio = None if reference is None else speedup(reference, s)
        rounds = f"{s.measured}/{s.rounds}" + (f" ({s.unrecovered} unrecovered)" if s.unrecovered else "")
        out.append(
            f"| {s.system} | {rounds} | {_secs(s.rto_median, lower_bound=bound)} | "
            f"{_secs(s.rto_p95, lower_bound=bound)} | {_secs(s.rto_max, lower_bound=bound)} | "
            f"{s.lost_total} of {s.acked_total:,} | {'yes' if s.balance_conserved_all else 'NO'} | "
            f"{s.sync_off_acks_total} ({s.sync_off_seconds_total:.2f} s) | {s.rejoined}/{s.rounds} | "
            f"{'—' if ratio is None else f'{ratio:.1f}{TIMES}'} |"
        )
    out += ["", *(f"- {line}" for line in comparison_lines(result))]
    out += [
        "", "RTO is the client-observed write outage: from the kill to the end of the first acknowledged "
        "transfer from the new primary. Writes acked with sync off: acknowledgements from a primary whose "
        "polled `synchronous_standby_names` was empty (~50 ms resolution; seconds polled in that state in "
        "brackets). Observation windows: "
        + ", ".join(f"{n} {w:g} s" for n, w in load.observe_s.items()) + ".",
        "", "## Rounds", "",
        "| round | system | RTO | acked | lost | indeterminate | balance | acked with sync off | new primary "
        "| old primary rejoined | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(result.rounds, key=lambda r: (r.round, r.started_at)):
        rto = "—" if r.rto_seconds is None or not r.ok else _secs(r.rto_seconds, lower_bound=r.unrecovered)
        balance = "—" if r.observed_total is None else ("conserved" if r.balance_conserved else "NOT conserved")
        error = "" if r.error is None else r.error.replace("|", "\\|").replace("\n", " ")
        out.append(f"| {r.round} | {r.system} | {rto} | {r.acked} | {r.lost} | {r.indeterminate} | {balance} | "
                   f"{r.sync_off_acks} | {r.new_primary or '—'} | {'yes' if r.old_primary_rejoined else 'no'} | "
                   f"{error} |")
    out += ["", *hygiene_lines(result)]
    out += ["", "## Settings (verbatim, as each system reported them)", ""]
    for name, settings in result.settings.items():
        out += [f"### {name}", "", "```json", json.dumps(settings, indent=2, sort_keys=True), "```", ""]
    if result.stop_errors:
        out += ["## Stop errors", "", *(f"- {n}: {e}" for n, e in result.stop_errors.items()), ""]
    return "\n".join(out).rstrip() + "\n"


def render_boxplot(result: BenchResult) -> bytes:
    """The PNG: one box per system over its measured rounds' RTOs, log-scale seconds."""
    data = {s: [r.rto_seconds for r in result.rounds if r.system == s and r.ok and r.rto_seconds is not None]
            for s in result.systems}
    shown = {s: [max(v, 1e-3) for v in values] for s, values in data.items() if values}
    fig = Figure(figsize=(max(6.0, 1.8 * len(result.systems)), 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if shown:
        ax.boxplot(list(shown.values()), tick_labels=list(shown), showfliers=True)
        for i, values in enumerate(shown.values(), start=1):
            ax.scatter([i] * len(values), values, s=10, color="tab:blue", alpha=0.5, zorder=3)
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no measured round", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("client-observed write outage (s, log scale)")
    ax.set_title("Failover: kill -9 of the primary's node, same load for every system")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_bench(result: BenchResult, reports_dir: str | Path) -> Path:
    """Write ``bench-<UTC start time>/`` (``-2``, ``-3``... on a clash) and return it; bench.json goes last."""
    run_dir = new_run_dir(Path(reports_dir) / f"bench-{datetime.fromtimestamp(result.started_at, UTC):%Y%m%dT%H%M%SZ}")
    (run_dir / BOXPLOT_PNG).write_bytes(render_boxplot(result))
    (run_dir / BENCH_MD).write_text(render_markdown(result))
    tmp = run_dir / (BENCH_JSON + ".tmp")
    tmp.write_text(result.model_dump_json(indent=2) + "\n")
    os.replace(tmp, run_dir / BENCH_JSON)
    return run_dir
