"""Stalls on the session lab: a frozen server is a silent one to its peers (its kernel still
answers TCP), and detection must neither hang on it nor fail over for a stall it can ride out."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator import postgres as pg
from orchestrator.decisions.detection import stall_tolerance_s
from orchestrator.drills.runner import DrillRunner
from orchestrator.drills.spec import StallLeaderController, StallPrimary
from orchestrator.drills.verdict import CheckName
from orchestrator.lab import Lab
from orchestrator.pgserver import member_endpoint
from orchestrator.state import Health
from tests.controller.test_failover import coordinator, primary_of, wait_for
from tests.controller.test_stale_leader import ACTIONS, events_since

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def _primary(lab: Lab) -> str:
    found = primary_of(lab)
    assert found is not None
    return found


def test_a_probe_of_a_stalled_server_fails_at_its_deadline_instead_of_hanging(lab: Lab) -> None:
    cluster = lab.topology.cluster("payments")
    member = cluster.members[-1]
    endpoint = member_endpoint(lab.topology, cluster, member)
    prober = pg.Prober(lab.credentials, timeout=0.5)
    try:
        assert prober.probe(endpoint).health is Health.HEALTHY
        conn = prober.connection(endpoint)
        assert conn is not None
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(str(row[0]))
        os.kill(backend, signal.SIGSTOP)   # the probe's own backend: the rest of the lab runs on
        try:
            status = prober.probe(endpoint)
        finally:
            os.kill(backend, signal.SIGCONT)
        assert status.health is Health.UNREACHABLE and not status.refused, status
        assert "no answer within the 0.5 s probe timeout" in (status.error or "")
        # The cut connection was dropped: the next probe logs in again and answers.
        assert prober.probe(endpoint).health is Health.HEALTHY
    finally:
        prober.close()


def test_a_stall_of_the_primary_within_the_tolerance_causes_no_failover(lab: Lab, tmp_path: Path) -> None:
    runner = DrillRunner(lab, REPO / "drills", tmp_path)
    spec = runner.load("stall-primary-short")
    assert isinstance(spec.fault, StallPrimary) and spec.fault.duration_s < stall_tolerance_s(lab.topology)
    before = _primary(lab)
    report, _ = runner.run("stall-primary-short")
    m = report.measurement
    assert m.promotions == (), m.promotions
    assert _primary(lab) == before
    assert m.loss.lost == 0 and not m.invariants.writer_conflicts and m.invariants.money_conserved
    assert not m.outage.unrecovered
    # Nothing is acknowledged while the instance is frozen: writes come back when it is resumed.
    assert m.outage.rto_seconds >= spec.fault.duration_s, m.outage
    check = next(c for c in report.verdict.checks if c.name is CheckName.NO_FALSE_FAILOVER)
    assert check.passed, check
    assert report.verdict.passed, report.verdict.failures
    healed = report.settings["fault_healed_at"]
    assert isinstance(healed, float) and healed - m.fault_at >= spec.fault.duration_s
    # Every process of the instance runs again (none left stopped).
    cluster = lab.topology.cluster("payments")
    pid = lab.layout(cluster, cluster.member(before)).postmaster_pid()
    assert pid is not None and all(p.status() != psutil.STATUS_STOPPED
                                   for p in [psutil.Process(pid), *psutil.Process(pid).children()])


def test_a_leader_controller_stalled_past_its_session_is_replaced_and_changes_nothing_on_waking(
        lab: Lab, tmp_path: Path) -> None:
    coord = coordinator(lab.topology)
    try:
        wait_for(lambda: coord.leader_identity() is not None, 20, "a leader")
        leader, lease = coord.leader_identity(), coord.current_lease()
        assert leader is not None and lease is not None
        log = lab.root / "controller" / f"{leader.split(':')[0]}.log"
        runner = DrillRunner(lab, REPO / "drills", tmp_path)
        spec = runner.load("stall-leader-controller")
        assert isinstance(spec.fault, StallLeaderController)
        assert spec.fault.duration_s > lab.topology.zookeeper.session_timeout_ms / 1000
        report, _ = runner.run("stall-leader-controller")
        woke = float(report.settings["fault_healed_at"])   # type: ignore[arg-type]

        def term_ended() -> list[dict[str, Any]]:
            events = [e for e in events_since(log, 0, leader) if e["ts"] >= report.measurement.fault_at]
            ends = [i for i, e in enumerate(events) if e["event"] == "term-ended" and e.get("epoch") == lease.epoch]
            return events[:ends[0] + 1] if ends else []

        wait_for(term_ended, 30, f"the woken controller {leader} to end its term of epoch {lease.epoch}")
        acted = [e for e in term_ended() if e["event"] in ACTIONS]
        assert not acted, f"the stalled leader acted after waking at {woke}: {acted}"
        current = coord.current_lease()
        assert current is not None and current.epoch > lease.epoch   # leadership changed hands
        m = report.measurement
        assert m.promotions == () and m.loss.lost == 0 and not m.invariants.writer_conflicts
        assert report.verdict.passed, report.verdict.failures
    finally:
        coord.stop()
