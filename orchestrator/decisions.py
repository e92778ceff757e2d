"""Where failover is decided: pure functions over a probe snapshot and the persisted state.

Nothing here does I/O, reads a clock or sleeps: the controller passes ``now`` in, gets a
typed :class:`Decision` back (each carries its ``reason``), and executes it. Rules:

* **Act only with a sure lease** (:func:`may_act`): a controller whose ZooKeeper session
  is in doubt, or that is not the leader of the current epoch, does nothing.
* **Holistic detection** (:func:`assess_primary`): the primary is failed only after
  ``failure_threshold`` consecutive failed probes AND no reachable standby still streams
  from it. A controller cut off from a healthy primary sees standbys streaming and waits.
* **Candidate choice** (:func:`choose_candidate`): a reachable synchronous-quorum standby,
  most advanced received WAL first, then same region as the old primary, then priority;
  never ``never_promote``; never an asynchronous member unless an operator accepts loss.
  Zero loss is *provable* only if enough quorum candidates are reachable that at least
  one of them confirmed every acknowledged commit.
* **Data-centre-aware quorum** (:meth:`Policy.quorum_for`): with RPO 0 only members outside
  the primary's data centre confirm its commits, so losing any one data centre leaves every
  quorum candidate of the primary it held, and the proof goes through.
* **Never an unproven automatic failover** (:func:`decide`): without proof the decision is
  Blocked and names the operator's ``--accept-data-loss`` command; what such a promotion
  risks is :func:`wal_at_risk`, and a catch-up that did not finish is judged by
  :func:`after_catch_up`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator.state import ClusterSnapshot, ClusterState, MemberStatus, Operation, OperationKind, Role, Step
from orchestrator.topology import Cluster, Topology

# ---- policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberPolicy:
    name: str
    datacenter: str
    region: str
    endpoint: str          # "address:port", as standbys report their upstream
    synchronous: bool
    priority: int
    never_promote: bool


@dataclass(frozen=True)
class Policy:
    cluster: str
    members: Mapping[str, MemberPolicy]
    quorum: int
    failure_threshold: int
    anti_flap_seconds: float
    rejoin_delay_seconds: float
    fallback: tuple[str, ...] = ()
    # The configured quorum candidates in topology order, and the region they (and the
    # initial primary) live in: a primary elsewhere gets its quorum from its own region.
    synchronous_order: tuple[str, ...] = ()
    home_region: str = ""
    # RPO 0: only members outside the primary's data centre confirm its commits.
    outside_datacenter: bool = False

    @classmethod
    def from_topology(cls, topology: Topology, cluster: Cluster) -> Policy:
        sync = set(topology.synchronous_members(cluster))
        members = {
            m.name: MemberPolicy(
                name=m.name,
                datacenter=m.datacenter,
                region=topology.region_of(m.datacenter),
                endpoint=f"{topology.member_address(m)}:{topology.member_port(cluster, m)}",
                synchronous=m.name in sync,
                priority=m.priority,
                never_promote=m.never_promote,
            )
            for m in cluster.members
        }
        return cls(
            cluster=cluster.name,
            members=members,
            quorum=cluster.replication.quorum,
            failure_threshold=topology.controller.failure_threshold,
            anti_flap_seconds=topology.controller.anti_flap_seconds,
            rejoin_delay_seconds=topology.controller.rejoin_delay_seconds,
            fallback=cluster.replication.fallback,
            synchronous_order=topology.synchronous_members(cluster),
            home_region=topology.region_of(cluster.initial_primary.datacenter),
            outside_datacenter=cluster.targets.rpo_seconds == 0,
        )

    def _confirming(self, primary: str, names: tuple[str, ...]) -> tuple[str, ...]:
        """``names`` whose confirmation counts for ``primary``: with :attr:`outside_datacenter`,
        those outside its data centre (the primary itself included among the dropped)."""
        member = self.members.get(primary)
        if not self.outside_datacenter or member is None:
            return names
        return tuple(n for n in names if n in self.members and self.members[n].datacenter != member.datacenter)

    def quorum_for(self, primary: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Who confirms ``primary``'s commits: (quorum candidates, fallback), in topology order.

        A primary in the home region has the configured ``synchronous`` members and
        ``fallback``. A primary in another region (a planned switchover to the DR site) has
        the members of its own region, with every other member as fallback; when its region
        alone cannot make the quorum, every member is a candidate from the first commit, so
        that commit neither waits for a widening nor goes unconfirmed.

        With :attr:`outside_datacenter` (RPO 0) both lists keep only members outside the
        primary's data centre: members beside it still stream, asynchronously. Without it
        the primary itself is listed too: a server never counts itself.
        """
        member = self.members.get(primary)
        if member is None or not self.home_region or member.region == self.home_region:
            order = self.synchronous_order or tuple(n for n, m in self.members.items() if m.synchronous)
            return self._confirming(primary, order), self._confirming(primary, tuple(f for f in self.fallback
                                                                                     if f != primary))
        names = tuple(self.members)
        region = self._confirming(primary, tuple(n for n in names if self.members[n].region == member.region))
        if len([n for n in region if n != primary]) >= self.quorum:
            return region, self._confirming(primary, tuple(n for n in names if n not in region))
        return self._confirming(primary, names), ()

    def quorum_members(self, extra: tuple[str, ...] = (), *, primary: str | None = None) -> frozenset[str]:
        """Members whose confirmation counts for ``primary``'s commits (the home quorum by
        default), plus fallbacks in use."""
        if primary is None:
            base = frozenset(n for n, m in self.members.items() if m.synchronous)
        else:
            base = frozenset(self.quorum_for(primary)[0])
        return base | frozenset(extra)

    def standby_names(self, primary: str, extra: tuple[str, ...] = ()) -> str:
        """``synchronous_standby_names`` for ``primary``: ``ANY quorum (candidates + extra)``.

        For a home-region primary without extras it equals the rendered configuration file's
        value. Empty only with quorum 0 (asynchronous by policy).
        """
        if self.quorum == 0:
            return ""
        candidates, _ = self.quorum_for(primary)
        names = (*candidates, *(e for e in extra if e not in candidates))
        quoted = ", ".join('"' + name + '"' for name in names)
        return f"ANY {self.quorum} ({quoted})"


# ---- the lease -------------------------------------------------------------------------------


class SessionState(StrEnum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


def may_act(session: SessionState, is_leader: bool, lease_epoch: int | None, current_epoch: int | None) -> bool:
    """Only a connected leader holding the newest epoch acts; in doubt, do nothing."""
    return (
        session is SessionState.CONNECTED
        and is_leader
        and lease_epoch is not None
        and lease_epoch == current_epoch
    )


def should_yield(my_datacenter: str, primary_datacenters: frozenset[str], contender_datacenters: list[str],
                 all_idle: bool) -> bool:
    """Should a calm leader hand over to a controller outside the primaries' data centres?

    A disaster that takes the primary's data centre must not take the decider with it:
    the survivors would first wait for the dead leader's ZooKeeper session to expire.
    """
    return (
        all_idle
        and my_datacenter in primary_datacenters
        and any(dc not in primary_datacenters for dc in contender_datacenters)
    )


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


def _eligible(status: MemberStatus, policy: Policy, exclude: str, allow_async: bool, quorum: frozenset[str]
              ) -> bool:
    member = policy.members.get(status.name)
    return (
        member is not None
        and status.name != exclude
        and status.reachable
        and status.role is Role.STANDBY
        and status.wal_lsn is not None
        and not member.never_promote
        and (status.name in quorum or allow_async)
    )


def choose_candidate(
    snapshot: ClusterSnapshot,
    policy: Policy,
    old_primary: str,
    *,
    target: str | None = None,
    allow_async: bool = False,
    extra_synchronous: tuple[str, ...] = (),
) -> Candidate | Refusal:
    """The best member to promote, or why there is none.

    Among eligible members: the most advanced received WAL wins, then the old primary's
    region, then the higher priority, then the name (so the choice is deterministic).
    ``extra_synchronous``: fallback members currently in the quorum (they may hold
    acknowledged commits, so they count like quorum candidates).
    """
    quorum = policy.quorum_members(extra_synchronous, primary=old_primary)
    statuses = list(snapshot.members.values())
    eligible = [s for s in statuses if _eligible(s, policy, old_primary, allow_async, quorum)]
    if target is not None:
        if target not in policy.members:
            return Refusal(f"{target!r} is not a member of {policy.cluster}")
        eligible = [s for s in eligible if s.name == target]
        if not eligible:
            why = "it is asynchronous (pass --accept-data-loss)" if target not in quorum \
                and not allow_async else "it is unreachable, not a standby, or never_promote"
            return Refusal(f"cannot promote {target}: {why}")
    if not eligible:
        return Refusal(f"no reachable synchronous standby of {policy.cluster} can be promoted")
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


Decision = Idle | Wait | Blocked | Failover | Resume | FenceStray | Repoint | Rejoin | WidenQuorum | NarrowQuorum

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
) -> Decision:
    """One controller cycle's decision for one cluster.

    ``agents``: the registered node agents, read when the primary is not answering (None when
    not read: nothing but a refused connection then proves the primary stopped).
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
    return _tend_standbys(snapshot, state, policy, memory, now, rejoining)


def _on_failure(snapshot: ClusterSnapshot, state: ClusterState, policy: Policy, now: float, why: str,
                agents: Mapping[str, AgentView]) -> Decision:
    if state.paused:
        return Blocked(f"{why}; automatic failover is paused (drctl resume {policy.cluster})")
    if state.last_failover_at is not None and now - state.last_failover_at < policy.anti_flap_seconds:
        ago = now - state.last_failover_at
        return Blocked(f"{why}; last failover {ago:.0f}s ago, within the {policy.anti_flap_seconds:.0f}s "
                       f"anti-flap period (force with drctl failover {policy.cluster} --to MEMBER)")
    choice = choose_candidate(snapshot, policy, state.primary, extra_synchronous=state.synchronous_extra)
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
                   rejoining: frozenset[str]) -> Decision:
    quorum_change = _quorum_change(snapshot, state, policy, memory, now)
    if quorum_change is not None:
        return quorum_change
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


# ---- steering an operation: resume, re-plan, roll back, abort --------------------------------

# A switchover whose target cannot be promoted gives up and rolls back once this long has
# passed since it started: the old primary's writes are stopped meanwhile (an outage).
SWITCHOVER_DEADLINE_SECONDS = 10.0


@dataclass(frozen=True)
class Proceed:
    """Carry on from the recorded step with the same target."""

    reason: str


@dataclass(frozen=True)
class Replanned:
    """Promote ``target`` instead: the recorded target cannot be promoted."""

    target: str
    proven: bool
    reason: str
    proof: str = ""   # why the new target holds every acknowledged commit (recorded with the operation)


@dataclass(frozen=True)
class RollBack:
    """A switchover ends without promotion: the old primary takes writes again."""

    reason: str


@dataclass(frozen=True)
class Hold:
    """Nothing can be done this round; the operation stays recorded and is reconsidered."""

    reason: str


ResumePlan = Proceed | Replanned | RollBack | Hold


def _promotion_recorded(op: Operation) -> bool:
    return op.step in (Step.PROMOTE, Step.REPOINT, Step.DONE)


def _new_timeline_seen(snapshot: ClusterSnapshot, target: str, source_timeline: int | None) -> bool:
    """Does a reachable member other than ``target`` report a timeline newer than the source's?

    A promoted target acknowledges a commit only once a standby confirmed it, and a standby
    that received the new timeline's WAL reports that timeline: none seen means the target,
    promoted or not, acknowledged nothing.
    """
    if source_timeline is None:
        return True  # unknown: assume the worst
    return any(s.reachable and s.timeline is not None and s.timeline > source_timeline
               for n, s in snapshot.members.items() if n != target)


def plan_resume(op: Operation, snapshot: ClusterSnapshot, policy: Policy, now: float, *,
                source_timeline: int | None, extra_synchronous: tuple[str, ...] = ()) -> ResumePlan:
    """What to do with a recorded operation, given a fresh probe of its members.

    * Promotion recorded: finish it (re-point, done), whatever became of the target since; the
      new primary's failure is a new failover.
    * The target answers (standby, or primary already): proceed; promoting a primary is a no-op.
    * The target is unreachable and its promotion was never started: a failover re-plans with
      the next eligible candidate (:func:`replan`); a switchover waits for it until
      :data:`SWITCHOVER_DEADLINE_SECONDS` after its start, then rolls back.
    * Its promotion was started (it may be primary): a switchover rolls back only if no
      survivor reports a newer timeline (so the target acknowledged nothing); otherwise, and
      for a failover, re-plan.
    """
    if _promotion_recorded(op):
        return Proceed(f"{op.target}'s promotion is recorded; finishing {op.kind} {op.id}")
    target = snapshot.members.get(op.target)
    if target is not None and target.reachable and target.role in (Role.STANDBY, Role.PRIMARY):
        return Proceed(f"{op.target} answers as {target.role.value}; resuming {op.kind} {op.id}")
    gone = f"{op.target} is unreachable ({target.error if target is not None and target.error else 'no answer'})"
    if op.kind is OperationKind.SWITCHOVER:
        if op.running is not Step.PROMOTE:
            deadline = op.started_at + SWITCHOVER_DEADLINE_SECONDS
            if now >= deadline:
                return RollBack(f"{gone} and the switchover's {SWITCHOVER_DEADLINE_SECONDS:.0f}s deadline passed; "
                                f"rolling back: {op.source} takes writes again")
            # One wording per operation (no countdown): the cycle logs a hold once per reason.
            return Hold(f"{gone}; switchover {op.id} rolls back once its {SWITCHOVER_DEADLINE_SECONDS:.0f}s "
                        f"deadline passes unless {op.target} returns (drctl abort {policy.cluster} rolls back now)")
        if not _new_timeline_seen(snapshot, op.target, source_timeline):
            return RollBack(f"{gone} after its promotion started, and no member reports a newer timeline, so it "
                            f"acknowledged nothing; rolling back: {op.source} takes writes again")
    return replan(op, snapshot, policy, why=gone, extra_synchronous=extra_synchronous)


def replan(op: Operation, snapshot: ClusterSnapshot, policy: Policy, *, why: str,
           extra_synchronous: tuple[str, ...] = ()) -> Replanned | Hold:
    """The next eligible candidate for ``op``, whose target cannot be promoted, or why none.

    The same choice as an automatic failover (:func:`choose_candidate`, from the old primary,
    never the unreachable target); an operator's accepted data loss is not carried over to
    another member, and an unproven choice is never made automatically.
    """
    choice = choose_candidate(snapshot, policy, op.source, extra_synchronous=extra_synchronous)
    if isinstance(choice, Refusal):
        return Hold(f"{why}; no other candidate: {choice.reason} (drctl abort {policy.cluster} ends {op.kind} {op.id})")
    if choice.name == op.target:
        return Hold(f"{why}; {op.target} is still the best candidate")
    if not choice.proven:
        return Hold(f"{why}; {choice.reason}; not re-planning to an unproven candidate "
                    f"(drctl abort {policy.cluster}, then drctl failover {policy.cluster} --to {choice.name} "
                    "--accept-data-loss)")
    return Replanned(choice.name, choice.proven, f"{why}; re-planned to {choice.name}: {choice.reason}",
                     choice.proof)


@dataclass(frozen=True)
class Abort:
    """End ``op`` now: a switchover rolls back, a failover is dropped."""

    roll_back: bool
    reason: str


def plan_abort(op: Operation | None, snapshot: ClusterSnapshot, cluster: str, *, by: str, why: str
               ) -> Abort | Refusal:
    """May an operator end ``op`` now (``drctl abort``)? Only before its target can be primary.

    Once the promotion is recorded, or started with the target answering, the target is (or
    is becoming) the primary: refused, the operation finishes. A switchover whose promotion
    started is refused too: re-plan or roll-back decide it from the timelines. A failover whose
    promotion started while its target is unreachable may be dropped: like a re-plan, whoever
    is promoted next makes that target a stray, and it acknowledged nothing without a standby.
    """
    if op is None:
        return Refusal(f"no operation is in progress on {cluster}; nothing to abort")
    who = f"aborted by {by}" + (f": {why}" if why else "")
    if _promotion_recorded(op):
        return Refusal(f"{op.kind} {op.id} already promoted {op.target}: it is the primary; the operation finishes")
    target = snapshot.members.get(op.target)
    if op.running is Step.PROMOTE:
        if op.kind is OperationKind.SWITCHOVER or (target is not None and target.reachable):
            return Refusal(f"{op.kind} {op.id} has started promoting {op.target}: it is primary or becoming it; "
                           "the operation finishes")
        return Abort(False, f"{op.kind} {op.id} dropped ({op.target} unreachable mid-promotion), {who}")
    if op.kind is OperationKind.SWITCHOVER:
        return Abort(True, f"switchover {op.id} rolled back before promotion, {who}; {op.source} takes writes again")
    return Abort(False, f"failover {op.id} to {op.target} dropped before promotion, {who}")
