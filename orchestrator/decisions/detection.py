"""Detection: memory between probe rounds, the holistic verdict on the primary, and the proof that an
unreachable primary acknowledges nothing (fence before promote)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator.decisions.policy import Policy
from orchestrator.state import ClusterSnapshot, MemberStatus, Role
from orchestrator.topology import Topology

# ---- memory between cycles -----------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """What the controller carries from one probe round to the next."""

    failures: Mapping[str, int] = field(default_factory=dict)
    # When each member was first seen unreachable / not streaming in its current spell.
    down_since: Mapping[str, float] = field(default_factory=dict)
    first_failure_at: Mapping[str, float] = field(default_factory=dict)


def remember(memory: Memory, snapshot: ClusterSnapshot, now: float) -> Memory:
    failures = dict(memory.failures)
    down_since = dict(memory.down_since)
    first_failure = dict(memory.first_failure_at)
    for name, status in snapshot.members.items():
        if status.reachable:
            failures.pop(name, None)
            first_failure.pop(name, None)
        else:
            failures[name] = failures.get(name, 0) + 1
            first_failure.setdefault(name, now)
        unhealthy = not status.reachable or (status.role is Role.STANDBY and not status.streaming)
        if unhealthy:
            down_since.setdefault(name, now)
        else:
            down_since.pop(name, None)
    return Memory(failures, down_since, first_failure)


# ---- detection -----------------------------------------------------------------------------


class Verdict(StrEnum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"            # failing, not yet confirmed
    ALIVE_ELSEWHERE = "alive"      # we cannot reach it, but standbys still stream from it
    UNCONFIRMED = "unconfirmed"    # no standby reachable to confirm: maybe we are the ones cut off
    FAILED = "failed"


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reason: str


def assess_primary(snapshot: ClusterSnapshot, policy: Policy, primary: str, failures: int) -> Assessment:
    status = snapshot.members.get(primary)
    if status is not None and status.reachable:
        if status.role is Role.PRIMARY:
            return Assessment(Verdict.HEALTHY, f"{primary} answers as primary")
        return Assessment(Verdict.SUSPECT, f"{primary} answers but is in recovery, not primary")
    if failures < policy.failure_threshold:
        return Assessment(Verdict.SUSPECT, f"{primary} unreachable ({failures}/{policy.failure_threshold} probes)")
    standbys = [s for n, s in snapshot.members.items() if n != primary and s.reachable and s.role is Role.STANDBY]
    if not standbys:
        return Assessment(Verdict.UNCONFIRMED,
                          f"{primary} unreachable but no standby is reachable to confirm; not failing over")
    upstream = policy.members[primary].endpoint
    streaming = sorted(s.name for s in standbys if s.streaming and s.upstream == upstream)
    if streaming:
        return Assessment(Verdict.ALIVE_ELSEWHERE,
                          f"{primary} unreachable from the controller but {', '.join(streaming)} still stream "
                          "from it; not failing over")
    names = ", ".join(sorted(s.name for s in standbys))
    return Assessment(Verdict.FAILED,
                      f"{primary} unreachable for {failures} probes and no standby streams from it ({names})")


def stall_tolerance_s(topology: Topology) -> float:
    """The longest stall of the primary (SIGSTOP, a frozen VM) that detection rides out: a failover
    during a shorter one is a false failover.

    A stalled server's kernel still completes connects and acknowledges every byte, so each probe
    of it fails only at its deadline, and :func:`assess_primary` needs ``failure_threshold`` of them
    in a row: at least ``failure_threshold x probe_timeout``. Even then a standby that still streams
    from it keeps it ALIVE_ELSEWHERE until its walreceiver gives up: ``wal_receiver_timeout`` after
    the last message, and the receiver asks for one at half the timeout, so at least half of it.
    A failover needs both, so the bound is the later of the two.
    """
    controller, postgres = topology.controller, topology.postgres
    probes = controller.failure_threshold * controller.probe_timeout_ms / 1000
    return max(probes, postgres.wal_receiver_timeout_ms / 2000)


# ---- proof that the old primary acknowledges nothing -------------------------------------------


@dataclass(frozen=True)
class AgentView:
    """What ZooKeeper says about a member's node agent (see :mod:`orchestrator.agent`).

    ``live``: its ephemeral liveness node exists (its session is alive). A registered agent whose
    node is gone had its session expire (or was stopped); either way the agent fenced its member
    first: it stops acknowledgements within ``bound_s`` of its last confirmed lease write, and that
    is earlier than the server can expire the session (``agent.rules``).
    """

    live: bool
    postmaster_alive: bool = True
    bound_s: float = 0.0
    session_timeout_s: float = 0.0
    # Seconds since its last lease write landed, on ZooKeeper's clock (None: not read).
    write_age_s: float | None = None


# Allowance between the agent's clock and ZooKeeper's when judging a lease write's age: clock
# rates and the ensemble leader's clock steps (the agent measures from the *send*, which precedes
# the write's mtime, so the age is an underestimate before this margin).
LEASE_CLOCK_MARGIN_S = 0.25


class StopProof(StrEnum):
    REFUSED = "refused"                  # its host answered and nothing listens on the port
    POSTMASTER_GONE = "postmaster-gone"  # its live agent sees no postmaster
    AGENT_EXPIRED = "agent-expired"      # its agent's session expired: fenced within its bound
    BOUND_PASSED = "bound-passed"        # its agent's last lease write is older than its fencing bound
    AGENT_WILL_FENCE = "agent-will-fence"  # not yet: a live agent can be told to fence, or expires
    UNPROVABLE = "unprovable"            # no agent and no refusal: nothing will ever prove it


@dataclass(frozen=True)
class StopEvidence:
    proof: StopProof
    reason: str

    @property
    def proven(self) -> bool:
        return self.proof in (StopProof.REFUSED, StopProof.POSTMASTER_GONE, StopProof.AGENT_EXPIRED,
                              StopProof.BOUND_PASSED)


def stop_evidence(member: str, status: MemberStatus | None, agent: AgentView | None) -> StopEvidence:
    """Is ``member`` (a primary we cannot reach) proven to acknowledge no more commits?

    Only proof lets a promotion go ahead (never two servers acknowledging writes): a refused
    connection (a timeout proves nothing: the host may be cut off from us alone), the member's
    own agent reporting its postmaster gone, its agent's session expired, or its agent's last lease
    write older (on ZooKeeper's clock) than its fencing bound. ``agent`` is None when no agent was
    ever registered for the member.
    """
    if status is not None and status.reachable:
        return StopEvidence(StopProof.UNPROVABLE if agent is None else StopProof.AGENT_WILL_FENCE,
                            f"{member} still answers")
    if status is not None and status.refused:
        return StopEvidence(StopProof.REFUSED, f"{member}'s host refuses connections: no postmaster listens")
    if agent is not None and agent.live and not agent.postmaster_alive:
        return StopEvidence(StopProof.POSTMASTER_GONE, f"{member}'s agent reports its postmaster gone")
    if agent is not None and not agent.live:
        return StopEvidence(StopProof.AGENT_EXPIRED,
                            f"{member}'s agent session ended: it stopped acknowledging within its "
                            f"{agent.bound_s:.2f}s fencing bound, before the session could expire")
    if agent is not None and agent.write_age_s is not None \
            and agent.write_age_s > agent.bound_s + LEASE_CLOCK_MARGIN_S:
        return StopEvidence(StopProof.BOUND_PASSED,
                            f"{member}'s agent confirmed no lease write for {agent.write_age_s:.2f}s (ZooKeeper's "
                            f"clock), past its {agent.bound_s:.2f}s fencing bound: it fenced itself, or its "
                            "watchdog did")
    if agent is not None:
        return StopEvidence(StopProof.AGENT_WILL_FENCE,
                            f"{member}'s agent still holds its session and sees a postmaster: it must fence "
                            f"it (instructed), or its session must expire (at most "
                            f"{agent.session_timeout_s:.1f}s)")
    why = status.error if status is not None and status.error else "no answer"
    return StopEvidence(StopProof.UNPROVABLE,
                        f"cannot prove {member} stopped acknowledging commits: it does not refuse connections "
                        f"({why}) and no agent runs beside it")
