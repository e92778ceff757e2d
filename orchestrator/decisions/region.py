"""Region loss: is the primary's whole region gone, and may the leader promote the DR standby?

Pure. :func:`region_loss` judges a snapshot plus the node agents' views: the region is lost
when every member in it is unreachable and acknowledges nothing provably — its registered
agent's session is gone (the agent fenced its member before the session could expire, see
``agent.rules``), or, for a member without an agent, its host refuses connections. A region
merely cut off from this controller keeps its agents' sessions only if it still reaches a
ZooKeeper majority; then it is not lost, and nothing is promoted.

:func:`dr_failover` is the rule the decision table applies under ``replication.dr_failover:
automatic`` when no zero-loss candidate exists: promote the most advanced reachable DR standby
outside the lost region, accepting the loss, and say how much (the DR lag last measured before
the loss: the data-loss window). Under ``manual`` the table stays Blocked and names the
operator's command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.decisions.candidates import Refusal, choose_candidate
from orchestrator.decisions.detection import AgentView
from orchestrator.decisions.policy import Policy
from orchestrator.state import ClusterSnapshot, ClusterState


@dataclass(frozen=True)
class RegionLoss:
    region: str
    lost: bool
    reason: str


@dataclass(frozen=True)
class DrPromotion:
    """Promote ``target`` (a DR standby) because ``region`` is lost; ``window_s``: the DR lag at loss."""

    target: str
    region: str
    window_s: float | None
    wal_lsn: int
    reason: str


def region_loss(snapshot: ClusterSnapshot, policy: Policy, primary: str,
                agents: Mapping[str, AgentView]) -> RegionLoss:
    """Whether ``primary``'s region is lost: every member there unreachable and provably silent."""
    member = policy.members.get(primary)
    if member is None:
        return RegionLoss("", False, f"{primary} is not a member of {policy.cluster}")
    region = member.region
    names = [n for n, m in policy.members.items() if m.region == region]
    for name in names:
        status = snapshot.members.get(name)
        if status is not None and status.reachable:
            return RegionLoss(region, False, f"{name} in region {region} still answers")
        view = agents.get(name)
        if view is not None:
            if view.live:
                return RegionLoss(region, False, f"{name}'s agent in region {region} still holds its ZooKeeper "
                                                 "session (a partition, not a loss)")
        elif status is None or not status.refused:
            return RegionLoss(region, False, f"{name} in region {region} has no agent and its host does not "
                                             "refuse connections: nothing proves it acknowledges nothing")
    return RegionLoss(region, True, f"region {region} lost: {', '.join(names)} unreachable and their agents' "
                                    "sessions expired (or their hosts refuse connections)")


def dr_lag_at_loss(state: ClusterState, target: str) -> float | None:
    """The DR standby's receive lag as last published before the loss (None: not measured)."""
    if state.dr_lag is None:
        return None
    reading = state.dr_lag.members.get(target)
    return reading.receive_lag_s if reading is not None else state.dr_lag.lag_seconds


def dr_failover(snapshot: ClusterSnapshot, state: ClusterState, policy: Policy,
                agents: Mapping[str, AgentView]) -> DrPromotion | Refusal:
    """Under ``dr_failover: automatic``: the DR standby to promote after a confirmed region loss, or why not."""
    if not policy.dr_automatic:
        return Refusal("replication.dr_failover is manual")
    loss = region_loss(snapshot, policy, state.primary, agents)
    if not loss.lost:
        return Refusal(f"no region loss confirmed ({loss.reason})")
    lost = loss.region
    survivors = ClusterSnapshot(snapshot.cluster, {n: s for n, s in snapshot.members.items()
                                                   if n in policy.members and policy.members[n].region != lost},
                                snapshot.taken_at)
    choice = choose_candidate(survivors, policy, state.primary, allow_async=True,
                              extra_synchronous=state.synchronous_extra)
    if isinstance(choice, Refusal):
        return Refusal(f"{loss.reason}, but {choice.reason}")
    window = dr_lag_at_loss(state, choice.name)
    said = "unknown" if window is None else f"{window:.2f}s"
    return DrPromotion(choice.name, lost, window, choice.wal_lsn,
                       f"{loss.reason}; promoting DR standby {choice.name} (dr_failover automatic), accepting "
                       f"the loss of up to the DR lag at loss ({said})")
