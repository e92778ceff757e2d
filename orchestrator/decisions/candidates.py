"""Candidate choice and its zero-loss proof, planned switchover, catch-up and WAL at risk."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.decisions.detection import AgentView
from orchestrator.decisions.policy import Policy
from orchestrator.state import ClusterSnapshot, ClusterState, MemberStatus, Operation, OperationKind, Role

# ---- candidate choice ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    wal_lsn: int
    proven: bool           # enough quorum members seen to know it holds every acknowledged commit
    reason: str
    proof: str = ""        # why it is proven, or why not: recorded with the operation


@dataclass(frozen=True)
class Refusal:
    reason: str


def agent_lapsed(name: str, agents: Mapping[str, AgentView] | None) -> bool:
    """``name`` runs a registered node agent whose ZooKeeper session is gone.

    Such an agent fences its member as soon as it sees it primary without a lease (or was
    stopped, and nothing would fence the member if it were later isolated): promoting it buys
    an outage, not an end to one. Unregistered members (no agent deployed) and an unread agent
    directory (``None``) lapse nothing.
    """
    view = agents.get(name) if agents is not None else None
    return view is not None and not view.live


def _eligible(status: MemberStatus, policy: Policy, exclude: str, allow_async: bool, quorum: frozenset[str],
              agents: Mapping[str, AgentView] | None) -> bool:
    member = policy.members.get(status.name)
    return (
        member is not None
        and status.name != exclude
        and status.reachable
        and status.role is Role.STANDBY
        and status.wal_lsn is not None
        and not member.never_promote
        and (status.name in quorum or allow_async)
        and not agent_lapsed(status.name, agents)
    )


def choose_candidate(
    snapshot: ClusterSnapshot,
    policy: Policy,
    old_primary: str,
    *,
    target: str | None = None,
    allow_async: bool = False,
    extra_synchronous: tuple[str, ...] = (),
    agents: Mapping[str, AgentView] | None = None,
) -> Candidate | Refusal:
    """The best member to promote, or why there is none.

    Among eligible members: the most advanced received WAL wins, then the old primary's
    region, then the higher priority, then the name (so the choice is deterministic).
    ``extra_synchronous``: fallback members currently in the quorum (they may hold
    acknowledged commits, so they count like quorum candidates). ``agents``: the registered
    node agents as read now; a member whose agent lapsed is never chosen (:func:`agent_lapsed`).
    """
    quorum = policy.quorum_members(extra_synchronous, primary=old_primary)
    statuses = list(snapshot.members.values())
    eligible = [s for s in statuses if _eligible(s, policy, old_primary, allow_async, quorum, agents)]
    if target is not None:
        if target not in policy.members:
            return Refusal(f"{target!r} is not a member of {policy.cluster}")
        eligible = [s for s in eligible if s.name == target]
        if not eligible:
            if target not in quorum and not allow_async:
                why = "it is asynchronous (pass --accept-data-loss)"
            elif agent_lapsed(target, agents):
                why = "its node agent holds no ZooKeeper session (start the agent, or wait for it to reconnect)"
            else:
                why = "it is unreachable, not a standby, or never_promote"
            return Refusal(f"cannot promote {target}: {why}")
    if not eligible:
        lapsed = sorted(s.name for s in statuses if s.reachable and agent_lapsed(s.name, agents))
        return Refusal(f"no reachable synchronous standby of {policy.cluster} can be promoted"
                       + (f" ({', '.join(lapsed)}: node agent without a ZooKeeper session)" if lapsed else ""))
    old_region = policy.members[old_primary].region if old_primary in policy.members else ""

    def rank(status: MemberStatus) -> tuple[int, int, int, int, str]:
        member = policy.members[status.name]
        return (
            int(status.name in quorum),
            status.wal_lsn or 0,
            int(member.region == old_region),
            member.priority,
            "".join(chr(0x10FFFF - ord(c)) for c in status.name),  # earlier name wins ties
        )

    best = max(eligible, key=rank)
    proven, proof = _proof(snapshot, policy, old_primary, quorum, best)
    reason = (f"{best.name} has the most advanced WAL ({best.wal_lsn}) of "
              f"{', '.join(sorted(s.name for s in eligible))}"
              + ("" if proven else f"; zero loss NOT provable: {proof}"))
    return Candidate(best.name, best.wal_lsn or 0, proven, reason, proof)


def _proof(snapshot: ClusterSnapshot, policy: Policy, old_primary: str, quorum: frozenset[str],
           best: MemberStatus) -> tuple[bool, str]:
    """Does ``best`` hold every commit ``old_primary`` acknowledged? (proven, why or why not).

    With ANY q of n standby candidates, every acknowledged commit is on at least q of them;
    seeing n - q + 1 of them guarantees one holds everything, so a member with at least the
    WAL of each of them does too.
    """
    sync_standbys = sorted(n for n in quorum if n != old_primary)
    seen = sorted((s for s in snapshot.members.values() if s.name != old_primary and s.name in quorum
                   and s.reachable and s.role is Role.STANDBY and s.wal_lsn is not None), key=lambda s: s.name)
    needed = max(len(sync_standbys) - policy.quorum + 1, 1)
    of = f"{len(seen)} of the {len(sync_standbys)} quorum standby(s) of {old_primary} ({', '.join(sync_standbys)})"
    if policy.quorum == 0:
        return False, "replication is asynchronous (quorum 0): no commit waited for a standby"
    old = snapshot.members.get(old_primary)
    if old is not None and old.reachable and old.role is Role.PRIMARY:
        return False, (f"{old_primary} still accepts writes, and a commit it acknowledges before it is stopped "
                       f"may be on another quorum member only; use a switchover to move it without loss")
    if len(seen) < needed:
        return False, (f"only {of} seen, {needed} needed to know one of them holds every acknowledged commit "
                       f"(ANY {policy.quorum})")
    ahead = max(seen, key=lambda s: s.wal_lsn or 0)
    if (best.wal_lsn or 0) < (ahead.wal_lsn or 0):
        return False, (f"{best.name} is {(ahead.wal_lsn or 0) - (best.wal_lsn or 0)} bytes of WAL behind "
                       f"{ahead.name}, which may hold acknowledged commits")
    return True, (f"{of} seen ({needed} needed for ANY {policy.quorum}), so one holds every acknowledged commit; "
                  f"{best.name} has at least the WAL of each")


# ---- planned switchover ----------------------------------------------------------------------


def switchover_refusal(policy: Policy, primary: str | None, target: str) -> str | None:
    """Why a planned switchover to ``target`` can never run, or None (no snapshot needed).

    Any standby may take over, cross-region included: a switchover waits until the target
    holds every WAL record of the old primary, so it is lossless whatever the target's
    replication mode. It can never run when the target is unknown, is the primary, is
    ``never_promote``, or has too few members to make its quorum (its commits would wait
    forever).
    """
    member = policy.members.get(target)
    if member is None:
        return f"{target!r} is not a member of {policy.cluster}; use one of {', '.join(policy.members)}"
    if target == primary:
        return f"{target} is already the primary; switch over to a standby"
    if member.never_promote:
        return f"cannot promote {target}: it is never_promote"
    confirmers = _confirmers(policy, target)
    if len(confirmers) < policy.quorum:
        return (f"cannot switch over to {target}: its quorum needs {policy.quorum} confirming standby(s) but "
                f"only {len(confirmers)} member(s) can confirm ({', '.join(confirmers) or 'none'})")
    return None


def _confirmers(policy: Policy, primary: str) -> list[str]:
    candidates, fallback = policy.quorum_for(primary)
    return [n for n in (*candidates, *fallback) if n != primary]


def plan_switchover(snapshot: ClusterSnapshot, policy: Policy, primary: str, target: str) -> Candidate | Refusal:
    """The target of a planned switchover from ``primary``, or why not now.

    Besides :func:`switchover_refusal`: the primary must be healthy (else it is a failover),
    the target a reachable standby, and enough members able to confirm the target's first
    commits; the old primary counts, as it rejoins as a standby at once.
    """
    why = switchover_refusal(policy, primary, target)
    if why is not None:
        return Refusal(why)
    old = snapshot.members.get(primary)
    if old is None or not (old.reachable and old.role is Role.PRIMARY):
        return Refusal(f"{primary} is not a healthy primary; use failover")
    new = snapshot.members.get(target)
    if new is None or not (new.reachable and new.role is Role.STANDBY) or new.wal_lsn is None:
        return Refusal(f"cannot promote {target}: it is unreachable or not a standby")
    ready = [n for n in _confirmers(policy, target)
             if n == primary or ((s := snapshot.members.get(n)) is not None and s.reachable
                                 and s.role is Role.STANDBY)]
    if len(ready) < policy.quorum:
        return Refusal(f"cannot switch over to {target}: its quorum needs {policy.quorum} confirming standby(s) "
                       f"and only {', '.join(ready) or 'none'} can confirm now; its commits would wait")
    return Candidate(target, new.wal_lsn, True, f"planned switchover to {target}: it waits for every WAL record "
                                                 f"of {primary}; {target}'s commits wait for ANY {policy.quorum} "
                                                 f"of {', '.join(_confirmers(policy, target))}",
                     f"planned switchover: {primary} stops writes and {target} is promoted only once it holds "
                     f"every WAL record {primary} wrote")


def finished(state: ClusterState, op: Operation, now: float) -> ClusterState:
    """The state once ``op`` is done: in the history, no operation in progress.

    Only a failover starts the anti-flap period: it guards against a recurring fault
    bouncing the primary, and a planned switchover is no fault. Arming it there blocked
    the automatic failover of a primary that crashed within anti_flap_seconds after a
    switchover (an outage of up to that period).
    """
    update: dict[str, object] = {"operation": None, "history": (*state.history, op)[-20:]}
    if op.kind is OperationKind.FAILOVER:
        update["last_failover_at"] = now
    return state.model_copy(update=update)


def wal_at_risk(state: ClusterState, snapshot: ClusterSnapshot, source: str, target_lsn: int) -> int | None:
    """Bytes of WAL the old primary was last known to hold beyond the target's position.

    The last known position is the highest of what this probe saw (if it still answers) and
    what the leader last published in the cluster state. It is a lower bound: the published
    one may be a second old. None when no position of the old primary is known. Only an
    unproven promotion risks it; a proven one holds every acknowledged commit of it.
    """
    status, record = snapshot.members.get(source), state.members.get(source)
    seen = status.wal_lsn if status is not None and status.reachable else None
    published = record.wal_lsn if record is not None else None
    known = [lsn for lsn in (seen, published) if lsn is not None]
    return max(max(known) - target_lsn, 0) if known else None


def fallback_from_first_commit(snapshot: ClusterSnapshot, policy: Policy, target: str, old_primary: str
                               ) -> tuple[str, ...]:
    """The fallback members a failover's ``target`` needs in its quorum from its first commit.

    When fewer than ``quorum`` of its own quorum candidates are standbys that can attach to it
    (reachable, and not the failed old primary), its first commits would wait for a
    :class:`WidenQuorum` round (:data:`QUORUM_SHORTAGE_SECONDS` and a cycle): in the lab, dc1-a
    promoted after dc2-a died, or dc2-a after dc1 was lost. Its fallbacks then go in at once.
    Like any widening they are recorded in the cluster state before they can confirm a commit.
    """
    base, fallback = policy.quorum_for(target)
    if policy.quorum == 0 or not fallback:
        return ()
    ready = [n for n in base if n not in (target, old_primary) and (s := snapshot.members.get(n)) is not None
             and s.reachable and s.role is Role.STANDBY]
    return fallback if len(ready) < policy.quorum else ()


# How long the target may take to stream what a more advanced survivor holds before promoting.
CATCH_UP_SECONDS = 3.0


@dataclass(frozen=True)
class CatchUp:
    """What to do once the target's catch-up (see :func:`catch_up_source`) ended."""

    promote: bool
    detail: str   # recorded in the operation's promote step


def after_catch_up(*, target: str, source: str, wanted: int, reached: int, source_in_quorum: bool, proven: bool,
                   accept_data_loss: bool, waited: float) -> CatchUp:
    """Promote ``target`` after catching up from ``source`` (or trying to), or hold the operation.

    * Caught up (``reached >= wanted``): promote; nothing any survivor received is lost.
    * Not caught up, zero loss proven and ``source`` outside the old primary's quorum: its
      extra WAL was confirmed by no quorum member, so no commit in it was acknowledged.
      Promote; the bytes left behind are recorded, and ``source`` is rewound when it rejoins.
    * Not caught up, an operator accepted data loss: promote, recording the bytes left behind.
    * Otherwise (the source may hold acknowledged commits, or the target's zero loss is not
      proven): never promote automatically; hold, and say how to force it.
    """
    short = max(wanted - reached, 0)
    if short == 0:
        return CatchUp(True, f"caught up from {source} to {wanted}")
    stopped = f"catch-up from {source} stopped {short} bytes short after {waited:.1f}s"
    if proven and not source_in_quorum:
        return CatchUp(True, f"{stopped}; {source} is not in the old primary's quorum, so no commit in those "
                             "bytes was acknowledged: zero loss still proven, and it is rewound when it rejoins")
    if accept_data_loss:
        return CatchUp(True, f"{stopped}; promoting anyway: the operator accepted data loss")
    why = (f"{source} is in the old primary's quorum and may hold acknowledged commits {target} lacks"
           if source_in_quorum else f"zero loss is not proven for {target}")
    return CatchUp(False, f"{stopped}; not promoting {target}: {why} (retry, or force with "
                          f"drctl failover CLUSTER --to {target} --accept-data-loss)")


def catch_up_source(snapshot: ClusterSnapshot, target: str, exclude: str) -> str | None:
    """A reachable standby holding more WAL than ``target`` (the most advanced), or None.

    The target streams from it before promotion, so nothing any survivor received is lost
    and no survivor is left on a diverged timeline (MHA's "catch up from the latest slave").
    """
    mine = snapshot.members[target].wal_lsn or 0 if target in snapshot.members else 0
    ahead = [s for s in snapshot.members.values()
             if s.name not in (target, exclude) and s.reachable and s.role is Role.STANDBY
             and (s.wal_lsn or 0) > mine]
    return max(ahead, key=lambda s: (s.wal_lsn or 0, s.name)).name if ahead else None
