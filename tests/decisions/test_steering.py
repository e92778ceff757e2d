"""Resume, re-plan, roll-back and abort of a recorded operation: pure tables."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator import decisions as d
from orchestrator.state import ClusterSnapshot, Health, MemberStatus, Operation, OperationKind, Role, Step
from orchestrator.topology import Topology

T0 = 1000.0


@pytest.fixture
def policy(shipped_topology: Topology) -> d.Policy:
    """Each member its own data centre; dc1-a's commits wait for ANY 2 of (dc1-b, dc2-a), so a
    re-plan to either one alone proves zero loss. ``quorum=1`` (ANY 1 of the two) makes it unprovable."""
    base = d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))
    members = {name: dataclasses.replace(m, datacenter=name) for name, m in base.members.items()}
    return dataclasses.replace(base, members=members, quorum=2)


def standby(name: str, lsn: int = 100, timeline: int = 1) -> MemberStatus:
    return MemberStatus(name, Health.HEALTHY, Role.STANDBY, timeline=timeline, wal_lsn=lsn)


def primary(name: str, timeline: int = 2) -> MemberStatus:
    return MemberStatus(name, Health.HEALTHY, Role.PRIMARY, timeline=timeline, wal_lsn=200)


def down(name: str) -> MemberStatus:
    return MemberStatus(name, Health.UNREACHABLE, error="connection refused", refused=True)


def snap(*members: MemberStatus) -> ClusterSnapshot:
    return ClusterSnapshot("payments", {m.name: m for m in members})


def op(kind: OperationKind = OperationKind.FAILOVER, step: Step = Step.INTENT, running: Step | None = Step.FENCE,
       target: str = "dc1-b") -> Operation:
    base = Operation(id="op1", kind=kind, source="dc1-a", target=target, reason="test", started_at=T0)
    base = base.advanced(Step.INTENT, T0)
    if step in (Step.FENCE, Step.PROMOTE, Step.REPOINT):
        base = base.advanced(Step.FENCE, T0)
    if step in (Step.PROMOTE, Step.REPOINT):
        base = base.advanced(Step.PROMOTE, T0).advanced(Step.REPOINT, T0)
    return base.starting(running) if running is not None else base


DEAD_B = snap(down("dc1-a"), down("dc1-b"), standby("dc2-a"), standby("dc3-a", 90))
LIVE_B = snap(down("dc1-a"), standby("dc1-b"), standby("dc2-a"), standby("dc3-a", 90))


@pytest.mark.parametrize(("operation", "snapshot", "now", "provable", "expected", "words"), [
    (op(), LIVE_B, T0, True, d.Proceed, "answers as standby"),
    (op(step=Step.FENCE, running=Step.PROMOTE), snap(down("dc1-a"), primary("dc1-b")), T0, True, d.Proceed,
     "answers as primary"),
    (op(step=Step.REPOINT, running=None), DEAD_B, T0, True, d.Proceed, "promotion is recorded"),
    (op(), DEAD_B, T0, True, d.Replanned, "re-planned to dc2-a"),
    (op(step=Step.FENCE, running=Step.PROMOTE), DEAD_B, T0, True, d.Replanned, "dc1-b is unreachable"),
    (op(), DEAD_B, T0, False, d.Hold, "not re-planning to an unproven candidate"),
    (op(), snap(down("dc1-a"), down("dc1-b"), down("dc2-a"), standby("dc3-a")), T0, True, d.Hold,
     "no other candidate"),
    (op(OperationKind.SWITCHOVER), snap(standby("dc1-a"), down("dc1-b"), standby("dc2-a"), standby("dc3-a")),
     T0 + 1, True, d.Hold, "rolls back once"),
    (op(OperationKind.SWITCHOVER), snap(standby("dc1-a"), down("dc1-b"), standby("dc2-a"), standby("dc3-a")),
     T0 + d.SWITCHOVER_DEADLINE_SECONDS, True, d.RollBack, "deadline passed"),
    (op(OperationKind.SWITCHOVER, Step.FENCE, Step.PROMOTE), snap(down("dc1-a"), down("dc1-b"), standby("dc2-a"),
                                                                  standby("dc3-a")),
     T0, True, d.RollBack, "acknowledged nothing"),
    (op(OperationKind.SWITCHOVER, Step.FENCE, Step.PROMOTE), snap(down("dc1-a"), down("dc1-b"),
                                                                  standby("dc2-a", timeline=2), standby("dc3-a")),
     T0, True, d.Replanned, "re-planned to dc2-a"),
], ids=["target-up", "target-promoted", "promotion-recorded", "failover-replans", "replans-mid-promotion",
        "unproven-holds", "no-candidate-holds", "switchover-waits", "switchover-deadline",
        "switchover-promotion-unseen-rolls-back", "switchover-new-timeline-replans"])
def test_plan_resume(policy: d.Policy, operation: Operation, snapshot: ClusterSnapshot, now: float,
                     provable: bool, expected: type, words: str) -> None:
    policy = dataclasses.replace(policy, quorum=2 if provable else 1)
    plan = d.plan_resume(operation, snapshot, policy, now, source_timeline=1)
    assert isinstance(plan, expected), plan
    assert words in plan.reason


@pytest.mark.parametrize(("operation", "snapshot", "expected", "words"), [
    (None, DEAD_B, d.Refusal, "no operation is in progress on payments"),
    (op(), DEAD_B, d.Abort, "failover op1 to dc1-b dropped before promotion, aborted by ops: why"),
    (op(OperationKind.SWITCHOVER), DEAD_B, d.Abort, "dc1-a takes writes again"),
    (op(step=Step.FENCE, running=Step.PROMOTE), LIVE_B, d.Refusal, "started promoting dc1-b"),
    (op(step=Step.FENCE, running=Step.PROMOTE), DEAD_B, d.Abort, "unreachable mid-promotion"),
    (op(OperationKind.SWITCHOVER, Step.FENCE, Step.PROMOTE), DEAD_B, d.Refusal, "started promoting"),
    (op(step=Step.REPOINT, running=None), DEAD_B, d.Refusal, "already promoted dc1-b: it is the primary"),
], ids=["nothing", "failover-before-promote", "switchover-rolls-back", "promoting-target-answers",
        "promoting-target-gone", "switchover-promoting", "promoted"])
def test_plan_abort(operation: Operation | None, snapshot: ClusterSnapshot, expected: type, words: str) -> None:
    plan = d.plan_abort(operation, snapshot, "payments", by="ops", why="why")
    assert isinstance(plan, expected), plan
    assert words in plan.reason
    if isinstance(plan, d.Abort):
        assert plan.roll_back is (operation is not None and operation.kind is OperationKind.SWITCHOVER)


def test_a_replan_never_picks_an_asynchronous_member_even_after_accepted_loss(policy: d.Policy) -> None:
    accepted = op(target="dc3-a").model_copy(update={"accept_data_loss": True})
    snapshot = snap(down("dc1-a"), down("dc1-b"), down("dc2-a"), down("dc3-a"))
    plan = d.plan_resume(accepted, snapshot, policy, T0, source_timeline=1)
    assert isinstance(plan, d.Hold)
    only_async = snap(down("dc1-a"), down("dc1-b"), down("dc2-a"), standby("dc3-a"))
    plan = d.replan(accepted.model_copy(update={"target": "dc2-a"}), only_async, policy, why="dc2-a is gone")
    assert isinstance(plan, d.Hold) and "no other candidate" in plan.reason
