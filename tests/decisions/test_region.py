"""A whole region lost: when the leader may promote the DR standby by itself (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator import decisions as d
from orchestrator.state import (
    ClusterSnapshot,
    ClusterState,
    DrLagRecord,
    DrMemberLag,
    Health,
    MemberStatus,
    Role,
)
from orchestrator.topology import Topology

EAST = ("dc1-a", "dc1-b", "dc2-a")
GONE = d.AgentView(live=False, postmaster_alive=False, bound_s=2.0, session_timeout_s=3.5)
LIVE = d.AgentView(live=True, postmaster_alive=True, bound_s=2.0, session_timeout_s=3.5)
LAG = DrLagRecord(max_seconds=5, mode="alert", lag_seconds=0.4,
                  members={"dc3-a": DrMemberLag(receive_lag_s=0.4, replay_lag_s=0.5)})
STATE = ClusterState(cluster="payments", primary="dc1-a", dr_lag=LAG)
FAILED = d.Memory(failures={"dc1-a": 5})


@pytest.fixture
def automatic(shipped_topology: Topology) -> d.Policy:
    policy = d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))
    return dataclasses.replace(policy, dr_automatic=True)


def silent(name: str) -> MemberStatus:
    return MemberStatus(name, Health.UNREACHABLE, error="timeout")


def refused(name: str) -> MemberStatus:
    return MemberStatus(name, Health.UNREACHABLE, error="connection refused", refused=True)


def dr_standby() -> MemberStatus:
    return MemberStatus("dc3-a", Health.HEALTHY, Role.STANDBY, timeline=1, wal_lsn=900, streaming=False)


def east_lost(*, alive: str = "") -> ClusterSnapshot:
    members = {n: (silent(n) if n != "dc1-a" else refused(n)) for n in EAST}
    if alive:
        members[alive] = MemberStatus(alive, Health.HEALTHY, Role.STANDBY, wal_lsn=1000)
    members["dc3-a"] = dr_standby()
    return ClusterSnapshot("payments", members, taken_at=100.0)


ALL_GONE = dict.fromkeys(EAST, GONE)


@pytest.mark.parametrize(("snapshot", "agents", "lost", "why"), [
    pytest.param(east_lost(), ALL_GONE, True, "region east lost", id="members-and-agents-gone"),
    pytest.param(east_lost(), {**ALL_GONE, "dc2-a": LIVE}, False, "dc2-a's agent in region east still holds",
                 id="one-agent-alive-is-a-partition"),
    pytest.param(east_lost(alive="dc1-b"), ALL_GONE, False, "dc1-b in region east still answers",
                 id="one-member-answers"),
    pytest.param(east_lost(), {"dc1-a": GONE, "dc1-b": GONE}, False, "dc2-a in region east has no agent",
                 id="silent-member-without-agent-proves-nothing"),
])
def test_a_region_is_lost_only_when_every_member_and_agent_there_is_gone(
        automatic: d.Policy, snapshot: ClusterSnapshot, agents: dict[str, d.AgentView], lost: bool, why: str
) -> None:
    verdict = d.region_loss(snapshot, automatic, "dc1-a", agents)
    assert verdict.lost is lost and verdict.region == "east"
    assert why in verdict.reason


def test_refused_members_without_agents_are_proven_silent(automatic: d.Policy) -> None:
    snapshot = ClusterSnapshot("payments", {**{n: refused(n) for n in EAST}, "dc3-a": dr_standby()})
    assert d.region_loss(snapshot, automatic, "dc1-a", {}).lost


def test_automatic_dr_failover_promotes_the_dr_standby_with_the_lag_at_loss(automatic: d.Policy) -> None:
    decision = d.decide(east_lost(), STATE, automatic, FAILED, 200.0, agents=ALL_GONE)
    assert isinstance(decision, d.Failover)
    assert (decision.source, decision.target, decision.proven, decision.accept_data_loss) == (
        "dc1-a", "dc3-a", False, True)
    assert (decision.lost_region, decision.data_loss_window_s) == ("east", 0.4)
    assert "region east lost" in decision.reason and "0.40s" in decision.reason


@pytest.mark.parametrize(("manual", "agents", "why"), [
    pytest.param(True, ALL_GONE, "replication.dr_failover is manual", id="manual-policy"),
    pytest.param(False, {**ALL_GONE, "dc1-b": LIVE}, "no region loss confirmed", id="partition-not-loss"),
])
def test_otherwise_it_stays_blocked_and_names_the_operator_command(
        automatic: d.Policy, manual: bool, agents: dict[str, d.AgentView], why: str) -> None:
    policy = dataclasses.replace(automatic, dr_automatic=False) if manual else automatic
    decision = d.decide(east_lost(), STATE, policy, FAILED, 200.0, agents=agents)
    assert isinstance(decision, d.Blocked)
    assert "drctl failover payments --to dc3-a --accept-data-loss" in decision.reason
    if not manual:
        assert why in decision.reason


def test_anti_flap_and_pause_still_hold(automatic: d.Policy) -> None:
    paused = STATE.model_copy(update={"paused": True})
    assert isinstance(d.decide(east_lost(), paused, automatic, FAILED, 200.0, agents=ALL_GONE), d.Blocked)
    recent = STATE.model_copy(update={"last_failover_at": 195.0})
    assert isinstance(d.decide(east_lost(), recent, automatic, FAILED, 200.0, agents=ALL_GONE), d.Blocked)


def test_a_proven_zero_loss_candidate_is_still_preferred(automatic: d.Policy) -> None:
    # dc1 lost, dc2-a alive: the ordinary zero-loss failover, not a DR one.
    snapshot = ClusterSnapshot("payments", {"dc1-a": refused("dc1-a"), "dc1-b": refused("dc1-b"),
                                            "dc2-a": MemberStatus("dc2-a", Health.HEALTHY, Role.STANDBY,
                                                                  timeline=1, wal_lsn=1000),
                                            "dc3-a": dr_standby()})
    decision = d.decide(snapshot, STATE, automatic, FAILED, 200.0, agents={})
    assert isinstance(decision, d.Failover) and decision.target == "dc2-a" and decision.proven
    assert not decision.accept_data_loss


def test_the_lag_at_loss_is_unknown_without_a_measurement() -> None:
    assert d.dr_lag_at_loss(ClusterState(cluster="payments", primary="dc1-a"), "dc3-a") is None
    assert d.dr_lag_at_loss(STATE, "dc3-a") == 0.4
