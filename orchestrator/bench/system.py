"""The contract every benchmarked system implements (ours and each peer).

A system owns a 3-member PostgreSQL 15 cluster with synchronous quorum replication
(one synchronous standby of two), reachable through a libpq multi-host string with
``target_session_attrs=read-write``. Every process it starts is stopped by PID in
:meth:`System.stop`, even after a failed round; the runner stops it after every round and
checks that nothing of it survives (:mod:`orchestrator.bench.procs`), then removes its
directory, so each round starts from nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Fault:
    """What :meth:`System.kill_primary` did."""

    at: float                      # epoch seconds, just before the first kill
    member: str                    # the node whose primary was killed
    pids: tuple[int, ...] = ()     # postgres (and agent) PIDs killed


@dataclass(frozen=True)
class SyncSample:
    """One poll of the new primary: was synchronous replication off at that moment?"""

    at: float
    server: str                    # "address:port"
    synchronous_standby_names: str


@dataclass(frozen=True)
class RoundFacts:
    """What the system itself reports after a round (the load journal gives the rest)."""

    new_primary: str | None
    old_primary_rejoined: bool     # came back as a streaming standby without an operator
    sync_samples: tuple[SyncSample, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)


class System(Protocol):
    name: str                      # e.g. "dr-orchestrator", "patroni-default", "pg_auto_failover-aggressive"

    def settings(self) -> dict[str, Any]:
        """Every setting that matters for fairness, written into the report verbatim."""
        ...

    def start(self, workdir: Path) -> None:
        """Bring the cluster up from nothing (or back to healthy) and return when a primary
        accepts writes and both standbys stream. :raises LabError: not healthy in time."""
        ...

    def ports(self) -> tuple[int, ...]:
        """Every TCP port the system listens on (127.0.0.1): the runner checks them free before
        :meth:`start` and released after :meth:`stop`."""
        ...

    def conninfo(self) -> str:
        """The application's libpq multi-host string (target_session_attrs=read-write)."""
        ...

    def kill_primary(self) -> Fault:
        """kill -9 the primary's postgres and that node's own agent process, if any."""
        ...

    def observe(self, fault: Fault, seconds: float) -> RoundFacts:
        """Watch for ``seconds`` after the fault (poll every member's role and the new
        primary's ``synchronous_standby_names`` every ~50 ms), then report."""
        ...

    def stop(self) -> None:
        """Stop every process this system started, by PID; remove nothing it did not make."""
        ...
