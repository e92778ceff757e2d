"""The decision table: one typed :class:`Decision` per cluster per controller round."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.decisions.candidates import Refusal, choose_candidate
from orchestrator.decisions.detection import AgentView, Memory, StopProof, Verdict, assess_primary, stop_evidence
from orchestrator.decisions.lag import HoldCommits, ReleaseCommits, hold_change
from orchestrator.decisions.policy import Policy
from orchestrator.state import ClusterSnapshot, ClusterState, DrMemberLag, Operation, Role, Step

# ---- the decision --------------------------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    reason: str


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class Blocked:
    reason: str


@dataclass(frozen=True)
class Failover:
    source: str
    target: str
    proven: bool
    reason: str
    proof: str = ""        # why zero loss is proven (an automatic failover always is)


@dataclass(frozen=True)
class Resume:
    operation: Operation
    reason: str


@dataclass(frozen=True)
class FenceStray:
    member: str
    reason: str


@dataclass(frozen=True)
class Repoint:
    members: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Rejoin:
    member: str
    reason: str


@dataclass(frozen=True)
class WidenQuorum:
    members: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class NarrowQuorum:
    members: tuple[str, ...]
    reason: str


Decision = (Idle | Wait | Blocked | Failover | Resume | FenceStray | Repoint | Rejoin | WidenQuorum | NarrowQuorum
            | HoldCommits | ReleaseCommits)

# How long an in-region quorum candidate must have been gone before fallbacks join the
# quorum: re-attaching after a re-point takes tens of milliseconds and is not a shortage.
QUORUM_SHORTAGE_SECONDS = 0.2


def decide(
    snapshot: ClusterSnapshot,
    state: ClusterState,
    policy: Policy,
    memory: Memory,
    now: float,
    *,
    rejoining: frozenset[str] = frozenset(),
    agents: Mapping[str, AgentView] | None = None,
    dr: Mapping[str, DrMemberLag] | None = None,
) -> Decision:
    """One controller cycle's decision for one cluster.

    ``agents``: the registered node agents, read when the primary is not answering (None when
    not read: nothing but a refused connection then proves the primary stopped, and no
    candidate is passed over for a lapsed agent). ``dr``: the DR
    standbys' lag measured this round (``lag.measure``; None or empty: not measured).
    """
    if state.operation is not None and state.operation.step is not Step.DONE:
        return Resume(state.operation, f"{state.operation.kind} {state.operation.id} stopped at "
                                       f"{state.operation.step}; resuming")
    primary = state.primary
    strays = [n for n in snapshot.primaries() if n != primary]
    if strays:
        return FenceStray(strays[0], f"{strays[0]} accepts writes but {primary} is the primary of generation "
                                     f"{state.generation}")
    assessment = assess_primary(snapshot, policy, primary, memory.failures.get(primary, 0))
    if assessment.verdict is Verdict.FAILED:
        return _on_failure(snapshot, state, policy, now, assessment.reason, agents or {})
    if assessment.verdict is not Verdict.HEALTHY:
        return Wait(assessment.reason)
    return _tend_standbys(snapshot, state, policy, memory, now, rejoining, dr or {})


def _on_failure(snapshot: ClusterSnapshot, state: ClusterState, policy: Policy, now: float, why: str,
                agents: Mapping[str, AgentView]) -> Decision:
    if state.paused:
        return Blocked(f"{why}; automatic failover is paused (drctl resume {policy.cluster})")
    if state.last_failover_at is not None and now - state.last_failover_at < policy.anti_flap_seconds:
        ago = now - state.last_failover_at
        return Blocked(f"{why}; last failover {ago:.0f}s ago, within the {policy.anti_flap_seconds:.0f}s "
                       f"anti-flap period (force with drctl failover {policy.cluster} --to MEMBER)")
    choice = choose_candidate(snapshot, policy, state.primary, extra_synchronous=state.synchronous_extra,
                              agents=agents)
    if isinstance(choice, Refusal):
        return Blocked(f"{why}; {choice.reason}")
    if not choice.proven:
        # Never automatic: an unproven promotion is only ever an operator's explicit choice.
        return Blocked(f"{why}; {choice.reason}; refusing automatic failover (to promote it anyway: "
                       f"drctl failover {policy.cluster} --to {choice.name} --accept-data-loss)")
    stopped = stop_evidence(state.primary, snapshot.members.get(state.primary), agents.get(state.primary))
    if stopped.proof is StopProof.UNPROVABLE:
        return Blocked(f"{why}; {stopped.reason}; refusing automatic failover (make sure it is down, then "
                       f"drctl failover {policy.cluster} --to {choice.name} --accept-data-loss)")
    return Failover(state.primary, choice.name, True, f"{why}; {choice.reason}; {stopped.reason}", choice.proof)


def _tend_standbys(snapshot: ClusterSnapshot, state: ClusterState, policy: Policy, memory: Memory, now: float,
                   rejoining: frozenset[str], dr: Mapping[str, DrMemberLag]) -> Decision:
    quorum_change = _quorum_change(snapshot, state, policy, memory, now)
    if quorum_change is not None:
        return quorum_change
    primary = snapshot.members.get(state.primary)
    hold = hold_change(state, policy, dr, now, setting=primary.sync_names if primary is not None else None)
    if hold is not None:
        return hold
    upstream = policy.members[state.primary].endpoint
    repoint: list[str] = []
    for name, status in sorted(snapshot.members.items()):
        if name == state.primary or name in rejoining:
            continue
        since = memory.down_since.get(name)
        stuck = since is not None and now - since >= policy.rejoin_delay_seconds
        if not status.reachable:
            if since is not None and stuck:
                return Rejoin(name, f"{name} unreachable for over {policy.rejoin_delay_seconds:.1f}s; "
                                    f"rejoining it as a standby of {state.primary}")
            continue
        if status.role is Role.STANDBY and status.upstream != upstream:
            repoint.append(name)
        elif status.role is Role.STANDBY and not status.streaming and since is not None and stuck:
            return Rejoin(name, f"{name} has not streamed from {state.primary} for over "
                                f"{policy.rejoin_delay_seconds:.1f}s (diverged timeline?); rewinding it")
    if repoint:
        return Repoint(tuple(repoint), f"{', '.join(repoint)} stream from elsewhere; pointing them at "
                                       f"{state.primary}")
    return Idle(f"{state.primary} is primary; standbys in order")


def _quorum_change(snapshot: ClusterSnapshot, state: ClusterState, policy: Policy, memory: Memory, now: float
                   ) -> WidenQuorum | NarrowQuorum | None:
    """Add fallback members while the in-region quorum is short; drop them once it is back."""
    base, fallbacks = policy.quorum_for(state.primary)
    if policy.quorum == 0 or not fallbacks:
        return None
    replicas = snapshot.members[state.primary].replicas
    candidates = [n for n in base if n != state.primary]
    attached = [n for n in candidates if n in replicas]
    if len(attached) >= policy.quorum:
        if state.synchronous_extra:
            return NarrowQuorum(state.synchronous_extra,
                                f"{', '.join(attached)} attached again; dropping fallback "
                                f"{', '.join(state.synchronous_extra)} from the quorum")
        return None
    if state.synchronous_extra:
        return None
    missing = [n for n in candidates if n not in attached]
    gone_since = [memory.down_since.get(n) for n in missing]
    if any(t is None or now - t < QUORUM_SHORTAGE_SECONDS for t in gone_since):
        return None
    return WidenQuorum(fallbacks, f"only {len(attached)} of the {policy.quorum} in-region quorum standby(s) "
                                  f"needed are attached ({', '.join(missing)} gone); adding fallback "
                                  f"{', '.join(fallbacks)} so commits continue with zero loss")
