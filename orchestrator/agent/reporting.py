"""The agent's own fences, reported: an audit entry and a ``fencing`` alert, sent by the agent itself.

A fence a controller instructs is audited and alerted by that controller (``fence-instructed``,
``fenced-stray``). A fence the agent decides alone is seen by no controller: its ZooKeeper session
or lease lapsed (it may be cut off from every controller), or it was stopped beside a primary. So
:class:`SelfFencingReports`, an :class:`~orchestrator.events.EventLog` listener, turns each such
``fenced`` event into an entry of the lab's audit trail and an alert delivered straight to the
topology's receivers (reachable, often, when ZooKeeper is what the agent lost), with the retries
and de-duplication of :class:`~orchestrator.alerts.dispatcher.AlertDispatcher`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.alerts.dispatcher import AlertDispatcher
from orchestrator.audit import AuditLog
from orchestrator.events import EventLog
from orchestrator.topology import Topology

# The cause the agent gives a fence it was told to make: its instructing controller reports that one.
INSTRUCTED = "instruction"


class SelfFencingReports:
    """Listener ``(event, fields)``: audit and alert every ``fenced`` event whose cause is the agent's own."""

    def __init__(self, topology: Topology, cluster: str, member: str, root: Path, log: EventLog) -> None:
        self._cluster, self._member, self._log = cluster, member, log
        self._who = f"agent {cluster}/{member}"
        self._audit = AuditLog(root / "audit")
        self._alerts = (None if topology.alerts is None else
                        AlertDispatcher.from_spec(topology.alerts, root, emit=log.emit, audit=self._audit,
                                                  who=self._who))

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if event != "fenced" or fields.get("cause") == INSTRUCTED:
            return
        cause, reason = fields.get("cause", ""), fields.get("reason", "")
        detail = f"fenced itself ({cause}): {reason}"
        if self._alerts is not None:
            self._alerts("fenced", {"cluster": self._cluster, "member": self._member, "detail": detail})
        try:
            self._audit.append(who=self._who, action="self-fenced", outcome="ok", source="agent",
                               details={"cluster": self._cluster, "member": self._member, **fields})
        except Exception as exc:   # a listener must not raise; the failure is an event of its own
            self._log.emit("audit-failed", action="self-fenced", error=f"{type(exc).__name__}: {exc}")

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (the fence of an agent that is stopping), then end the threads."""
        if self._alerts is not None:
            self._alerts.close(timeout, drain=True)
