"""How long ago an agent's last lease write landed, on ZooKeeper's own clock (real ensemble).

The agent here is the test itself publishing for a member of a cluster no controller serves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.control.agents import ZooKeeperAgents
from orchestrator.coordination import AgentSession, Coordinator
from orchestrator.lab import Lab
from orchestrator.waiting import poll

pytestmark = pytest.mark.lab

GHOST = "ghost-clock"


@pytest.fixture
def sessions(lab: Lab) -> Iterator[tuple[Coordinator, AgentSession]]:
    topo = lab.topology
    coord = Coordinator(topo.zookeeper_hosts(), topo.name, identity="test-clock")
    agent = AgentSession(topo.zookeeper_hosts(), topo.name, session_timeout=10.0)
    coord.start()
    agent.start()
    try:
        yield coord, agent
    finally:
        agent.stop()
        coord.stop()


def test_a_write_age_grows_until_the_next_write_and_restarts_from_it(sessions: tuple[Coordinator, AgentSession]
                                                                     ) -> None:
    coord, agent = sessions
    agent.publish(GHOST, "m", b"{}")
    assert coord.agent_write_ages(GHOST)["m"] < 0.5
    assert poll(lambda: coord.agent_write_ages(GHOST)["m"] >= 0.6, timeout=5, interval=0.05)
    agent.publish(GHOST, "m", b"{}")
    assert coord.agent_write_ages(GHOST)["m"] < 0.5


def test_views_carry_the_age_only_when_asked_and_only_for_registered_agents(
        sessions: tuple[Coordinator, AgentSession]) -> None:
    coord, agent = sessions
    agent.register(GHOST, "m", {"bound_s": 2.0, "session_timeout_s": 10.0})
    agent.publish(GHOST, "m", b'{"not": "facts"}')
    agent.publish(GHOST, "unregistered", b"{}")
    directory = ZooKeeperAgents(coord)
    plain, aged = directory.views(GHOST), directory.views(GHOST, ages=True)
    assert set(plain) == set(aged) == {"m"}
    assert plain["m"].live and plain["m"].write_age_s is None
    age = aged["m"].write_age_s
    assert age is not None and 0 <= age < 1.0
