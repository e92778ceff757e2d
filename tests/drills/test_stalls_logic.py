"""Stall drills without a lab: their files, their checks, and the false-failover judgement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.decisions.detection import stall_tolerance_s
from orchestrator.drills.measure import Promotion
from orchestrator.drills.spec import FaultKind, StallLeaderController, StallPrimary, load_drill, parse_drill
from orchestrator.drills.stalls import false_failover_check, false_failovers, stall_tolerance
from orchestrator.errors import DrillFileError
from orchestrator.topology import Topology

DRILLS = Path(__file__).resolve().parents[2] / "drills"
STALLS = {"stall-primary-short": FaultKind.STALL_PRIMARY, "stall-primary-long": FaultKind.STALL_PRIMARY,
          "stall-leader-controller": FaultKind.STALL_LEADER_CONTROLLER, "stall-zookeeper": FaultKind.STALL_ZOOKEEPER}


def _op(kind: str = "failover") -> Promotion:
    return Promotion(operation="op1", kind=kind, source="dc1-a", target="dc2-a", proven=True, proof="seen",
                     accept_data_loss=False, wal_at_risk_bytes=0)


@pytest.mark.parametrize("name", sorted(STALLS))
def test_shipped_stall_drills_validate(name: str, shipped_topology: Topology) -> None:
    spec = load_drill(DRILLS / f"{name}.yaml", shipped_topology)
    assert spec.fault.kind is STALLS[name]
    assert spec.fault_at_s + spec.observe_s <= spec.load.duration_s


def test_the_short_stall_is_within_the_tolerance_and_the_long_one_past_it(shipped_topology: Topology) -> None:
    tolerance = stall_tolerance_s(shipped_topology)
    short = load_drill(DRILLS / "stall-primary-short.yaml", shipped_topology).fault
    long = load_drill(DRILLS / "stall-primary-long.yaml", shipped_topology).fault
    assert isinstance(short, StallPrimary) and isinstance(long, StallPrimary)
    assert short.duration_s < tolerance < long.duration_s
    assert tolerance >= 1.5   # the target: a 1.5 s stall must never fail over


def _raw(**fault: Any) -> dict[str, Any]:
    data = yaml.safe_load((DRILLS / "stall-primary-short.yaml").read_text())
    data["fault"] = fault
    return dict(data)


@pytest.mark.parametrize(("fault", "message"), [
    ({"kind": "stall-primary"}, r"fault\.duration_s: required field is missing"),
    ({"kind": "stall-primary", "duration_s": 0}, r"fault\.duration_s: Input should be greater than 0"),
    ({"kind": "stall-primary", "duration_s": 9}, r"fault\.duration_s: a 9 s stall outlasts the 8 s observation"),
    ({"kind": "stall-zookeeper", "duration_s": 1, "datacenter": "dc2"}, r"no ZooKeeper server in 'dc2'"),
], ids=["missing-duration", "zero-duration", "outlasts-window", "no-zookeeper-there"])
def test_bad_stall_faults_are_rejected_with_the_field(shipped_topology: Topology, fault: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(DrillFileError, match=message):
        parse_drill(_raw(**fault), shipped_topology, source="drills/x.yaml")


def test_a_failover_within_the_tolerance_is_false_and_past_it_is_not() -> None:
    within, past = StallPrimary(kind=FaultKind.STALL_PRIMARY, duration_s=1.0), \
        StallPrimary(kind=FaultKind.STALL_PRIMARY, duration_s=5.0)
    ops = (_op(), _op("switchover"))
    assert false_failovers(within, 2.0, ops) == (ops[0],)
    assert false_failovers(past, 2.0, ops) == ()
    assert false_failovers(within, 2.0, (ops[1],)) == ()   # a planned switchover is no failover
    check = false_failover_check(within, 2.0, false_failovers(within, 2.0, ops))
    assert not check.passed and "false failover: dc1-a -> dc2-a after a 1 s stall-primary" in check.reason
    assert false_failover_check(past, 2.0, ()).passed


def test_a_stalled_controller_never_justifies_a_failover(shipped_topology: Topology) -> None:
    fault = StallLeaderController(kind=FaultKind.STALL_LEADER_CONTROLLER, duration_s=60)
    assert stall_tolerance(shipped_topology, fault) is None
    assert false_failovers(fault, None, (_op(),)) == (_op(),)
    assert not false_failover_check(fault, None, (_op(),)).passed
