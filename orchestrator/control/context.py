"""What every part needs to act on one cluster during one leadership term.

One :class:`ClusterContext` per cluster per term, built by the controller when it is
elected and dropped with the term. Each field is a narrow contract (``control.ports``),
so a unit test builds one from the in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from orchestrator import decisions as d
from orchestrator.control.agents import AgentDirectory, NoAgents
from orchestrator.control.ports import ClusterDatabase
from orchestrator.control.store import StateStore
from orchestrator.control.term import Emitter, Term


@dataclass(frozen=True)
class ClusterContext:
    cluster: str
    term: Term
    db: ClusterDatabase
    store: StateStore
    policy: d.Policy
    log: Emitter
    clock: Callable[[], float]
    # Short parallel work inside one step (slots while promoting); never outlives the step.
    pool: ThreadPoolExecutor
    # The members' node agents: what proves an unreachable primary stopped, and who fences it.
    agents: AgentDirectory = field(default_factory=NoAgents)

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self.policy.members)
