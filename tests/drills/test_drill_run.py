"""Drills end to end on the real lab: under Locust load, with RPO 0 and conserved money."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.coordination import Coordinator
from orchestrator.drills.runner import DrillRunner
from orchestrator.drills.spec import Switchover
from orchestrator.errors import DrillFileError, DrillLocked
from orchestrator.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("drill", ["primary-crash", "planned-switchover", "region-switchover", "datacenter-outage"])
def test_drill_passes_with_zero_loss(lab: Lab, tmp_path: Path, drill: str) -> None:
    runner = DrillRunner(lab, REPO / "drills", tmp_path)
    fault = runner.load(drill).fault
    if isinstance(fault, Switchover):
        _move_primary_away_from(lab, fault.to)
    report, path = runner.run(drill)
    m = report.measurement
    assert m.loss.lost == 0, m.loss
    assert m.invariants.expected_total == m.invariants.observed_total
    assert m.invariants.duplicate_transfers == 0
    assert not m.invariants.writer_conflicts
    assert not m.outage.unrecovered
    assert report.verdict.passed, report.verdict.failures
    # Zero loss is not only measured but proven: the controller recorded each promotion as proven.
    promotions = report.measurement.promotions
    assert promotions and all(p.proven and not p.accept_data_loss for p in promotions), promotions
    if drill == "datacenter-outage":
        lost = {m.name for m in lab.topology.cluster("payments").members
                if m.datacenter == lab.topology.cluster("payments").member(promotions[0].source).datacenter}
        assert [p.kind for p in promotions] == ["failover"] and promotions[0].target not in lost, promotions
        assert "quorum standby(s)" in promotions[0].proof and "seen" in promotions[0].proof
    assert (path / "report.json").is_file() and (path / "report.html").is_file()
    assert (path / "timeline.png").read_bytes().startswith(b"\x89PNG")


def _move_primary_away_from(lab: Lab, member: str) -> None:
    """Set-up: earlier tests may have left ``member`` primary; a switchover to it could not run."""
    coord = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="test-setup")
    coord.start()
    try:
        state, _ = coord.read_state("payments")
        assert state is not None
        if state.primary != member:
            return
        cluster = lab.topology.cluster("payments")
        other = next(m for m in lab.topology.synchronous_members(cluster) if m != member)
        result = coord.wait_result("payments", coord.submit_request("payments", {"kind": "switchover", "to": other}),
                                   timeout=60)
        assert result is not None and result.get("ok"), result
    finally:
        coord.stop()


def test_drill_naming_a_missing_node_is_rejected_before_anything_runs(lab: Lab, tmp_path: Path) -> None:
    drills = tmp_path / "drills"
    drills.mkdir()
    data = yaml.safe_load((REPO / "drills" / "planned-switchover.yaml").read_text())
    data["name"] = "typo"
    data["fault"]["to"] = "dc2-aa"
    (drills / "typo.yaml").write_text(yaml.safe_dump(data))
    reports = tmp_path / "reports"
    with pytest.raises(DrillFileError, match=r"fault\.to: unknown member 'dc2-aa'"):
        DrillRunner(lab, drills, reports).run("typo")
    assert not reports.exists()


def test_switchover_to_the_current_primary_is_refused_before_the_load_starts(lab: Lab, tmp_path: Path) -> None:
    coord = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="test")
    coord.start()
    try:
        state, _ = coord.read_state("payments")
    finally:
        coord.stop()
    assert state is not None
    drills = tmp_path / "drills"
    drills.mkdir()
    data = yaml.safe_load((REPO / "drills" / "planned-switchover.yaml").read_text())
    data.update(name="to-primary", fault={"kind": "switchover", "to": state.primary})
    (drills / "to-primary.yaml").write_text(yaml.safe_dump(data))
    reports = tmp_path / "reports"
    runner = DrillRunner(lab, drills, reports)
    started = runner.load("to-primary")  # valid against the topology: any member may be primary by then
    assert started.name == "to-primary"
    with pytest.raises(DrillFileError, match=rf"fault\.to: {state.primary} is already the primary"):
        runner.run("to-primary")
    assert not reports.exists()


def test_a_second_concurrent_drill_is_refused(lab: Lab, tmp_path: Path) -> None:
    holder = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="other-drill")
    holder.start()
    try:
        holder.acquire_drill_lock("primary-crash started by another operator")
        with pytest.raises(DrillLocked, match="another drill is running"):
            DrillRunner(lab, REPO / "drills", tmp_path / "reports").run("primary-crash")
    finally:
        holder.release_drill_lock()
        holder.stop()
    assert not (tmp_path / "reports").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
