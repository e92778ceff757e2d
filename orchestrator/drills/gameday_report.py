"""Game-day and capacity reports: ``<reports>/<UTC>-gameday-<cluster>/`` (gameday.json, gameday.html,
timeline.png) and ``<reports>/<UTC>-capacity-<cluster>/`` (capacity.json, capacity.html).

Written by ``drctl drill gameday`` and ``drctl load capacity``; listed by ``drctl drill history``.
Rendering only: the figures come from :mod:`orchestrator.drills.gameday` and
:mod:`orchestrator.drills.capacity`.
"""

from __future__ import annotations

import base64
import io
import math
import os
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orchestrator.drills.capacity import Capacity
from orchestrator.drills.capacity import render_html as capacity_html
from orchestrator.drills.gameday import GameDay
from orchestrator.drills.report import new_run_dir

GAMEDAY_JSON, GAMEDAY_HTML, GAMEDAY_PNG = "gameday.json", "gameday.html", "timeline.png"
CAPACITY_JSON, CAPACITY_HTML = "capacity.json", "capacity.html"

_TEMPLATES = Environment(loader=PackageLoader("orchestrator.drills", "templates"), autoescape=True,
                         undefined=StrictUndefined, keep_trailing_newline=True)


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%SZ")


def render_timeline(g: GameDay) -> bytes:
    """Acks per second and per-second p99 over the window, each fault's outage shaded and labelled."""
    fig = Figure(figsize=(11, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = [s[0] for s in g.series]
    top.step(t, [s[1] for s in g.series], where="post", linewidth=1, color="tab:blue")
    top.set_ylabel("acks per second")
    top.set_title(f"game day on {g.cluster}: {'PASSED' if g.passed else 'FAILED'}")
    bottom.plot(t, [math.nan if s[2] is None else s[2] for s in g.series], linewidth=1, color="tab:orange")
    bottom.axhline(g.p99_objective_ms, color="tab:red", linestyle=":", linewidth=1)
    bottom.set_ylabel("p99 ms (per second)")
    bottom.set_xlabel("seconds since the load started")
    for f in g.faults:
        x = f.at - g.window_start
        for ax in (top, bottom):
            ax.axvspan(x, x + f.rto_seconds, color="tab:red", alpha=0.2, linewidth=0)
            ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
        top.annotate(f"{f.drill}\nRTO {f.rto_seconds:.2f} s, RPO {f.rpo_seconds:.2f} s", (x, 0),
                     xytext=(3, 5), textcoords="offset points", fontsize="x-small")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_gameday(g: GameDay, reports_dir: str | Path) -> Path:
    run_dir = new_run_dir(Path(reports_dir) / f"{_stamp(g.started_at)}-gameday-{g.cluster}")
    png = render_timeline(g)
    (run_dir / GAMEDAY_PNG).write_bytes(png)
    (run_dir / GAMEDAY_HTML).write_text(_TEMPLATES.get_template("gameday.html.j2").render(
        g=g, lines=g.lines(), png=base64.b64encode(png).decode("ascii"), png_name=GAMEDAY_PNG,
        started=datetime.fromtimestamp(g.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    ))
    tmp = run_dir / (GAMEDAY_JSON + ".tmp")
    tmp.write_text(g.model_dump_json(indent=2) + "\n")
    os.replace(tmp, run_dir / GAMEDAY_JSON)
    return run_dir


def write_capacity(c: Capacity, reports_dir: str | Path, *, at: float) -> Path:
    run_dir = new_run_dir(Path(reports_dir) / f"{_stamp(at)}-capacity-{c.cluster}")
    (run_dir / CAPACITY_HTML).write_text(capacity_html(c))
    tmp = run_dir / (CAPACITY_JSON + ".tmp")
    tmp.write_text(c.model_dump_json(indent=2) + "\n")
    os.replace(tmp, run_dir / CAPACITY_JSON)
    return run_dir


def list_runs(reports_dir: str | Path, marker: str) -> list[Path]:
    """Directories holding ``marker`` (e.g. gameday.json), newest first."""
    root = Path(reports_dir)
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if (d / marker).is_file()), key=lambda d: d.name, reverse=True)


def latest_capacity(reports_dir: str | Path, cluster: str) -> tuple[Path, Capacity] | None:
    """The newest capacity run of ``cluster`` stored under ``reports_dir`` (unreadable ones skipped)."""
    for run_dir in list_runs(reports_dir, CAPACITY_JSON):
        try:
            capacity = Capacity.model_validate_json((run_dir / CAPACITY_JSON).read_text())
        except (OSError, ValueError):
            continue
        if capacity.cluster == cluster:
            return run_dir, capacity
    return None


def capacity_paced(reports_dir: str | Path, cluster: str, fraction: float) -> tuple[int, float, dict[str, object]]:
    """Users and per-user rate for ``fraction`` of ``cluster``'s newest measured capacity, and the basis
    to record in the report.

    :raises InvalidInput: no capacity run of the cluster is stored, or it found no sustainable step.
    """
    from orchestrator.drills.capacity import paced_load
    from orchestrator.errors import InvalidInput

    found = latest_capacity(reports_dir, cluster)
    if found is None:
        raise InvalidInput(f"load.capacity_fraction: no capacity run of {cluster} in {reports_dir}; run "
                           f"'drctl load capacity {cluster}' first or give load.users instead")
    run_dir, capacity = found
    try:
        users, rate = paced_load(capacity, fraction)
    except ValueError as exc:
        raise InvalidInput(f"load.capacity_fraction: {exc}") from None
    basis: dict[str, object] = {"capacity_run": run_dir.name, "sustainable_throughput": capacity.sustainable_throughput,
             "fraction": fraction, "offered_throughput": round(users * rate, 2), "users": users,
             "user_rate": round(rate, 4)}
    return users, rate, basis
