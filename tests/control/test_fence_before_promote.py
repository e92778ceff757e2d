"""Fence before promote, on fakes: nothing is promoted while an unreachable primary may still
acknowledge commits; a refused connection, its agent's report or its agent's expired session
proves it stopped; a live agent is told to fence, under the current epoch only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orchestrator import decisions as d
from orchestrator.errors import CoordinationUnavailable, LostLeadership
from orchestrator.state import Step
from tests.control.fakes import FakeAgent, FakeAgents, FakeCluster, FakeZooKeeper
from tests.control.test_parts import Leader
from tests.control.test_parts import db as db  # the fixtures
from tests.control.test_parts import elect as elect
from tests.control.test_parts import policy as policy
from tests.control.test_parts import pool as pool
from tests.control.test_parts import zk as zk


def every_agent(db: FakeCluster, **kwargs: object) -> dict[str, FakeAgent]:
    return {name: FakeAgent(**kwargs) for name in db.members}  # type: ignore[arg-type]


def run_until_failed_over(leader: Leader, zk: FakeZooKeeper, rounds: int = 10) -> None:
    for _ in range(rounds):
        leader.cycle.run_once()
        state = zk.states["payments"][0]
        if state.primary != "dc1-a" and state.operation is None:
            return
    raise AssertionError(f"no failover; events: {leader.log.events}")


def index(db: FakeCluster, action: str, member: str | None = None) -> int:
    return next(i for i, (a, m, _) in enumerate(db.actions) if a == action and (member is None or m == member))


def fence_detail(zk: FakeZooKeeper) -> str:
    op = zk.states["payments"][0].history[-1]
    return next(s.detail for s in op.steps if s.step is Step.FENCE)


def test_a_silent_primary_without_an_agent_is_never_promoted_over(elect: Callable[..., Leader],
                                                                  zk: FakeZooKeeper, db: FakeCluster) -> None:
    leader = elect("dc2:a")
    leader.cycle.run_once()
    db.isolate("dc1-a")
    for _ in range(8):
        leader.cycle.run_once()
    assert zk.states["payments"][0].primary == "dc1-a"
    assert not [a for a in db.actions if a[0] == "promote"]
    blocked = [f["reason"] for e, f in leader.log.events if e == "decision" and f.get("kind") == "blocked"]
    assert blocked and "cannot prove dc1-a stopped acknowledging commits" in blocked[-1]


def test_a_killed_primary_is_proven_by_the_refusal_and_no_agent_is_told_to_fence(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    agents = FakeAgents(zk, db, every_agent(db))
    leader = elect("dc2:a", agents=agents)
    leader.cycle.run_once()
    assert agents.view_calls == 0, "a healthy primary's cycle reads nothing from ZooKeeper for the agents"
    db.kill("dc1-a")
    run_until_failed_over(leader, zk)
    assert agents.view_calls >= 1, "the candidates' agents are read before one is promoted"
    assert agents.instructions == []
    assert "refuses connections" in fence_detail(zk)


def test_a_candidate_whose_agent_lapsed_is_passed_over(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    roster = every_agent(db)
    roster["dc2-a"].live = False  # its agent would fence it the moment it became primary
    leader = elect("dc2:a", agents=FakeAgents(zk, db, roster))
    leader.cycle.run_once()
    db.kill("dc1-a")
    for _ in range(10):
        leader.cycle.run_once()
    assert "promote" not in [action for action, *_ in db.actions], "a member its own agent would fence was promoted"
    assert zk.states["payments"][0].primary == "dc1-a"
    assert any("dc2-a: node agent without a ZooKeeper session" in str(e) for e in leader.log.events)


def test_a_silent_primary_is_fenced_by_its_agent_before_anything_is_promoted(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    agents = FakeAgents(zk, db, every_agent(db))
    leader = elect("dc2:a", agents=agents)
    leader.cycle.run_once()
    db.isolate("dc1-a")
    run_until_failed_over(leader, zk)
    assert agents.instructions == [("dc1-a", leader.term.epoch)]
    assert index(db, "agent-fence", "dc1-a") < index(db, "promote")
    assert "agent reports its postmaster gone" in fence_detail(zk)


def test_a_cut_off_agent_is_waited_for_until_its_session_expires(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    """The agent cannot be reached either: it fences itself on its lease; the proof is its expiry."""
    agents = FakeAgents(zk, db, every_agent(db, obeys=False), expire_after=4)
    leader = elect("dc2:a", agents=agents)
    leader.cycle.run_once()
    db.isolate("dc1-a")
    run_until_failed_over(leader, zk)
    assert index(db, "agent-session-expired", "dc1-a") < index(db, "promote")
    assert "agent session ended" in fence_detail(zk)


def test_a_primary_whose_agent_never_proves_anything_is_not_promoted_over(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    """A live agent that neither fences nor expires (within its session timeout and the margin):
    the FENCE step gives up, nothing is promoted, the operation stays recorded to be resumed."""
    agents = FakeAgents(zk, db, every_agent(db, obeys=False, session_timeout_s=0.0))
    leader = elect("dc2:a", agents=agents)
    leader.cycle.run_once()
    db.isolate("dc1-a")
    for _ in range(3):
        leader.cycle.run_once()
    assert not [a for a in db.actions if a[0] == "promote"]
    state = zk.states["payments"][0]
    assert state.primary == "dc1-a" and state.operation is not None and state.operation.step is Step.INTENT
    assert any(e == "action-failed" and "not proven stopped" in f["error"] for e, f in leader.log.events)


def test_a_deposed_leader_cannot_instruct_a_fence(elect: Callable[..., Leader], zk: FakeZooKeeper,
                                                  db: FakeCluster) -> None:
    agents = FakeAgents(zk, db, every_agent(db, obeys=False))
    old = elect("dc2:old", agents=agents)
    old.cycle.run_once()
    db.isolate("dc1-a")
    old.coord.expire()
    elect("dc3:new")                        # a new term: the epoch moved on
    with pytest.raises((LostLeadership, CoordinationUnavailable)):
        for _ in range(4):
            old.cycle.run_once()
    assert agents.instructions == []
    assert not [a for a in db.actions if a[0] in ("promote", "agent-fence")]


def test_a_cut_off_agent_past_its_fencing_bound_proves_the_stop_before_its_session_expires(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    """Its last lease write landed longer ago than its bound (ZooKeeper's clock): it fenced itself,
    so the leader need not wait for the session to expire (seconds more)."""
    agents = FakeAgents(zk, db, every_agent(db, obeys=False, bound_s=2.0, session_timeout_s=60.0,
                                            write_age_s=2.0 + d.LEASE_CLOCK_MARGIN_S + 0.1))
    leader = elect("dc2:a", agents=agents)
    leader.cycle.run_once()
    db.isolate("dc1-a")
    run_until_failed_over(leader, zk)
    assert "past its 2.00s fencing bound" in fence_detail(zk)
    assert not [a for a in db.actions if a[0] == "agent-session-expired"]


def test_an_operator_failover_from_a_silent_primary_without_an_agent_needs_the_flag(
        elect: Callable[..., Leader], zk: FakeZooKeeper, db: FakeCluster) -> None:
    """Refused before anything is recorded (its FENCE step could never complete); with the flag the
    operator vouches that it is down, and the promotion goes ahead."""
    leader = elect("dc2:a")
    leader.cycle.run_once()
    db.isolate("dc1-a")
    refused = zk.submit("payments", {"kind": "failover", "to": "dc2-a", "accept_data_loss": False})
    leader.cycle.run_once()
    answer = zk.results["payments"][refused]
    assert not answer["ok"] and "cannot prove dc1-a stopped acknowledging commits" in answer["error"]
    assert "--accept-data-loss" in answer["error"]
    assert zk.states["payments"][0].operation is None and not [a for a in db.actions if a[0] == "promote"]
    accepted = zk.submit("payments", {"kind": "failover", "to": "dc2-a", "accept_data_loss": True})
    leader.cycle.run_once()
    assert zk.results["payments"][accepted]["ok"], zk.results["payments"][accepted]
    assert zk.states["payments"][0].primary == "dc2-a"
    assert "the operator accepted the risk" in fence_detail(zk)



def test_a_reason_is_logged_when_it_says_something_new_not_when_only_its_figures_move(
        elect: Callable[..., Leader]) -> None:
    leader = elect("dc2:a")
    for age in (0.1, 0.2, 0.35, 1, 12.5):    # a blocked failover counting seconds, cycle after cycle
        leader.cycle._note("decision", f"cannot prove dc1-a stopped: lease confirmed {age} s ago (bound 2.0 s)",
                           kind="blocked")
        # A held operation says so every cycle too, between the decisions: each is still news only once.
        leader.cycle._note("operation-held", "dc2-a is unreachable; zero loss NOT provable")
    leader.cycle._note("decision", "cannot prove dc2-a stopped: lease confirmed 0.1 s ago (bound 2.0 s)",
                       kind="blocked")      # another member: news
    leader.cycle._note("decision", "dc1-a is primary; standbys in order", kind="healthy")
    assert [e for e, _ in leader.log.events if e == "operation-held"] == ["operation-held"]
    reasons = [f["reason"] for e, f in leader.log.events if e == "decision"]
    assert reasons == ["cannot prove dc1-a stopped: lease confirmed 0.1 s ago (bound 2.0 s)",
                       "cannot prove dc2-a stopped: lease confirmed 0.1 s ago (bound 2.0 s)",
                       "dc1-a is primary; standbys in order"]
