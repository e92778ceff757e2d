"""A short seeded soak on the session lab: three rounds under continuous load, every invariant held."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.drills.soak import kinds_of, plan
from orchestrator.drills.soak_report import SOAK_HTML, SOAK_JSON, write_soak
from orchestrator.drills.soak_runner import SoakRunner
from orchestrator.drills.spec import StallLeaderController, StallPrimary, Switchover
from orchestrator.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def test_a_short_seeded_soak_keeps_every_invariant(lab: Lab, tmp_path: Path) -> None:
    cluster = lab.topology.cluster("payments")
    kinds = kinds_of("stall-primary,stall-leader-controller,planned-switchover")
    rounds = plan(lab.topology, cluster, rounds=3, seed=4, kinds=kinds)
    # Seed 4: a switchover, a primary stall within the tolerance, a controller stall past its session.
    assert [type(r.fault) for r in rounds] == [Switchover, StallPrimary, StallLeaderController]
    s = SoakRunner(lab, REPO / "drills").run(rounds, cluster, seed=4, kinds=kinds, users=4, user_rate=20,
                                             journals_dir=tmp_path / "journals")
    assert len(s.rounds) == 3 and s.aborted is None, s.lines()
    assert all(r.ok for r in s.rounds), s.lines()
    assert s.lost == 0 and s.writer_conflicts == 0 and s.false_failovers == 0 and s.duplicates == 0
    assert s.passed and s.acked > 0
    switchover, stall, controller = s.rounds
    assert [p.split(" ")[0] for p in switchover.promotions] == ["switchover"]
    assert stall.promotions == () and controller.promotions == ()
    assert stall.healed_at is not None and stall.healed_at > stall.at
    assert all(r.redundancy_s is not None for r in s.rounds)
    out = write_soak(s, tmp_path)
    data = json.loads((out / SOAK_JSON).read_text())
    assert [r["kind"] for r in data["rounds"]] == ["planned-switchover", "stall-primary", "stall-leader-controller"]
    html = (out / SOAK_HTML).read_text()
    assert "stall-leader-controller" in html and "data:image/png;base64," in html
