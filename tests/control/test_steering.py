"""Steering operations on fakes: per-step persistence and resume, re-plan, roll-back, abort."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import decisions as d
from orchestrator.errors import CoordinationUnavailable, LostLeadership
from orchestrator.state import ClusterState, Operation, OperationKind, Outcome, Role, Step
from orchestrator.topology import Topology
from tests.control.fakes import FakeCluster, FakeCoordinator, FakeZooKeeper
from tests.control.test_parts import Leader, fail_over, recorded_primary
from tests.control.test_parts import db as db
from tests.control.test_parts import elect as elect
from tests.control.test_parts import pool as pool
from tests.control.test_parts import zk as zk


@pytest.fixture
def policy(shipped_topology: Topology) -> d.Policy:
    # A re-plan after the first target died must still prove zero loss: here each member is its
    # own data centre and dc1-a's commits wait for ANY 2 of (dc1-b, dc2-a), so either one alone
    # holds every acknowledged commit (the proof itself is decisions' business, tested there).
    base = d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))
    members = {name: dataclasses.replace(m, datacenter=name) for name, m in base.members.items()}
    return dataclasses.replace(base, members=members, quorum=2)


def state(zk: FakeZooKeeper) -> ClusterState:
    return zk.states["payments"][0]


def kill_when(db: FakeCluster, action: str, member: str, victim: str | None = None) -> list[str]:
    """Kill ``victim`` (default ``member``) right before the first ``action`` on ``member``."""
    killed: list[str] = []

    def hook(act: str, who: str) -> None:
        if act == action and who == member and not killed:
            killed.append(victim or member)
            db.kill(victim or member)

    db.before = hook
    return killed


def rounds(leader: Leader, until: Callable[[], bool], limit: int = 20) -> None:
    for _ in range(limit):
        leader.cycle.run_once()
        if until():
            return
    raise AssertionError(f"not reached in {limit} rounds; events: {leader.log.events[-8:]}")


def advance(leader: Leader, seconds: float) -> None:
    leader.ctx.clock.now += seconds  # type: ignore[attr-defined]  # the tests' Clock


# ---- re-plan -------------------------------------------------------------------------------------


def test_a_failover_whose_target_dies_before_promotion_promotes_the_next_candidate(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    db.kill("dc1-a")
    killed = kill_when(db, "prepare_synchronous_names", "dc1-b")
    fail_over(leader, zk)
    assert killed == ["dc1-b"]
    assert recorded_primary(zk) == "dc2-a" and db.members["dc2-a"].role is Role.PRIMARY
    assert ("promote", "dc1-b", "") not in db.actions
    op = state(zk).history[-1]
    assert op.outcome is Outcome.DONE and op.target == "dc2-a"
    assert [(r.old_target, r.new_target) for r in op.replans] == [("dc1-b", "dc2-a")]
    assert "dc1-b is unreachable" in op.replans[0].reason
    assert op.proven and "dc2-a" in op.proof, "the re-planned target's own proof is recorded"
    assert "replanned" in leader.log.names()
    assert db.members["dc3-a"].upstream == "dc2-a"


def test_a_target_unreachable_when_a_new_leader_resumes_is_replaced(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    old = elect("dc2:old")
    old.cycle.run_once()
    db.kill("dc1-a")

    def depose_before_promote(action: str, member: str) -> None:
        if action == "prepare_synchronous_names":
            old.coord.expire()
            db.kill(member)                  # and the chosen target dies with the leader gone

    db.before = depose_before_promote
    with pytest.raises((LostLeadership, CoordinationUnavailable)):
        rounds(old, lambda: False)
    recorded = state(zk).operation
    assert recorded is not None and recorded.target == "dc1-b" and recorded.running is Step.PROMOTE
    db.before = None
    new = elect("dc3:new")
    fail_over(new, zk)
    assert recorded_primary(zk) == "dc2-a"
    assert [r.new_target for r in state(zk).history[-1].replans] == ["dc2-a"]


def test_no_candidate_left_holds_the_failover_and_abort_drops_it(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    db.kill("dc1-a")
    db.kill("dc2-a")                         # only the asynchronous dc3-a is left after dc1-b
    kill_when(db, "prepare_synchronous_names", "dc1-b")
    rounds(leader, lambda: "operation-held" in leader.log.names())
    held = state(zk).operation
    assert held is not None and held.target == "dc1-b" and recorded_primary(zk) == "dc1-a"
    request_id = zk.submit("payments", {"kind": "abort", "by": "ops@host", "reason": "dc1 is gone"})
    leader.cycle.run_once()
    answer = zk.results["payments"][request_id]
    assert answer["ok"], answer
    after = state(zk)
    assert after.operation is None and after.history[-1].outcome is Outcome.ABORTED
    assert "ops@host" in after.history[-1].outcome_detail and "dc1 is gone" in after.history[-1].outcome_detail
    assert after.last_failover_at is not None, "an aborted failover starts the anti-flap period"
    leader.cycle.run_once()
    assert leader.cycle.last_kind == "blocked", "the automatic rule does not start it again at once"
    assert "aborted" in leader.log.names()
    assert not [a for a in db.actions if a[0] == "promote"]


# ---- per-step persistence and resume --------------------------------------------------------------


@pytest.mark.parametrize(("recorded", "promotes_again"), [
    ((Step.INTENT, Step.FENCE), True),       # intent: fencing may have started
    ((Step.FENCE, Step.PROMOTE), True),      # fenced; promoting dc1-b started
    ((Step.REPOINT, None), False),           # promoted and re-pointed
], ids=["intent", "promote-started", "promoted"])
def test_a_new_leader_resumes_from_each_persisted_step(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster, monkeypatch: pytest.MonkeyPatch,
        recorded: tuple[Step, Step | None], promotes_again: bool) -> None:
    old = elect("dc2:old")
    old.cycle.run_once()
    db.kill("dc1-a")
    real = old.coord.write_state
    seen: list[Operation | None] = []

    def write_then_die(lease: Any, new_state: ClusterState, version: int) -> int:
        result = real(lease, new_state, version)
        op = new_state.operation
        if op is not None:
            seen.append(op)  # the leader dies right after the first write that records ``recorded``
            if (op.step, op.running) == recorded and len([o for o in seen if (o.step, o.running) == recorded]) == 1:
                old.coord.expire()
                FakeCoordinator(zk, "dc3:bump").bump_epoch()
        return result

    monkeypatch.setattr(old.coord, "write_state", write_then_die)
    with pytest.raises((LostLeadership, CoordinationUnavailable)):
        rounds(old, lambda: False)
    op = state(zk).operation
    assert op is not None and (op.step, op.running) == recorded
    promoted_before = [a for a in db.actions if a[0] == "promote"]
    new = elect("dc1:new")
    fail_over(new, zk)
    after = state(zk)
    assert (after.primary, after.generation) == ("dc1-b", 2)
    assert after.history[-1].id == op.id and after.history[-1].outcome is Outcome.DONE
    promoted_after = [a for a in db.actions if a[0] == "promote"][len(promoted_before):]
    assert bool(promoted_after) is promotes_again
    assert {db.members[n].upstream for n in ("dc2-a", "dc3-a")} == {"dc1-b"}


def test_the_promotion_start_is_persisted_before_promoting(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    db.kill("dc1-a")
    at_promote: list[Operation | None] = []

    def look(action: str, member: str) -> None:
        if action == "promote":
            at_promote.append(state(zk).operation)

    db.before = look
    fail_over(leader, zk)
    (op,) = at_promote
    assert op is not None and op.running is Step.PROMOTE and op.target == "dc1-b"
    assert [s.step for s in op.steps] == [Step.INTENT, Step.FENCE]


# ---- switchover roll-back and abort --------------------------------------------------------------


def switchover(leader: Leader, zk: FakeZooKeeper, to: str = "dc2-a") -> dict[str, Any]:
    request_id = zk.submit("payments", {"kind": "switchover", "to": to})
    leader.cycle.run_once()
    return zk.results["payments"][request_id]


def test_abort_of_a_switchover_whose_target_stopped_makes_the_old_primary_writable(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    kill_when(db, "stop_writes", "dc1-a", victim="dc2-a")
    answer = switchover(leader, zk)
    assert not answer["ok"] and "drctl abort payments" in answer["error"], answer
    held = state(zk).operation
    assert held is not None and held.kind is OperationKind.SWITCHOVER and held.running is Step.FENCE
    assert "resume_writes" not in [a for a, _, _ in db.actions], "writes stay stopped while it may return"
    assert [a for a, _, _ in db.actions].count("stop_writes") == 1, \
        "the round that answered the request decided on its stale snapshot (and stopped writes again)"
    leader.cycle.run_once()                    # held, not retried blindly
    assert state(zk).operation == held
    request_id = zk.submit("payments", {"kind": "abort", "by": "ops@host"})
    leader.cycle.run_once()
    assert zk.results["payments"][request_id]["ok"]
    assert ("resume_writes", "dc1-a", "") in db.actions
    after = state(zk)
    assert after.operation is None and after.primary == "dc1-a"
    assert after.history[-1].outcome is Outcome.ABORTED and after.last_failover_at is None
    assert not [a for a in db.actions if a[0] == "promote"]


def test_a_switchover_whose_target_stays_away_rolls_back_at_its_deadline(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    kill_when(db, "stop_writes", "dc1-a", victim="dc2-a")
    switchover(leader, zk)
    assert state(zk).operation is not None
    advance(leader, d.SWITCHOVER_DEADLINE_SECONDS)
    leader.cycle.run_once()
    after = state(zk)
    assert after.operation is None and after.primary == "dc1-a"
    assert after.history[-1].outcome is Outcome.ROLLED_BACK
    assert "deadline" in after.history[-1].outcome_detail
    assert ("resume_writes", "dc1-a", "") in db.actions
    assert "switchover-rolled-back" in leader.log.names()


def test_a_switchover_target_dying_at_promotion_restarts_the_stopped_old_primary(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    kill_when(db, "prepare_synchronous_names", "dc2-a")
    answer = switchover(leader, zk)
    assert not answer["ok"] and "rolling back" in answer["error"], answer
    kinds = [a for a, _, _ in db.actions]
    assert kinds.index("stop_server") < kinds.index("start_server") < kinds.index("resume_writes")
    after = state(zk)
    assert after.operation is None and after.primary == "dc1-a"
    assert after.history[-1].outcome is Outcome.ROLLED_BACK
    assert db.members["dc1-a"].running and db.members["dc1-a"].role is Role.PRIMARY
    assert not [a for a in db.actions if a[0] == "promote"]


def test_a_switchover_that_cannot_get_the_wal_rolls_back_into_the_history(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    db.members["dc1-a"].lsn = 5000            # the target never receives it

    def late(action: str, member: str) -> None:
        if action == "stop_writes":            # most of the deadline is gone: a short wait
            advance(leader, d.SWITCHOVER_DEADLINE_SECONDS - 0.3)

    db.before = late
    answer = switchover(leader, zk)
    assert not answer["ok"] and "rolled back" in answer["error"], answer
    after = state(zk)
    assert after.operation is None and after.history[-1].outcome is Outcome.ROLLED_BACK
    assert ("resume_writes", "dc1-a", "") in db.actions


def test_abort_after_the_promotion_started_is_refused_and_the_operation_finishes(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    old = elect("dc2:old")
    old.cycle.run_once()
    db.kill("dc1-a")
    promoted: list[str] = []

    def depose_after_promote(action: str, member: str) -> None:
        if action == "repoint" and promoted == [] and db.members["dc1-b"].role is Role.PRIMARY:
            promoted.append("dc1-b")
            old.coord.expire()

    db.before = depose_after_promote
    with pytest.raises((LostLeadership, CoordinationUnavailable)):
        rounds(old, lambda: False)
    db.before = None
    op = state(zk).operation
    assert op is not None and op.running is Step.PROMOTE
    new = elect("dc3:new")
    request_id = zk.submit("payments", {"kind": "abort", "by": "ops@host"})
    new.cycle.run_once()
    answer = zk.results["payments"][request_id]
    assert not answer["ok"] and "started promoting dc1-b" in answer["error"], answer
    fail_over(new, zk)
    assert state(zk).history[-1].outcome is Outcome.DONE and recorded_primary(zk) == "dc1-b"


def test_abort_with_nothing_in_progress_is_refused(elect: Callable[..., Leader], zk: FakeZooKeeper) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    request_id = zk.submit("payments", {"kind": "abort"})
    leader.cycle.run_once()
    assert zk.results["payments"][request_id] == {
        "ok": False, "error": "no operation is in progress on payments; nothing to abort"}
