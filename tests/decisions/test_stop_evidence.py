"""The proof that an unreachable primary acknowledges nothing (decisions.stop_evidence), tabled."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import decisions as d
from orchestrator.state import ClusterSnapshot, ClusterState, Health, MemberStatus, Role
from orchestrator.topology import Topology

SILENT = MemberStatus("p", Health.UNREACHABLE, error="timeout expired")
REFUSED = MemberStatus("p", Health.UNREACHABLE, error="connection refused", refused=True)
ANSWERS = MemberStatus("p", Health.HEALTHY, Role.PRIMARY)


@pytest.mark.parametrize(("status", "agent", "proof"), [
    pytest.param(REFUSED, None, d.StopProof.REFUSED, id="refused, no agent"),
    pytest.param(REFUSED, d.AgentView(live=True), d.StopProof.REFUSED, id="refused beats a live agent"),
    pytest.param(SILENT, None, d.StopProof.UNPROVABLE, id="silent, no agent: never"),
    pytest.param(None, None, d.StopProof.UNPROVABLE, id="never probed, no agent"),
    pytest.param(SILENT, d.AgentView(live=True, postmaster_alive=False), d.StopProof.POSTMASTER_GONE,
                 id="agent sees no postmaster"),
    pytest.param(SILENT, d.AgentView(live=False, postmaster_alive=False), d.StopProof.AGENT_EXPIRED,
                 id="agent session gone"),
    pytest.param(SILENT, d.AgentView(live=True, postmaster_alive=True), d.StopProof.AGENT_WILL_FENCE,
                 id="live agent, live postmaster: not yet"),
    pytest.param(SILENT, d.AgentView(live=True, bound_s=2.0, write_age_s=2.0 + d.LEASE_CLOCK_MARGIN_S + 0.01),
                 d.StopProof.BOUND_PASSED, id="last lease write older than the bound plus margin"),
    pytest.param(SILENT, d.AgentView(live=True, bound_s=2.0, write_age_s=2.0 + d.LEASE_CLOCK_MARGIN_S),
                 d.StopProof.AGENT_WILL_FENCE, id="exactly at the bound plus margin: not yet"),
    pytest.param(SILENT, d.AgentView(live=True, bound_s=2.0, write_age_s=None), d.StopProof.AGENT_WILL_FENCE,
                 id="age not read: not yet"),
    pytest.param(ANSWERS, d.AgentView(live=True, bound_s=2.0, write_age_s=9.0), d.StopProof.AGENT_WILL_FENCE,
                 id="it answers: an old lease write proves nothing"),
    pytest.param(ANSWERS, d.AgentView(live=False), d.StopProof.AGENT_WILL_FENCE,
                 id="it answers: nothing proven whatever the agent"),
    pytest.param(ANSWERS, None, d.StopProof.UNPROVABLE, id="it answers, no agent"),
])
def test_stop_evidence_table(status: MemberStatus | None, agent: d.AgentView | None, proof: d.StopProof) -> None:
    assert d.stop_evidence("p", status, agent).proof is proof


statuses = st.one_of(st.none(), st.builds(
    MemberStatus, name=st.just("p"), health=st.sampled_from(Health), role=st.sampled_from(Role),
    refused=st.booleans(), error=st.sampled_from([None, "timeout expired", "connection refused"])))
agents = st.one_of(st.none(), st.builds(d.AgentView, live=st.booleans(), postmaster_alive=st.booleans(),
                                         bound_s=st.floats(0, 10), write_age_s=st.one_of(st.none(), st.floats(0, 20))))


@given(statuses, agents)
def test_nothing_is_proven_without_a_refusal_or_an_agent_saying_so(status: MemberStatus | None,
                                                                 agent: d.AgentView | None) -> None:
    evidence = d.stop_evidence("p", status, agent)
    if evidence.proven:
        assert status is None or not status.reachable, "a member that answers is never proven stopped"
        refused = status is not None and status.refused
        agent_says = agent is not None and (not agent.live or not agent.postmaster_alive or (
            agent.write_age_s is not None and agent.write_age_s > agent.bound_s + d.LEASE_CLOCK_MARGIN_S))
        assert refused or agent_says
    if agent is None and not (status is not None and status.refused):
        assert not evidence.proven


@pytest.fixture
def policy(shipped_topology: Topology) -> d.Policy:
    return d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))


def standby(name: str, lsn: int) -> MemberStatus:
    return MemberStatus(name, Health.HEALTHY, Role.STANDBY, timeline=1, wal_lsn=lsn)


@pytest.mark.parametrize(("agents", "kind"), [
    pytest.param(None, d.Blocked, id="no agent read: blocked"),
    pytest.param({}, d.Blocked, id="no agent registered: blocked"),
    pytest.param({"dc1-a": d.AgentView(live=True)}, d.Failover, id="a live agent will fence: fail over"),
    pytest.param({"dc1-a": d.AgentView(live=False)}, d.Failover, id="agent expired: fail over"),
    pytest.param({"dc2-a": d.AgentView(live=True, postmaster_alive=False)}, d.Blocked,
                 id="another member's agent proves nothing"),
])
def test_a_silent_primary_fails_over_only_where_an_agent_can_prove_it_stopped(
        policy: d.Policy, agents: dict[str, d.AgentView] | None, kind: type) -> None:
    silent = MemberStatus("dc1-a", Health.UNREACHABLE, error="timeout expired")
    snapshot = ClusterSnapshot("payments", {"dc1-a": silent,
                                            "dc1-b": standby("dc1-b", 10), "dc2-a": standby("dc2-a", 20),
                                            "dc3-a": standby("dc3-a", 5)})
    decision = d.decide(snapshot, ClusterState(cluster="payments", primary="dc1-a"), policy,
                        d.Memory(failures={"dc1-a": 2}), now=100.0, agents=agents)
    assert isinstance(decision, kind), decision
    if isinstance(decision, d.Blocked):
        assert "cannot prove dc1-a stopped acknowledging commits" in decision.reason
        assert "--accept-data-loss" in decision.reason
