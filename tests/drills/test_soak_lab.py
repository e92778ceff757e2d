"""A short seeded soak on the session lab: three rounds under continuous load, every invariant held."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.decisions.detection import stall_tolerance_s
from orchestrator.drills.soak import kinds_of, plan
from orchestrator.drills.soak_report import SOAK_HTML, SOAK_JSON, write_soak
from orchestrator.drills.soak_runner import SoakRunner
from orchestrator.drills.spec import ControllerLeaderCrash, StallLeaderController, StallPrimary
from orchestrator.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def test_a_short_seeded_soak_keeps_every_invariant(lab: Lab, tmp_path: Path) -> None:
    cluster = lab.topology.cluster("payments")
    kinds = kinds_of("stall-primary,controller-leader-crash,stall-leader-controller")
    rounds = plan(lab.topology, cluster, rounds=3, seed=16, kinds=kinds)
    # Seed 16: a primary stall within the tolerance, a controller crash, a controller stall past its
    # session; none moves the primary (a move costs ~20 s of rejoin before full redundancy).
    assert [type(r.fault) for r in rounds] == [StallPrimary, ControllerLeaderCrash, StallLeaderController]
    stall_primary, _, stall_controller = (r.fault for r in rounds)
    assert isinstance(stall_primary, StallPrimary) and stall_primary.duration_s < stall_tolerance_s(lab.topology)
    assert isinstance(stall_controller, StallLeaderController)
    assert stall_controller.duration_s > lab.topology.zookeeper.session_timeout_ms / 1000
    s = SoakRunner(lab, REPO / "drills").run(rounds, cluster, seed=16, kinds=kinds, users=4, user_rate=20,
                                             journals_dir=tmp_path / "journals")
    assert len(s.rounds) == 3 and s.aborted is None, s.lines()
    assert all(r.ok for r in s.rounds), s.lines()
    assert s.lost == 0 and s.writer_conflicts == 0 and s.false_failovers == 0 and s.duplicates == 0
    assert s.passed and s.acked > 0
    stall, crash, controller = s.rounds
    assert stall.promotions == () and crash.promotions == () and controller.promotions == ()
    assert stall.healed_at is not None and stall.healed_at > stall.at and crash.healed_at is None
    assert all(r.redundancy_s is not None for r in s.rounds)
    out = write_soak(s, tmp_path)
    data = json.loads((out / SOAK_JSON).read_text())
    assert [r["kind"] for r in data["rounds"]] == ["stall-primary", "controller-leader-crash",
                                                   "stall-leader-controller"]
    html = (out / SOAK_HTML).read_text()
    assert "stall-leader-controller" in html and "data:image/png;base64," in html
