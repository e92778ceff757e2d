"""Drill reports: ``reports/<UTC timestamp>-<drill>/`` holding report.json, timeline.png, report.html.

The drill runner builds a :class:`DrillReport` (the validated drill file, versions, Locust's
stats, the :class:`~orchestrator.drills.measure.Measurement` and its
:class:`~orchestrator.drills.verdict.Verdict`) and calls :func:`write_report`;
``drctl drill run`` prints :func:`summarize`; ``drctl drill history`` and ``drctl drill show``
read runs back with :func:`list_reports`, :func:`find_run` and :func:`load_report`.
Rendering only: every figure comes from :mod:`orchestrator.drills.measure`. The plot uses
matplotlib's object API on the Agg canvas: no pyplot, no global backend state.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.drills.measure import Measurement, Milestone
from orchestrator.drills.verdict import Verdict
from orchestrator.errors import InvalidInput
from orchestrator.topology import Targets

REPORT_JSON = "report.json"
TIMELINE_PNG = "timeline.png"
REPORT_HTML = "report.html"

_FAULT_WORDS = {
    "kill-primary": "the primary's PostgreSQL server was killed (kill -9)",
    "datacenter-outage": "the primary's whole data centre went down",
    "controller-leader-crash": "the leading controller was killed (kill -9)",
    "zookeeper-server-loss": "a ZooKeeper server was killed (kill -9)",
    "switchover": "the primary role was handed over on purpose (planned switchover)",
    "partition-datacenter": "a data centre was silently cut off the network",
    "partition-primary-from-controllers": "the controllers were silently cut off the primary",
    "isolate-zookeeper-minority": "a ZooKeeper server was silently cut off its peers",
    "one-way-cut": "one direction of a link between data centres silently dropped everything",
    "flaky-link": "a link between data centres was cut and healed over and over",
}


class DrillReport(BaseModel):
    """Everything one drill run produced; ``report.json`` is its JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    drill: str
    description: str
    cluster: str
    fault: str                      # the fault kind, e.g. "kill-primary"
    started_at: float               # epoch seconds the load started; names the run directory
    finished_at: float
    targets: Targets                # the effective targets the verdict used
    settings: dict[str, Any]        # the validated drill file: DrillSpec.model_dump(mode="json")
    versions: dict[str, str]        # PostgreSQL, ZooKeeper, dr-orchestrator, ... as the runner found them
    load_stats: dict[str, Any] = Field(default_factory=dict)   # Locust's own stats
    measurement: Measurement
    verdict: Verdict


@dataclass(frozen=True)
class ReportEntry:
    """One run directory; ``report`` is None and ``error`` says why when it cannot be read."""

    run_id: str
    path: Path
    report: DrillReport | None
    error: str | None = None


def run_id(report: DrillReport) -> str:
    return f"{datetime.fromtimestamp(report.started_at, UTC):%Y%m%dT%H%M%SZ}-{report.drill}"


# ---- writing ------------------------------------------------------------------------------


def new_run_dir(base: Path) -> Path:
    """Create ``base`` (or ``base-2``, ``base-3``, ... if taken) and return it."""
    run_dir, n = base, 1
    while True:
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")


def write_report(report: DrillReport, reports_dir: str | Path) -> Path:
    """Write the run directory and return it; report.json goes last, so a listed run is complete.

    A second run with the same drill and second gets a ``-2`` suffix.
    """
    run_dir = new_run_dir(Path(reports_dir) / run_id(report))
    png = render_timeline(report)
    (run_dir / TIMELINE_PNG).write_bytes(png)
    (run_dir / REPORT_HTML).write_text(render_html(report, png))
    tmp = run_dir / (REPORT_JSON + ".tmp")
    tmp.write_text(report.model_dump_json(indent=2) + "\n")
    os.replace(tmp, run_dir / REPORT_JSON)
    return run_dir


def render_timeline(report: DrillReport) -> bytes:
    """The PNG: acks per 100 ms bucket and p99 latency against seconds since the fault, with marks."""
    m = report.measurement
    times = [p.t for p in m.series]
    fig = Figure(figsize=(10, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.step(times, [p.acks for p in m.series], where="post", color="tab:blue", linewidth=1)
    top.set_ylabel("acks per 100 ms")
    top.set_title(f"{report.drill} on {report.cluster}: {'PASSED' if report.verdict.passed else 'FAILED'}")
    # NaN breaks the line where no ack ended in the latency window, instead of bridging the outage.
    bottom.plot(times, [math.nan if p.p99_ms is None else p.p99_ms for p in m.series], color="tab:orange", linewidth=1)
    bottom.set_ylabel("p99 latency (ms, 1 s window)")
    bottom.set_xlabel("seconds since the fault")
    marks = [
        (Milestone.FAULT, "fault", "tab:red"),
        (Milestone.DETECTED, "detected", "tab:purple"),
        (Milestone.PROMOTED, "promoted", "tab:green"),
        (Milestone.FIRST_WRITE, "recovered (first write)", "black"),
    ]
    recovered = m.outage.window_end if m.outage.recovered_at is None else m.outage.recovered_at
    for ax in (top, bottom):
        ax.axvspan(0.0, recovered - m.fault_at, color="tab:red", alpha=0.08, linewidth=0)
    for milestone, label, colour in marks:
        at = m.phases.at(milestone)
        if at is None:
            continue
        for ax in (top, bottom):
            ax.axvline(at - m.fault_at, color=colour, linestyle="--", linewidth=1, label=label if ax is top else None)
    healed = report.settings.get("fault_healed_at")
    if isinstance(healed, int | float):   # a timed fault (a stall): its window, fault to heal
        for ax in (top, bottom):
            ax.axvspan(0.0, healed - m.fault_at, facecolor="none", edgecolor="tab:red", hatch="//", alpha=0.4,
                       linewidth=0, label="fault window" if ax is top else None)
    if top.get_legend_handles_labels()[0]:
        top.legend(loc="upper right", fontsize="small")
    for ax in (top, bottom):
        ax.set_xlim(m.window_start - m.fault_at, m.window_end - m.fault_at)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ---- words --------------------------------------------------------------------------------


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def proof_words(report: DrillReport) -> str:
    """``zero loss proven: yes (why)`` per promotion the drill caused, WAL at risk when unproven."""
    promotions = report.measurement.promotions
    if not promotions:
        return "zero loss proven: nothing to prove (the drill caused no promotion)"
    return "; ".join(p.words() for p in promotions)


def verdict_words(report: DrillReport) -> str:
    """The verdict as one paragraph an auditor can read without the figures."""
    m, t, v = report.measurement, report.targets, report.verdict
    fault = _FAULT_WORDS.get(report.fault, f"the fault {report.fault!r} was injected")
    if v.passed:
        return (
            f"PASSED. When {fault}, client writes resumed after {m.outage.rto_seconds:.2f} s "
            f"(target {t.rto_seconds:g} s); none of the {m.loss.acked:,} acknowledged transfers was lost "
            f"(RPO target {t.rpo_seconds:g} s); the total balance was conserved, no transfer was applied twice "
            "and at no time did two servers accept writes."
            + (f" Promotions: {proof_words(report)}." if m.promotions else "")
        )
    failed = v.failures
    return (
        f"FAILED. When {fault}, {len(failed)} of {len(v.checks)} checks failed: "
        + "; ".join(c.reason for c in failed) + "."
    )


def summarize(report: DrillReport) -> list[str]:
    """Plain lines for the CLI (which adds colour): verdict, RTO, phases, RPO, invariants, budget."""
    m, t, v = report.measurement, report.targets, report.verdict
    out, loss, inv = m.outage, m.loss, m.invariants
    passed = sum(1 for c in v.checks if c.passed)
    rto = (
        f"not recovered within {out.rto_seconds:.2f} s" if out.unrecovered else f"{out.rto_seconds:.2f} s"
    )
    phases = ", ".join(
        f"{mark.milestone} +{mark.since_fault:.2f} s" for mark in m.phases.marks
        if mark.since_fault is not None and mark.milestone is not Milestone.FAULT
    )
    avail = "no attempts" if m.availability.percent is None else f"{m.availability.percent:.2f}%"
    lines = [
        f"{report.drill} on {report.cluster}: {'PASSED' if v.passed else 'FAILED'} ({passed}/{len(v.checks)} checks)",
        f"RTO {rto} (target {t.rto_seconds:g} s); longest gap between acknowledged writes "
        f"{out.longest_gap_seconds:.2f} s",
        f"phases since the fault: {phases or 'no controller events'}",
        f"RPO {loss.lost} of {loss.acked:,} acknowledged transfers lost, spanning {loss.rpo_seconds:.2f} s "
        f"(target {t.rpo_seconds:g} s); indeterminate {loss.indeterminate}: "
        f"{loss.indeterminate_committed} committed, {loss.indeterminate_not_committed} not",
        proof_words(report),
        f"invariants: balance {'conserved' if inv.money_conserved else 'NOT conserved'}, "
        f"{inv.duplicate_transfers} duplicate(s), {len(inv.writer_conflicts)} writer conflict(s)",
        f"availability {avail} of {m.availability.attempted:,} attempts",
        m.budget.sentence(),
    ]
    lines += [f"failed {c.name}: {c.reason}" for c in v.failures]
    return lines


# ---- HTML ---------------------------------------------------------------------------------

# The page's layout lives in templates/report.html.j2 (package data); this side computes the
# rows as text. Autoescape is on for every template, whatever its file name.
_TEMPLATES = Environment(
    loader=PackageLoader("orchestrator.drills", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def render_html(report: DrillReport, png: bytes) -> str:
    """A self-contained page: the PNG is embedded, and also linked as timeline.png beside it."""
    m, t = report.measurement, report.targets
    out, loss, inv, av = m.outage, m.loss, m.invariants, m.availability
    figures = [
        ["client-observed write outage (RTO)",
         ("not recovered: " if out.unrecovered else "") + _secs(out.rto_seconds), f"{t.rto_seconds:g} s"],
        ["longest gap between acknowledged writes", _secs(out.longest_gap_seconds), ""],
        ["writer before the fault / after recovery", f"{out.pre_fault_writer} / {out.recovered_by}", ""],
        ["acknowledged transfers lost (RPO)", f"{loss.lost} of {loss.acked:,}, spanning {_secs(loss.rpo_seconds)}",
         f"{t.rpo_seconds:g} s"],
        ["indeterminate transfers (committed / not)",
         f"{loss.indeterminate} ({loss.indeterminate_committed} / {loss.indeterminate_not_committed})", ""],
        ["total balance (observed / expected)", f"{inv.observed_total:,} / {inv.expected_total:,}", "equal"],
        ["transfers applied twice", str(inv.duplicate_transfers), "0"],
        ["times two servers accepted writes", str(len(inv.writer_conflicts)), "0"],
        ["availability over the window",
         "—" if av.percent is None else f"{av.percent:.2f}% of {av.attempted:,} attempts", ""],
    ]
    for p in m.promotions:
        risk = "—" if p.proven else ("unknown" if p.wal_at_risk_bytes is None else f"{p.wal_at_risk_bytes:,} bytes")
        figures += [
            [f"zero loss proven: {p.kind} {p.source} → {p.target}",
             f"{'yes' if p.proven else 'NO'} ({p.proof or 'no reason recorded'})"
             + (", data loss accepted by the operator" if p.accept_data_loss and not p.proven else ""),
             "yes" if t.rpo_seconds == 0 else ""],
            [f"WAL at risk: {p.kind} {p.source} → {p.target}", risk, "—" if t.rpo_seconds == 0 else ""],
        ]
    if not m.promotions:
        figures.append(["zero loss proven", "nothing to prove: the drill caused no promotion", ""])
    return _TEMPLATES.get_template("report.html.j2").render(
        report=report,
        verdict=report.verdict,
        started=datetime.fromtimestamp(report.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        verdict_words=verdict_words(report),
        proof=proof_words(report),
        proven=all(p.proven for p in m.promotions),
        figures=figures,
        budget=m.budget.sentence(),
        steps=[[s.label, _secs(s.seconds)] for s in m.phases.steps],
        marks=[[mk.milestone, _secs(mk.since_fault)] for mk in m.phases.marks],
        events=[[f"{ev.at - m.fault_at:+.3f}", ev.name, ev.detail] for ev in m.events],
        png_name=TIMELINE_PNG,
        png_base64=base64.b64encode(png).decode("ascii"),
        settings=json.dumps({"settings": report.settings, "versions": report.versions}, indent=2, sort_keys=True),
    )


# ---- reading back -------------------------------------------------------------------------


def load_report(path: str | Path) -> DrillReport:
    """Read a run directory (or its report.json).

    :raises InvalidInput: missing, not JSON, or not a report of this schema.
    """
    path = Path(path)
    file = path / REPORT_JSON if path.is_dir() else path
    try:
        return DrillReport.model_validate_json(file.read_bytes())  # bytes: binary is a ValidationError
    except OSError as exc:
        raise InvalidInput(f"{file}: cannot read the report ({exc.strerror}); check the run id") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = f"{loc}: " if loc else ""
        raise InvalidInput(f"{file}: not a drill report ({where}{first['msg']}); was it written by drctl?") from None


def list_reports(reports_dir: str | Path) -> list[ReportEntry]:
    """Every run directory holding a report.json, newest first; unreadable ones carry their error."""
    root = Path(reports_dir)
    if not root.is_dir():
        return []
    entries = []
    for run_dir in root.iterdir():
        if not (run_dir / REPORT_JSON).is_file():
            continue
        try:
            entries.append(ReportEntry(run_dir.name, run_dir, load_report(run_dir)))
        except InvalidInput as exc:
            entries.append(ReportEntry(run_dir.name, run_dir, None, str(exc)))
    return sorted(entries, key=lambda en: (en.report.started_at if en.report else 0.0, en.run_id), reverse=True)


def find_run(reports_dir: str | Path, run: str) -> Path:
    """A run directory by exact id, unique prefix, drill name (its latest run) or ``latest``.

    :raises InvalidInput: no run matches, or a prefix matches several.
    """
    entries = list_reports(reports_dir)
    if run == "latest" and entries:
        return entries[0].path
    exact = [en for en in entries if en.run_id == run]
    matches = exact or [en for en in entries if en.run_id.startswith(run)] or [
        en for en in entries if en.report is not None and en.report.drill == run
    ][:1]
    if len(matches) == 1:
        return matches[0].path
    if not matches:
        raise InvalidInput(f"no drill run {run!r} in {reports_dir}; list runs with 'drctl drill history'")
    names = ", ".join(en.run_id for en in matches[:5])
    raise InvalidInput(f"drill run {run!r} is ambiguous ({names}, ...); give more of the run id")
