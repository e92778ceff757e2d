"""Drill reports written to a temporary directory from a synthetic measurement, and read back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.drills.measure import Promotion, TimelineEvent, measure
from orchestrator.drills.report import (
    REPORT_HTML,
    REPORT_JSON,
    TIMELINE_PNG,
    DrillReport,
    find_run,
    list_reports,
    load_report,
    summarize,
    write_report,
)
from orchestrator.drills.spec import load_drill
from orchestrator.drills.verdict import judge
from orchestrator.errors import InvalidInput
from orchestrator.topology import Topology

REPO = Path(__file__).resolve().parents[2]
START = 1_750_000_000.0          # 2025-06-15T15:06:40Z
FAULT = START + 4.0
A, B = "127.0.0.1:25410", "127.0.0.1:25411"


def _journal() -> list[JournalRecord]:
    records = []
    for i in range(int(12 / 0.02)):
        start = START + i * 0.02
        if FAULT - 0.01 < start < FAULT + 2.5:
            outcome, server, timeline = Outcome.FAIL, None, None
        elif start < FAULT:
            outcome, server, timeline = Outcome.ACK, A, 1
        else:
            outcome, server, timeline = Outcome.ACK, B, 2
        latency = 0.004 + (0.05 if i % 50 == 0 else 0.0)
        records.append(JournalRecord(
            id=f"t{i}", src=1, dst=2, amount=3, start=start, end=start + latency, outcome=outcome,
            server=server, timeline=timeline, error=None if outcome is Outcome.ACK else "connection refused",
        ))
    return records


PROVEN = Promotion(operation="op1", kind="failover", source="dc1-a", target="dc2-a", proven=True,
                   proof="1 of the 1 quorum standby(s) of dc1-a (dc2-a) seen", accept_data_loss=False,
                   wal_at_risk_bytes=None)
UNPROVEN = PROVEN.model_copy(update={"proven": False, "proof": "only 0 of the 1 quorum standby(s) seen",
                                     "wal_at_risk_bytes": 8192})


def make_report(topology: Topology, *, lose: bool = False, started_at: float = START,
                promotion: Promotion | None = PROVEN) -> DrillReport:
    spec = load_drill(REPO / "drills" / "primary-crash.yaml", topology)
    targets = spec.effective_targets(topology.cluster(spec.cluster))
    journal = _journal()
    present = {r.id for r in journal if r.outcome is Outcome.ACK}
    if lose:
        present.discard("t10")
    events = [
        TimelineEvent(at=FAULT + 0.25, name="detected", detail="dc1-a unreachable twice"),
        TimelineEvent(at=FAULT + 0.40, name="fenced", detail="dc1-a"),
        TimelineEvent(at=FAULT + 1.10, name="promoted", detail="dc1-b <script>"),
        TimelineEvent(at=FAULT + 1.30, name="repointed"),
        TimelineEvent(at=FAULT + 1.50, name="done"),
    ]
    m = measure(
        journal, fault_at=FAULT, window_end=FAULT + spec.observe_s, present_ids=present,
        expected_total=10_000, observed_total=10_000, targets=targets, events=events, expect_new_primary=True,
        operations=() if promotion is None else (promotion,),
    )
    return DrillReport(
        drill=spec.name, description=spec.description, cluster=spec.cluster, fault=spec.fault.kind,
        started_at=started_at, finished_at=started_at + 20, targets=targets,
        settings=spec.model_dump(mode="json"), versions={"postgresql": "15.8", "dr-orchestrator": "0.1.0"},
        load_stats={"requests": 600, "failures": 125, "p99_ms": 9.0},
        measurement=m, verdict=judge(m, targets),
    )


def test_report_directory_holds_json_png_and_html(shipped_topology: Topology, tmp_path: Path) -> None:
    report = make_report(shipped_topology)
    assert report.verdict.passed, report.verdict.failures
    run_dir = write_report(report, tmp_path / "reports")
    assert run_dir.name == "20250615T150640Z-primary-crash"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([REPORT_JSON, REPORT_HTML, TIMELINE_PNG])

    assert load_report(run_dir) == report
    assert load_report(run_dir / REPORT_JSON) == report
    data = json.loads((run_dir / REPORT_JSON).read_text())
    assert data["measurement"]["outage"]["rto_seconds"] == pytest.approx(2.504, abs=0.01)
    assert data["verdict"]["passed"] is True
    assert data["versions"]["postgresql"] == "15.8"

    png = (run_dir / TIMELINE_PNG).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000

    page = (run_dir / REPORT_HTML).read_text()
    assert "PASSED. When the primary&#39;s PostgreSQL server was killed (kill -9), client writes resumed" in page
    for phase in ("fault → detected", "detected → fenced", "fenced → promoted", "promoted → first-write"):
        assert phase in page
    assert "52.56 min" in page and "such incident(s) a year" in page
    assert 'src="data:image/png;base64,' in page and f'href="{TIMELINE_PNG}"' in page
    assert "<script>" not in page   # event details are escaped
    assert "zero loss proven: failover dc1-a → dc2-a</td><td>yes (1 of the 1 quorum standby(s)" in page
    assert "failover dc1-a -&gt; dc2-a: zero loss proven: yes (1 of the 1 quorum" in page


def test_failed_report_says_why_in_words(shipped_topology: Topology, tmp_path: Path) -> None:
    report = make_report(shipped_topology, lose=True)
    assert not report.verdict.passed
    page = (write_report(report, tmp_path) / REPORT_HTML).read_text()
    assert "FAILED. When the primary" in page
    assert "1 of 9 checks failed" in page
    assert "acknowledged transfers are missing from the new primary (first t10)" in page


def test_summary_lines(shipped_topology: Topology) -> None:
    lines = summarize(make_report(shipped_topology))
    assert lines[0] == "primary-crash on payments: PASSED (9/9 checks)"
    assert re.match(r"RTO 2\.5\d s \(target 5 s\)", lines[1])
    assert lines[2].startswith("phases since the fault: detected +0.25 s, fenced +0.40 s, promoted +1.10 s")
    assert any(line.startswith("RPO 0 of ") for line in lines)
    assert not any(line.startswith("failed") for line in lines)
    failed = summarize(make_report(shipped_topology, lose=True))
    assert failed[0].endswith("FAILED (8/9 checks)")
    assert failed[-1].startswith("failed no-acknowledged-write-lost: 1 of")
    assert "failover dc1-a -> dc2-a: zero loss proven: yes (1 of the 1 quorum standby(s) of dc1-a (dc2-a) seen)" \
        in lines


def test_an_unproven_promotion_fails_an_rpo_zero_drill_that_lost_nothing_and_says_what_was_at_risk(
        shipped_topology: Topology, tmp_path: Path) -> None:
    report = make_report(shipped_topology, promotion=UNPROVEN)
    assert [c.name.value for c in report.verdict.failures] == ["zero-loss-proven"]
    assert report.measurement.loss.lost == 0
    words = ("failover dc1-a -> dc2-a: zero loss proven: no (only 0 of the 1 quorum standby(s) seen); "
             "WAL at risk: 8192 bytes")
    assert words in summarize(report)
    assert summarize(report)[-1].startswith("failed zero-loss-proven: " + words)
    page = (write_report(report, tmp_path) / REPORT_HTML).read_text()
    assert "<td>WAL at risk: failover dc1-a → dc2-a</td><td>8,192 bytes</td>" in page
    assert "NO (only 0 of the 1 quorum standby(s) seen)" in page
    accepted = make_report(shipped_topology, promotion=UNPROVEN.model_copy(update={"accept_data_loss": True}))
    assert accepted.verdict.passed
    assert "data loss accepted by the operator" in " ".join(summarize(accepted))
    nothing = make_report(shipped_topology, promotion=None)
    assert nothing.verdict.passed and "the drill caused no promotion" in " ".join(summarize(nothing))


def test_a_report_written_before_promotions_were_recorded_reads_back_with_none(
        shipped_topology: Topology, tmp_path: Path) -> None:
    run_dir = write_report(make_report(shipped_topology), tmp_path)
    data = json.loads((run_dir / REPORT_JSON).read_text())
    del data["measurement"]["promotions"]
    (run_dir / REPORT_JSON).write_text(json.dumps(data))
    assert load_report(run_dir).measurement.promotions == ()


def test_history_lists_runs_newest_first_and_finds_them(shipped_topology: Topology, tmp_path: Path) -> None:
    old = write_report(make_report(shipped_topology), tmp_path)
    new = write_report(make_report(shipped_topology, started_at=START + 3600), tmp_path)
    same_second = write_report(make_report(shipped_topology, started_at=START + 3600), tmp_path)
    assert same_second.name == new.name + "-2"
    broken = tmp_path / "20240101T000000Z-primary-crash"
    broken.mkdir()
    (broken / REPORT_JSON).write_text("{not json")
    (tmp_path / "incomplete").mkdir()   # no report.json yet: not listed

    entries = list_reports(tmp_path)
    assert [e.path for e in entries[:3]] == [same_second, new, old]
    assert entries[-1].report is None and entries[-1].error is not None and "not a drill report" in entries[-1].error

    assert find_run(tmp_path, old.name) == old
    assert find_run(tmp_path, "20250615T15") == old
    assert find_run(tmp_path, "latest") == same_second
    assert find_run(tmp_path, "primary-crash") == same_second
    with pytest.raises(InvalidInput, match="ambiguous"):
        find_run(tmp_path, "2025")
    with pytest.raises(InvalidInput, match="no drill run 'nope'"):
        find_run(tmp_path, "nope")
    assert list_reports(tmp_path / "missing") == []


def test_load_report_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read the report"):
        load_report(tmp_path / "missing")
    (tmp_path / REPORT_JSON).write_text('{"drill": "x"}')
    with pytest.raises(InvalidInput, match="not a drill report"):
        load_report(tmp_path)


def test_the_page_template_ships_with_the_package(tmp_path: Path) -> None:
    """pyproject's package-data puts the template into a build (not only into this checkout)."""
    subprocess.run(
        # A fresh egg-info: a stale SOURCES.txt in the checkout would list the template anyway.
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "egg_info", "--egg-base",
         str(tmp_path), "build_py", "--build-lib", str(tmp_path / "lib")], cwd=REPO, check=True, capture_output=True,
    )
    built = tmp_path / "lib" / "orchestrator" / "drills" / "templates" / "report.html.j2"
    assert built.read_text() == (REPO / "orchestrator" / "drills" / "templates" / "report.html.j2").read_text()
