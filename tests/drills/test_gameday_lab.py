"""Capacity ramp and a short game day on the session lab (one lab for both, to keep the suite short)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.drills.capacity import run_capacity
from orchestrator.drills.gameday_report import GAMEDAY_HTML, GAMEDAY_JSON, write_gameday
from orchestrator.drills.gameday_runner import GameDayRunner
from orchestrator.drills.live import LiveView
from orchestrator.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def test_capacity_ramp_stops_at_a_latency_objective_set_deliberately_low(lab: Lab) -> None:
    cluster = lab.topology.cluster("payments")
    result = run_capacity(lab.app_connection_string(cluster), "payments", step_users=2, max_users=6, step_seconds=5,
                          p99_objective_ms=0.2, max_error_percent=1, settle_s=1)
    # No loopback commit replicated synchronously takes under 0.2 ms: the first step breaks and the ramp stops.
    assert len(result.steps) == 1, result.lines()
    (step,) = result.steps
    assert step.acks > 0 and step.broke is not None and "over the 0.2 ms objective" in step.broke
    assert set(step.latency_ms) == {"p50", "p95", "p99", "p99.9"}
    assert step.latency_ms["p50"] <= step.latency_ms["p99"] <= step.latency_ms["p99.9"]
    assert result.sustainable_throughput is None and result.stopped_by.startswith("2 users")


def test_short_game_day_keeps_every_invariant(lab: Lab, tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=120, record=True)
    view = LiveView(console, duration_s=120, availability_percent=99.99)
    runner = GameDayRunner(lab, REPO / "drills", progress=view.progress, watcher=view)
    with view:
        g = runner.run(["primary-crash", "planned-switchover"], duration_s=120, seed=7, users=5, user_rate=20,
                       recovery_s=30)
    # The live panel followed the real journals and the runner's faults (it also saw the attempts the
    # window does not count: those cut off when the load was stopped).
    assert view.counts.acks >= g.acks > 0
    panel = console.export_text()
    assert "2: +" in panel and "planned-switchover" in panel, panel
    assert [f.drill for f in g.faults] == ["primary-crash", "planned-switchover"]
    assert all(not f.unrecovered and f.lost == 0 and f.recovered_by for f in g.faults), g.faults
    assert g.lost == 0 and g.expected_total == g.observed_total and g.duplicates == 0 and g.writer_conflicts == 0
    assert g.passed, g.lines()
    # availability: request-based is the journal's own count; time-based is the faults' outages over the window
    assert g.attempts == g.acks + g.failed + g.indeterminate and g.acks > 0
    assert g.request_availability == pytest.approx(100 * g.acks / g.attempts, abs=1e-12)
    window = g.window_end - g.window_start
    assert g.time_availability == pytest.approx(100 * (1 - sum(f.rto_seconds for f in g.faults) / window), abs=1e-6)
    path = write_gameday(g, tmp_path)
    assert (path / GAMEDAY_JSON).is_file()
    html = (path / GAMEDAY_HTML).read_text()
    assert "primary-crash" in html and "planned-switchover" in html and "data:image/png;base64," in html
