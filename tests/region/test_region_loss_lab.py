"""The region-loss drill on a lab of its own (ports DRCTL_TEST_PORT_BASE+1600): all of east is killed
under load; ZooKeeper keeps its majority in dc3 and the witness, the west controller leads and, on the
operator's command the drill issues (dr_failover manual), promotes dc3-a. Loss is allowed by policy,
but it is measured exactly and recorded with the DR lag at the loss."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.coordination import Coordinator
from orchestrator.drills.runner import DrillRunner
from orchestrator.lab import Lab
from orchestrator.topology import Topology, with_port_base
from tests.conftest import TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def region_lab(shipped_topology: Topology) -> Iterator[Lab]:
    lab = Lab(with_port_base(shipped_topology, TEST_PORT_BASE + 1600), make_lab_dir("drctl-region-"))
    try:
        lab.up(timeout=240)   # the machine is shared: start-up under heavy load takes minutes
        yield lab
    finally:
        lab.down()


def test_losing_east_promotes_dc3_and_reports_the_loss_against_the_region_targets(region_lab: Lab,
                                                                                  tmp_path: Path) -> None:
    lab = region_lab
    report, path = DrillRunner(lab, REPO / "drills", tmp_path).run("region-loss")
    m = report.measurement
    assert [(p.kind, p.source, p.target) for p in m.promotions] == [("failover", "dc1-a", "dc3-a")], m.promotions
    promotion = m.promotions[0]
    assert not promotion.proven and promotion.accept_data_loss and promotion.lost_region == "east"
    assert promotion.data_loss_window_s is not None, "the DR lag at loss is recorded"
    assert "DR lag at loss" in promotion.words()
    # Judged against the region targets, not the cluster's RPO 0.
    assert (report.targets.rto_seconds, report.targets.rpo_seconds) == (10, 5)
    assert not m.outage.unrecovered
    assert m.invariants.expected_total == m.invariants.observed_total
    assert m.invariants.duplicate_transfers == 0 and not m.invariants.writer_conflicts
    assert report.verdict.passed, report.verdict.failures
    assert (path / "report.json").is_file()
    coord = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="test")
    coord.start()
    try:
        state, _ = coord.read_state("payments")
    finally:
        coord.stop()
    assert state is not None
    # The rollback switched the primary back to dc1-a (the drill repeats); the failover stays recorded.
    assert state.primary == "dc1-a"
    done = next(op for op in state.history if op.id == promotion.operation)
    assert (done.target, done.lost_region, done.data_loss_window_s) == ("dc3-a", "east", promotion.data_loss_window_s)
