"""Break-glass: promoting without ZooKeeper, and adopting that promotion when ZooKeeper returns.

Pure. :func:`refusal` is what ``drctl dr promote`` checks before it touches anything: a ZooKeeper
majority still serving (then the normal ``drctl failover`` is the way), a target that is not a
reachable standby of the cluster, no ``--accept-data-loss``, or ``--confirm-fenced`` not naming
exactly the lost region(s) (every region holding members other than the target's).

:func:`adoption` is the first rule of the leader's decision once ZooKeeper is back: a break-glass
record not yet adopted makes its target the primary, over anything the returning side recorded
(an operation in progress there is dropped into the history), with a generation above both. The
returning side's old primary then is a stray to :func:`~orchestrator.decisions.decide` and is
fenced, never merged; it rejoins as a standby of the break-glass primary.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.decisions.policy import Policy
from orchestrator.state import (
    BreakGlassRecord,
    ClusterState,
    MemberStatus,
    Operation,
    OperationKind,
    Outcome,
    Role,
    Step,
    StepRecord,
)


@dataclass(frozen=True)
class AdoptBreakGlass:
    record: BreakGlassRecord
    reason: str


def lost_regions(policy: Policy, target: str) -> tuple[str, ...]:
    """Every region holding members of the cluster other than ``target``'s, in member order."""
    region = policy.members[target].region
    return tuple(dict.fromkeys(m.region for m in policy.members.values() if m.region != region))


def refusal(policy: Policy, target: str, *, accept_data_loss: bool, confirm_fenced: Iterable[str],
            serving: int, servers: int, status: MemberStatus | None) -> str | None:
    """Why ``drctl dr promote`` must not run (one line naming the option and the fix), or None."""
    majority = servers // 2 + 1
    if serving >= majority:
        return (f"ZooKeeper has a majority ({serving} of {servers} servers serve): do not break glass; use "
                f"drctl failover {policy.cluster} --to {target} --accept-data-loss")
    if target not in policy.members:
        return (f"--to: {target!r} is not a member of {policy.cluster}; members are "
                f"{', '.join(policy.members)}")
    if not accept_data_loss:
        return ("--accept-data-loss: missing; a break-glass promotion loses whatever the target had not "
                "received: pass it to accept that")
    named = sorted(set(confirm_fenced))
    lost = sorted(lost_regions(policy, target))
    if named != lost:
        return (f"--confirm-fenced: {', '.join(named) or 'nothing'} named, but the region(s) that must be fenced "
                f"before promoting {target} (in {policy.members[target].region}) are {', '.join(lost) or 'none'}; "
                "fence them, then name them")
    if status is None or not status.reachable:
        why = status.error if status is not None else "not probed"
        return f"--to: {target} does not answer ({why}); pick a reachable member"
    if status.role is not Role.STANDBY:
        return f"--to: {target} is not a standby (it is {status.role.value}); nothing to promote"
    return None


def new_record(policy: Policy, target: str, *, confirm_fenced: Iterable[str], at: float, by: str,
               known_generation: int, timeline: int | None, ident: str | None = None) -> BreakGlassRecord:
    regions = ", ".join(sorted(set(confirm_fenced)))
    return BreakGlassRecord(
        id=ident or uuid.uuid4().hex[:12], cluster=policy.cluster, target=target, lost_region=regions, at=at, by=by,
        generation=known_generation + 1, timeline=timeline,
        reason=f"break-glass: no ZooKeeper majority; {by} confirmed {regions} fenced and promoted {target}")


def adoption(state: ClusterState, record: BreakGlassRecord | None) -> AdoptBreakGlass | None:
    """The first rule of the decision: adopt a break-glass promotion not adopted yet."""
    if record is None or record.cluster != state.cluster or record.id in state.break_glass:
        return None
    return AdoptBreakGlass(record, f"break-glass promotion {record.id} of {record.target} (by {record.by}) made "
                                   f"while ZooKeeper had no majority: adopting it over primary {state.primary} of "
                                   f"generation {state.generation}; the returning side is fenced, not merged")


def adopted(state: ClusterState, record: BreakGlassRecord, now: float) -> ClusterState:
    """The state after adopting ``record``: its target primary, a generation above both sides."""
    history = list(state.history)
    if state.operation is not None and state.operation.step is not Step.DONE:
        history.append(state.operation.ended(Outcome.ABORTED, f"superseded by break-glass {record.id}"))
    op = Operation(id=record.id, kind=OperationKind.FAILOVER, source=state.primary, target=record.target,
                   reason=record.reason, started_at=record.at, step=Step.DONE,
                   steps=(StepRecord(step=Step.PROMOTE, at=record.at, detail="break-glass, without ZooKeeper"),
                          StepRecord(step=Step.DONE, at=now, detail="adopted")),
                   accept_data_loss=True, proof="unproven: promoted without ZooKeeper (break-glass)",
                   lost_region=record.lost_region, outcome=Outcome.DONE, outcome_detail="adopted")
    history.append(op)
    return state.model_copy(update={
        "primary": record.target, "generation": max(state.generation + 1, record.generation),
        "timeline": record.timeline if record.timeline is not None else state.timeline,
        "operation": None, "synchronous_extra": (), "last_failover_at": now,
        "history": tuple(history[-50:]), "break_glass": (*state.break_glass, record.id)[-20:]})
