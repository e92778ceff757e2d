"""``lab up --agents`` starts one agent per member: each publishes its facts and the fencing bound.

A lab of its own (ports from DRCTL_TEST_PORT_BASE+3500, no controllers): stopping an agent
fences its primary, so agents never join the shared session lab.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.agent.facts import AgentFacts
from orchestrator.agent.rules import fencing_budget
from orchestrator.coordination import AgentSession
from orchestrator.lab import Lab
from orchestrator.state import Role
from orchestrator.topology import Topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def agent_lab(shipped_topology: Topology) -> Iterator[Lab]:
    lab = Lab(with_port_base(shipped_topology, TEST_PORT_BASE + 3500), make_lab_dir("drctl-agents-"),
              controllers=False, agents=True)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def test_every_member_has_a_live_agent_reporting_its_facts(agent_lab: Lab) -> None:
    lab = agent_lab
    topo = lab.topology
    cluster = topo.cluster("payments")
    session = AgentSession(topo.zookeeper_hosts(), topo.name, session_timeout=topo.zookeeper.session_timeout_ms / 1000)
    session.start()

    def complete() -> dict[str, AgentFacts] | None:
        facts = {m: AgentFacts.model_validate_json(raw) for m, raw in session.agent_facts(cluster.name).items()}
        primaries = [f for f in facts.values() if f.role is Role.PRIMARY]
        confirmed = all(f.lease_confirmed_at is not None for f in facts.values())  # after a first write
        return facts if set(facts) == {m.name for m in cluster.members} and len(primaries) == 1 and confirmed \
            else None

    try:
        facts = poll(complete, timeout=30, interval=0.05)
    finally:
        session.stop()
    assert facts is not None, "agents' facts incomplete after 30 s"
    primaries = [f for f in facts.values() if f.role is Role.PRIMARY]
    for member in cluster.members:
        f = facts[member.name]
        assert f.agent_pid == lab.agent_pid(cluster.name, member.name)
        assert f.postmaster_alive and not f.fenced and f.session == "connected"
        zk = topo.zookeeper
        assert f.fencing_bound_s == pytest.approx(fencing_budget(zk.agent_session_ms / 1000,
                                                                 zk.tick_time_ms / 1000).bound_s)
        assert f.epoch_seen is None  # no controller, so no leader epoch yet
    assert primaries[0].timeline is not None and primaries[0].flushed_lsn
    assert all(f.received_lsn for f in facts.values() if f.role is Role.STANDBY)
    assert any(row.service == f"agent-{cluster.members[0].name}" for row in lab.status().services)


def test_a_lab_brought_up_with_agents_keeps_them_when_reopened(agent_lab: Lab) -> None:
    reopened = Lab(agent_lab.topology, agent_lab.root, controllers=False)
    assert reopened.with_agents
    assert Lab(agent_lab.topology, agent_lab.root, controllers=False, agents=False).with_agents is False
