"""Soak reports: ``<reports>/<UTC>-soak-<cluster>/`` (soak.json, soak.html, the kept journals).

Written by ``drctl drill soak``. Rendering only: the figures come from :mod:`orchestrator.drills.soak`.
"""

from __future__ import annotations

import base64
import io
import os
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orchestrator.drills.report import new_run_dir
from orchestrator.drills.soak import Soak

SOAK_JSON, SOAK_HTML = "soak.json", "soak.html"
JOURNALS = "journals"

_TEMPLATES = Environment(loader=PackageLoader("orchestrator.drills", "templates"), autoescape=True,
                         undefined=StrictUndefined, keep_trailing_newline=True)


def run_dir_for(soak_started_at: float, cluster: str, reports_dir: str | Path) -> Path:
    stamp = datetime.fromtimestamp(soak_started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return new_run_dir(Path(reports_dir) / f"{stamp}-soak-{cluster}")


def render_rto(s: Soak) -> bytes:
    """The RTO distribution of each fault kind (a box per kind, every round a dot)."""
    fig = Figure(figsize=(10, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    kinds = [k.kind for k in s.summary]
    data = [[r.rto_seconds for r in s.rounds if r.kind == kind] for kind in kinds]
    if data:
        ax.boxplot(data, tick_labels=kinds, showfliers=False)
        for i, values in enumerate(data, start=1):
            ax.scatter([i] * len(values), values, s=8, color="tab:blue", alpha=0.6)
    ax.set_ylabel("client-observed RTO (s)")
    ax.set_title(f"soak on {s.cluster}, seed {s.seed}: RTO per fault kind")
    ax.tick_params(axis="x", labelrotation=20, labelsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_soak(s: Soak, run_dir: Path) -> Path:
    """Write soak.json and soak.html into ``run_dir`` (made by :func:`run_dir_for`; journals are already there)."""
    (run_dir / SOAK_HTML).write_text(_TEMPLATES.get_template("soak.html.j2").render(
        s=s, lines=s.lines(), broken=[r for r in s.rounds if r.broken],
        png=base64.b64encode(render_rto(s)).decode("ascii"),
        started=datetime.fromtimestamp(s.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    ))
    tmp = run_dir / (SOAK_JSON + ".tmp")
    tmp.write_text(s.model_dump_json(indent=2) + "\n")
    os.replace(tmp, run_dir / SOAK_JSON)
    return run_dir
