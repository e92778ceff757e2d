"""Projection reports: ``<reports>/<UTC timestamp>-slo-<cluster>/`` with projection.json and projection.html.

``drctl slo project`` renders a :class:`~orchestrator.slo.projection.Projection` as text
(:func:`summary_lines`), JSON, or an HTML page for auditors (SLOs, evidence per failure
kind, the verdict, a histogram of simulated yearly downtime), and ``drctl drill history``
lists the stored ones (:func:`list_projections`). Rendering only: the figures come from
:mod:`orchestrator.slo.projection`.
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from orchestrator.slo.projection import Projection, Strength, headroom_seconds

PROJECTION_JSON = "projection.json"
PROJECTION_HTML = "projection.html"

_TEMPLATES = Environment(
    loader=PackageLoader("orchestrator.slo", "templates"), autoescape=True, undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def source_rows(p: Projection) -> list[list[str]]:
    rows = []
    for s in p.sources:
        if s.strength is Strength.UNMEASURED:
            room = headroom_seconds(p, s.rate_per_year)
            downtime = ("NOT MEASURED" + ("" if room is None else
                        f": alone, may average at most {room:.0f} s per incident before the mean spends the budget"))
        else:
            downtime = _secs(s.mean_downtime_s)
        rows.append([
            s.name + (" (planned)" if s.planned else ""), f"{s.rate_per_year:g}", str(s.drills),
            _secs(s.rto_median_s), _secs(s.rto_max_s), downtime, _pct(s.share_of_downtime),
            _pct(s.share_of_budget), f"{s.strength.value}: {s.evidence}",
        ])
    return rows


SOURCE_HEADERS = ["failure kind", "per year", "drills", "median RTO", "max RTO", "mean downtime/year",
                  "share of downtime", "share of budget", "evidence"]


def summary_lines(p: Projection) -> list[str]:
    """Plain lines for the CLI: the headline, the budget, what dominates, each source's evidence."""
    pct = p.downtime_percentiles_s
    lines = [
        f"{p.cluster}: {p.headline()}",
        f"yearly error budget {p.budget_seconds / 60:.2f} min; simulated mean downtime {p.mean_downtime_s / 60:.2f} "
        f"min/year (median {pct['p50'] / 60:.2f}, p95 {pct['p95'] / 60:.2f}, p99 {pct['p99'] / 60:.2f} min); "
        f"{100 * p.share_of_years_meeting:.1f}% of {p.years:,} simulated years meet {p.target_percent:g}% "
        f"(seed {p.seed})",
    ]
    if p.dominant is not None:
        top = next(s for s in p.sources if s.name == p.dominant)
        lines.append(f"dominant: {p.dominant}, {_pct(top.share_of_downtime)} of the downtime "
                     f"({_pct(top.share_of_budget)} of the budget)")
    for s, row in zip(p.sources, source_rows(p), strict=True):
        kind, rate, drills, median, _mx, downtime, _share, budget, evidence = row
        if s.strength is Strength.UNMEASURED:
            lines.append(f"  {kind}: {rate}/year, {downtime}")
        else:
            lines.append(f"  {kind}: {rate}/year x median RTO {median} from {drills} drill(s) -> {downtime}/year "
                         f"({budget} of budget); {evidence}")
    return lines


def render_plot(p: Projection) -> str:
    """An inline SVG: histogram of simulated yearly downtime (minutes) with the budget marked."""
    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasSVG(fig)
    ax = fig.subplots()
    for low, high, count in p.histogram:
        ax.bar(low / 60, count, width=(high - low) / 60, align="edge", color="tab:blue", alpha=0.7)
    ax.axvline(p.budget_seconds / 60, color="tab:red", linestyle="--", label=f"budget ({p.target_percent:g}%)")
    ax.axvline(p.mean_downtime_s / 60, color="black", linestyle=":", label="mean")
    ax.set_xlabel("downtime in a simulated year (minutes)")
    ax.set_ylabel("simulated years")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    text = out.getvalue()
    return text[text.index("<svg"):]


def render_html(p: Projection, *, generated_at: float, slo: dict[str, str]) -> str:
    return _TEMPLATES.get_template("projection.html.j2").render(
        p=p, headline=p.headline(), lines=summary_lines(p), headers=SOURCE_HEADERS, rows=source_rows(p),
        generated=datetime.fromtimestamp(generated_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        svg=render_plot(p), slo=slo, weak=[s for s in p.sources if s.strength is not Strength.STRONG],
        percentiles=[[k, f"{v / 60:.2f} min"] for k, v in p.downtime_percentiles_s.items()],
    )


def write_projection(p: Projection, reports_dir: str | Path, *, generated_at: float, slo: dict[str, str]
                     ) -> Path:
    """Write ``<reports_dir>/<UTC>-slo-<cluster>/`` (JSON last, so a listed one is complete) and return it."""
    from orchestrator.drills.report import new_run_dir

    stamp = datetime.fromtimestamp(generated_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = new_run_dir(Path(reports_dir) / f"{stamp}-slo-{p.cluster}")
    (run_dir / PROJECTION_HTML).write_text(render_html(p, generated_at=generated_at, slo=slo))
    tmp = run_dir / (PROJECTION_JSON + ".tmp")
    tmp.write_text(p.model_dump_json(indent=2) + "\n")
    os.replace(tmp, run_dir / PROJECTION_JSON)
    return run_dir


def list_projections(reports_dir: str | Path) -> list[Path]:
    """Stored projection directories, newest first."""
    root = Path(reports_dir)
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if (d / PROJECTION_JSON).is_file()), key=lambda d: d.name, reverse=True)
