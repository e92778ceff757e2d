"""The replication policy of one cluster as the decisions read it: members, quorum, fallback,
and who confirms a primary's commits (data-centre aware with RPO 0)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
class DrBound:
    """The cluster's DR lag bound (``replication.dr_lag``), as the decisions read it."""

    max_seconds: float
    resume_seconds: float      # hysteresis: the alert clears / the hold ends at or below it
    bounded: bool              # hold commits while over (else alert only)
    hold_when_down: bool       # bounded: keep a DR standby that does not stream in the synchronous set


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
    # The cross-region RPO bound; None: DR lag is not measured.
    dr_bound: DrBound | None = None
    # replication.dr_failover automatic: promote the DR standby once the primary's region is lost.
    dr_automatic: bool = False

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
            dr_bound=None if (dr := cluster.replication.dr_lag) is None else DrBound(
                max_seconds=dr.max_seconds, resume_seconds=dr.resume_seconds, bounded=dr.mode.value == "bounded",
                hold_when_down=dr.when_down.value == "hold"),
            dr_automatic=cluster.replication.dr_failover.value == "automatic",
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

    def dr_members(self, primary: str) -> tuple[str, ...]:
        """``primary``'s DR standbys, in topology order: members in other regions that are not its
        quorum candidates (they stream asynchronously; ``dr_bound`` caps their lag)."""
        member = self.members.get(primary)
        if member is None:
            return ()
        candidates = set(self.quorum_for(primary)[0])
        return tuple(n for n, m in self.members.items()
                     if n != primary and n not in candidates and m.region != member.region)

    def standby_names(self, primary: str, extra: tuple[str, ...] = (), *, hold: str | None = None) -> str:
        """``synchronous_standby_names`` for ``primary``: ``ANY quorum (candidates + extra)``.

        For a home-region primary without extras it equals the rendered configuration file's
        value. Empty only with quorum 0 (asynchronous by policy) and no ``hold``.

        ``hold``: a DR standby that must confirm every commit too (``dr_lag`` bounded mode). One
        setting holds one group, so "ANY q of the candidates AND the DR standby" is written
        ``FIRST q+1 (dr, candidates...)``: the DR standby, listed first, is in the synchronous set
        whenever it streams, and it takes one of the q+1 places, so at least q candidates still
        confirm each commit (the zero-loss proof holds). While it does not stream, q+1 streaming
        candidates stand in, or commits wait. Ignored while fallbacks (``extra``) are in the
        quorum: they already confirm across regions whenever the in-region quorum is short.
        """
        candidates, _ = self.quorum_for(primary)
        if hold is not None and not extra:
            names = (hold, *(c for c in candidates if c != hold))
            quoted = ", ".join('"' + name + '"' for name in names)
            return f"FIRST {self.quorum + 1} ({quoted})"
        if self.quorum == 0:
            return ""
        names = (*candidates, *(e for e in extra if e not in candidates))
        quoted = ", ".join('"' + name + '"' for name in names)
        return f"ANY {self.quorum} ({quoted})"
