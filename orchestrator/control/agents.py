"""The leader's view of the node agents, and its one instruction to them: fence.

:class:`ZooKeeperAgents` turns the agents' znodes (``agent-registry/<member>``, persistent, and
``agents/<member>``, ephemeral, holding :class:`~orchestrator.agent.facts.AgentFacts`) into the
pure :class:`~orchestrator.decisions.AgentView` that :func:`orchestrator.decisions.stop_evidence`
reads, and writes epoch-checked fence instructions. :class:`NoAgents` is the directory of a
deployment without agents (and of unit tests that do not care): nothing but a refused connection
then proves a primary stopped.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from pydantic import ValidationError

from orchestrator.agent.facts import AgentFacts
from orchestrator.coordination import Lease
from orchestrator.decisions import AgentView


class AgentStore(Protocol):
    """Enough of a ZooKeeper session (:class:`orchestrator.coordination.Coordinator`)."""

    def agent_registry(self, cluster: str) -> dict[str, dict[str, Any]]: ...

    def agent_facts(self, cluster: str) -> dict[str, bytes]: ...

    def agent_write_ages(self, cluster: str) -> dict[str, float]: ...

    def instruct(self, lease: Lease, cluster: str, member: str, instruction: dict[str, Any]) -> None: ...


def agent_views(registry: dict[str, dict[str, Any]], facts: dict[str, bytes],
                ages: dict[str, float] | None = None) -> dict[str, AgentView]:
    """Registered members only; a live node whose facts do not parse counts as live with a postmaster
    (in doubt, nothing is proven by it). ``ages``: seconds since each agent's last write landed."""
    ages = ages or {}
    views: dict[str, AgentView] = {}
    for member, record in registry.items():
        bound = float(record.get("bound_s", 0.0))
        session = float(record.get("session_timeout_s", 0.0))
        raw = facts.get(member)
        if raw is None:
            views[member] = AgentView(live=False, postmaster_alive=False, bound_s=bound, session_timeout_s=session)
            continue
        try:
            parsed = AgentFacts.model_validate_json(raw)
        except ValidationError:
            views[member] = AgentView(live=True, bound_s=bound, session_timeout_s=session,
                                      write_age_s=ages.get(member))
            continue
        views[member] = AgentView(live=True, postmaster_alive=parsed.postmaster_alive,
                                  bound_s=parsed.fencing_bound_s, session_timeout_s=session,
                                  write_age_s=ages.get(member))
    return views


class AgentDirectory(Protocol):
    def views(self, cluster: str, *, ages: bool = False) -> dict[str, AgentView]:
        """Every member with a registered agent, read from ZooKeeper now; with ``ages``, also how
        long ago each live agent's last write landed (one scratch write to read ZooKeeper's clock).

        :raises CoordinationUnavailable: ZooKeeper unreachable.
        """
        ...

    def instruct_fence(self, lease: Lease, cluster: str, member: str) -> str:
        """Tell ``member``'s agent to fence it, iff ``lease`` is still current; returns the id.

        :raises LostLeadership: the epoch moved on (nothing written).
        :raises CoordinationUnavailable: ZooKeeper unreachable.
        """
        ...


class ZooKeeperAgents:
    def __init__(self, store: AgentStore) -> None:
        self._store = store

    def views(self, cluster: str, *, ages: bool = False) -> dict[str, AgentView]:
        registry = self._store.agent_registry(cluster)
        write_ages = self._store.agent_write_ages(cluster) if ages and registry else None
        return agent_views(registry, self._store.agent_facts(cluster), write_ages)

    def instruct_fence(self, lease: Lease, cluster: str, member: str) -> str:
        ident = uuid.uuid4().hex[:12]
        self._store.instruct(lease, cluster, member, {"epoch": lease.epoch, "action": "fence", "id": ident})
        return ident


class NoAgents:
    """No member runs an agent."""

    def views(self, cluster: str, *, ages: bool = False) -> dict[str, AgentView]:
        return {}

    def instruct_fence(self, lease: Lease, cluster: str, member: str) -> str:
        raise AssertionError(f"{cluster}/{member} has no agent to instruct")
