"""The controller's parts on in-memory fakes: a stale leader changes nothing; guards between steps."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from orchestrator import decisions as d
from orchestrator.control import executors
from orchestrator.control.agents import AgentDirectory, NoAgents
from orchestrator.control.context import ClusterContext
from orchestrator.control.cycle import ClusterCycle
from orchestrator.control.publisher import Publisher
from orchestrator.control.rejoin import RejoinRunner, Rejoins
from orchestrator.control.requests import Requests
from orchestrator.control.store import StateStore
from orchestrator.control.term import LeaseInDoubt, Term
from orchestrator.decisions import SessionState
from orchestrator.errors import CoordinationUnavailable, LostLeadership, PlaybookFailed
from orchestrator.state import Role, Step
from orchestrator.topology import Topology
from tests.control.fakes import FakeCluster, FakeCoordinator, FakeZooKeeper


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        with self._lock:
            self.events.append((event, fields))

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


@dataclass
class Leader:
    coord: FakeCoordinator
    term: Term
    ctx: ClusterContext
    cycle: ClusterCycle
    rejoins: Rejoins
    log: Log


@pytest.fixture
def policy(shipped_topology: Topology) -> d.Policy:
    return d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@pytest.fixture
def zk() -> FakeZooKeeper:
    return FakeZooKeeper()


@pytest.fixture
def db(policy: d.Policy) -> FakeCluster:
    return FakeCluster(policy, "dc1-a")


@pytest.fixture
def elect(zk: FakeZooKeeper, db: FakeCluster, policy: d.Policy, pool: ThreadPoolExecutor
          ) -> Callable[..., Leader]:
    clock = Clock()

    def make(identity: str, runner: RejoinRunner | None = None, agents: AgentDirectory | None = None) -> Leader:
        log = Log()
        coord = FakeCoordinator(zk, identity)
        term = Term(coord, coord.bump_epoch(), log=log, join_timeout=5)
        coord.on_session_change(term.session_changed)
        store = StateStore(coord, term, identity, clock=clock, log=log)
        ctx = ClusterContext("payments", term, db, store, policy, log, clock, pool, agents=agents or NoAgents())
        rejoins = Rejoins(runner)
        cycle = ClusterCycle(ctx, rejoins, Requests(coord, rejoins), Publisher(every=0.0))
        return Leader(coord, term, ctx, cycle, rejoins, log)

    return make


def recorded_primary(zk: FakeZooKeeper) -> str:
    return zk.states["payments"][0].primary


def fail_over(leader: Leader, zk: FakeZooKeeper) -> None:
    for _ in range(10):
        leader.cycle.run_once()
        if recorded_primary(zk) != "dc1-a" and zk.states["payments"][0].operation is None:
            return
    raise AssertionError(f"no failover; decisions: {leader.log.events}")


def test_a_failover_on_fakes_promotes_re_points_and_records(elect: Callable[..., Leader], zk: FakeZooKeeper,
                                                            db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    assert recorded_primary(zk) == "dc1-a"
    db.kill("dc1-a")
    fail_over(leader, zk)
    state = zk.states["payments"][0]
    # dc1-a's commits are confirmed outside dc1 only (RPO 0): dc2-a holds them all.
    assert (state.primary, state.generation) == ("dc2-a", 2)
    assert db.members["dc2-a"].role is Role.PRIMARY
    assert {db.members[n].upstream for n in ("dc1-b", "dc3-a")} == {"dc2-a"}
    assert state.history[-1].proven and "(dc2-a) seen" in state.history[-1].proof
    assert [s.step for s in state.history[-1].steps] == [Step.INTENT, Step.FENCE, Step.PROMOTE, Step.REPOINT,
                                                         Step.DONE]
    assert leader.coord.reads >= 3, "the lease was read before the side effects"


def test_a_leader_paused_past_its_session_wakes_and_changes_nothing(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    """SIGSTOP the leader, another fails over, SIGCONT: not a fence, not a write."""
    old = elect("dc2:old")
    old.cycle.run_once()
    old.coord.expire()                      # frozen past its session
    new = elect("dc3:new")
    db.kill("dc1-a")
    fail_over(new, zk)
    assert recorded_primary(zk) == "dc2-a"
    actions, writes = list(db.actions), list(zk.writes)
    with pytest.raises((LostLeadership, CoordinationUnavailable)):
        old.cycle.run_once()                # wakes mid-loop with its cached view (dc1-a primary)
    assert db.actions == actions, "the stale leader touched PostgreSQL"
    assert zk.writes == writes, "the stale leader wrote to ZooKeeper"
    assert old.term.ended
    assert db.members["dc2-a"].running and db.members["dc2-a"].role is Role.PRIMARY


def test_the_stray_primary_rule_reads_the_epoch_before_it_fences(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    """Even with a working session (reconnected), a superseded leader does not stop the new primary."""
    old = elect("dc2:old")
    old.cycle.run_once()
    old.coord.expire()
    new = elect("dc3:new")
    db.kill("dc1-a")
    fail_over(new, zk)
    old.coord.reconnect()                    # its client got a fresh session before it looked
    actions = list(db.actions)
    stray = d.FenceStray("dc2-a", "dc2-a accepts writes but dc1-a is the primary of generation 1")
    with pytest.raises(LostLeadership, match="superseded"):
        executors.fence_stray(old.ctx, stray)
    assert db.actions == actions
    assert db.members["dc2-a"].running


def test_lease_lost_right_after_promote_the_stale_leader_re_points_and_records_nothing(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    old = elect("dc2:old")
    old.cycle.run_once()
    db.kill("dc1-a")
    lost = threading.Event()

    def lose_lease_at_promotion(action: str, member: str) -> None:
        if action == "promote" and not lost.is_set():
            lost.set()
            old.coord.expire()
            FakeCoordinator(zk, "dc3:new").bump_epoch()

    db.before = lose_lease_at_promotion
    with pytest.raises(LostLeadership):
        for _ in range(10):
            old.cycle.run_once()
    assert lost.is_set()
    after = db.actions[[a for a, _, _ in db.actions].index("promote") + 1:]
    assert not [a for a in after if a[0] == "repoint"], f"re-pointed after losing the lease: {after}"
    state = zk.states["payments"][0]
    assert state.primary == "dc1-a" and state.operation is not None, "the new leader resumes the operation"
    assert (state.operation.step, state.operation.running) == (Step.FENCE, Step.PROMOTE), \
        "only 'fenced, promoting dc1-b' (written under the valid lease) is recorded"


def test_losing_leadership_cancels_a_rejoin_and_waits_for_it(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    started = threading.Event()
    seen_cancel: list[bool] = []

    def slow_playbook(cluster: str, member: str, upstream: str, cancelled: Callable[[], bool]) -> None:
        started.set()
        while not cancelled():
            threading.Event().wait(0.002)    # ansible-runner polls its cancel callback like this
        seen_cancel.append(True)
        raise PlaybookFailed("playbook rejoin.yml canceled")

    leader = elect("dc2:a", runner=slow_playbook)
    leader.cycle.run_once()
    assert leader.rejoins.start(leader.ctx, "dc3-a")
    assert started.wait(5)
    assert leader.rejoins.rejoining("payments") == {"dc3-a"}
    leader.coord.expire()
    with pytest.raises(CoordinationUnavailable):
        leader.coord.is_paused("payments")   # the client notices: LOST ends the term
    assert leader.term.end("deposed") == []
    assert seen_cancel == [True]
    assert leader.rejoins.rejoining() == frozenset()
    assert ("ensure_peer_slots", "dc3-a", "") not in db.actions
    assert "rejoin-cancelled" in leader.log.names()
    with pytest.raises(LostLeadership):
        leader.rejoins.start(leader.ctx, "dc1-a")


def test_a_stale_leader_neither_serves_nor_answers_a_request(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    old = elect("dc2:old")
    old.cycle.run_once()
    zk.submit("payments", {"kind": "switchover", "to": "dc2-a"})
    old.coord.expire()
    old.coord.reconnect()
    FakeCoordinator(zk, "dc3:new").bump_epoch()
    actions = list(db.actions)
    with pytest.raises(LostLeadership):
        old.cycle.run_once()
    assert db.actions == actions
    assert zk.results == {} and len(zk.requests["payments"]) == 1, "the request waits for the new leader"


def test_a_switchover_request_on_fakes(elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    request_id = zk.submit("payments", {"kind": "switchover", "to": "dc2-a"})
    assert leader.cycle.run_once() is True
    result = zk.results["payments"][request_id]
    assert result["ok"] and result["primary"] == "dc2-a", result
    assert recorded_primary(zk) == "dc2-a"
    kinds = [a for a, _, _ in db.actions]
    assert kinds.index("stop_writes") < kinds.index("stop_server") < kinds.index("promote")


def test_a_suspended_session_mid_failover_stops_it_and_the_next_rounds_finish_it(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    db.kill("dc1-a")

    def blip_at_promotion(action: str, member: str) -> None:
        if action == "promote" and leader.coord.session is SessionState.CONNECTED and not blipped:
            blipped.append(member)
            leader.coord.suspend()            # a ZooKeeper server went away under the leader

    blipped: list[str] = []
    db.before = blip_at_promotion
    with pytest.raises(LeaseInDoubt):
        for _ in range(10):
            leader.cycle.run_once()
    assert blipped == ["dc2-a"] and not leader.term.ended
    assert not [a for a in db.actions if a[0] == "repoint"], "nothing re-pointed while the lease was in doubt"
    assert zk.states["payments"][0].operation is not None, "the operation stays recorded"
    leader.coord.resume()
    fail_over(leader, zk)                     # resumed from its recorded step: promoting a primary is a no-op
    state = zk.states["payments"][0]
    assert (state.primary, state.generation, state.operation) == ("dc2-a", 2, None)
    assert {db.members[n].upstream for n in ("dc1-b", "dc3-a")} == {"dc2-a"}


def test_an_expired_request_is_answered_never_run(elect: Callable[..., Leader], zk: FakeZooKeeper,
                                                  db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    request_id = zk.submit("payments", {"kind": "switchover", "to": "dc2-a", "expires_at": 500.0})
    actions = list(db.actions)
    assert leader.cycle.run_once() is False
    assert "expired" in zk.results["payments"][request_id]["error"]
    assert db.actions[:len(actions)] == actions and "stop_writes" not in [a for a, _, _ in db.actions]
    assert recorded_primary(zk) == "dc1-a"


def test_a_withdrawn_request_never_runs(elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    zk.submit("payments", {"kind": "switchover", "to": "dc2-a"})
    pending = leader.coord.pending_requests("payments")
    zk.requests["payments"].clear()        # the operator withdrew it after the leader listed it
    monkeypatch.setattr(leader.coord, "pending_requests", lambda cluster: pending)
    leader.cycle.run_once()
    assert zk.results == {} and "stop_writes" not in [a for a, _, _ in db.actions]
    assert recorded_primary(zk) == "dc1-a"


def test_an_operator_failover_without_proven_zero_loss_is_refused_unless_data_loss_is_accepted(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc3:a")
    db.members["dc1-a"].lsn = 1500
    leader.cycle.run_once()                    # publishes dc1-a's position: the last one known of it
    live = zk.submit("payments", {"kind": "failover", "to": "dc2-a"})
    leader.cycle.run_once()
    refused = zk.results["payments"][live]
    assert not refused["ok"] and "zero loss is not proven for dc2-a (dc1-a still accepts writes" in refused["error"]
    assert refused["error"].endswith("pass --accept-data-loss to promote it anyway")
    db.kill("dc1-a")
    db.kill("dc2-a")                           # dc1-a's only quorum partner: dc1-b may lack commits
    asynchronous = zk.submit("payments", {"kind": "failover", "to": "dc1-b"})
    leader.cycle.run_once()
    assert "it is asynchronous (pass --accept-data-loss)" in zk.results["payments"][asynchronous]["error"]
    assert "promote" not in [a for a, _, _ in db.actions]
    forced = zk.submit("payments", {"kind": "failover", "to": "dc1-b", "accept_data_loss": True})
    leader.cycle.run_once()
    result = zk.results["payments"][forced]
    assert result["ok"] and (result["proven"], result["wal_at_risk_bytes"]) == (False, 500), result
    op = zk.states["payments"][0].history[-1]
    assert (op.target, op.proven, op.accept_data_loss, op.wal_at_risk_bytes) == ("dc1-b", False, True, 500)
    assert "only 0 of the 1 quorum standby(s) of dc1-a (dc2-a) seen" in op.proof
