"""Zero loss you can prove: the data-centre-aware quorum, the proof over any one data centre's
loss, the WAL an unproven promotion puts at risk, and what to do when a catch-up did not finish.
Pure, no I/O."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import decisions as d
from orchestrator.errors import TopologyError
from orchestrator.state import ClusterSnapshot, ClusterState, Health, MemberRecord, MemberStatus, Role
from orchestrator.topology import Topology, parse_topology

EAST = ("e1", "e2", "e3")


def _standby(name: str, lsn: int) -> MemberStatus:
    return MemberStatus(name, Health.HEALTHY, Role.STANDBY, timeline=1, wal_lsn=lsn, streaming=False)


def _down(name: str) -> MemberStatus:
    return MemberStatus(name, Health.UNREACHABLE, error="connection refused", refused=True)


@st.composite
def rpo_zero_topologies(draw: st.DrawFn) -> dict[str, Any]:
    """Two regions (east: up to three data centres, west: one), 2-6 members, the primary in e1,
    quorum 1-2, an explicit or default synchronous list and some fallbacks: valid or not."""
    count = draw(st.integers(2, 6))
    dcs = ["e1", *draw(st.lists(st.sampled_from([*EAST, "w1"]), min_size=count - 1, max_size=count - 1))]
    members = [{"name": f"m{i}-{dc}", "datacenter": dc, **({"role": "primary"} if i == 0 else {})}
               for i, dc in enumerate(dcs)]
    east = [m["name"] for m in members if m["datacenter"] in EAST]
    replication: dict[str, Any] = {"quorum": draw(st.integers(1, 2))}
    if draw(st.booleans()):
        others = draw(st.lists(st.sampled_from(east[1:]), unique=True)) if len(east) > 1 else []
        replication["synchronous"] = [east[0], *others]
    sync = replication.get("synchronous", east)
    rest = [m["name"] for m in members if m["name"] not in sync]
    replication["fallback"] = draw(st.lists(st.sampled_from(rest), unique=True)) if rest else []
    return {
        "name": "prop",
        "regions": [{"name": "east", "datacenters": [{"name": dc} for dc in EAST]},
                    {"name": "west", "datacenters": [{"name": "w1"}]}],
        "ports": {"base": 20000, "span": 60},
        "zookeeper": {"datacenters": ["e1", "e2", "w1"]},
        "clusters": [{"name": "c", "members": members, "replication": replication, "targets": {"rpo_seconds": 0}}],
    }


def _may_lead(topo: Topology) -> list[str]:
    cluster = topo.clusters[0]
    sync = topo.synchronous_members(cluster)
    return list(dict.fromkeys([cluster.initial_primary.name,
                               *(n for n in sync if not cluster.member(n).never_promote)]))


@given(rpo_zero_topologies(), st.data())
def test_a_valid_rpo_zero_policy_proves_zero_loss_whichever_data_centre_goes(data: dict[str, Any],
                                                                              draw: st.DataObject) -> None:
    """Validation accepts a policy exactly when every member that may lead has ``quorum`` candidates
    outside its data centre; then losing that whole data centre still proves zero loss."""
    quorum = data["clusters"][0]["replication"]["quorum"]
    try:
        topo = parse_topology(data)
    except TopologyError as exc:
        message = str(exc)
        assert "replication.synchronous: with targets.rpo_seconds 0" in message or "replication.quorum:" in message
        return
    cluster = topo.clusters[0]
    policy = d.Policy.from_topology(topo, cluster)
    # The rendered file's list is the initial primary's own.
    assert topo.synchronous_standby_names(cluster) == policy.standby_names(cluster.initial_primary.name)
    for primary in _may_lead(topo):
        lost_dc = cluster.member(primary).datacenter
        candidates, fallback = policy.quorum_for(primary)
        assert len([n for n in candidates if n != primary]) >= quorum
        assert all(cluster.member(n).datacenter != lost_dc for n in (*candidates, *fallback))
        extra = tuple(draw.draw(st.lists(st.sampled_from(fallback), unique=True)) if fallback else ())
        lsns = {m.name: draw.draw(st.integers(0, 1000)) for m in cluster.members}
        snapshot = ClusterSnapshot("c", {m.name: _down(m.name) if m.datacenter == lost_dc
                                         else _standby(m.name, lsns[m.name]) for m in cluster.members})
        choice = d.choose_candidate(snapshot, policy, primary, extra_synchronous=extra)
        assert isinstance(choice, d.Candidate), choice
        assert choice.proven, choice.proof
        confirmers = policy.quorum_members(extra, primary=primary) - {primary}
        assert choice.name in confirmers
        assert choice.wal_lsn == max(lsns[n] for n in confirmers)
        state = ClusterState(cluster="c", primary=primary, synchronous_extra=extra)
        decision = d.decide(snapshot, state, policy, d.Memory(failures={primary: 5}), now=1e6)
        assert isinstance(decision, d.Failover) and decision.proven and decision.proof == choice.proof


@given(rpo_zero_topologies())
def test_validation_rejects_exactly_the_policies_that_cannot_guarantee_it(data: dict[str, Any]) -> None:
    replication = data["clusters"][0]["replication"]
    members = data["clusters"][0]["members"]
    dc = {m["name"]: m["datacenter"] for m in members}
    sync = replication.get("synchronous") or [m["name"] for m in members if m["datacenter"] in EAST]
    leaders = [members[0]["name"], *sync]
    short = [n for n in leaders if len([s for s in sync if dc[s] != dc[n]]) < replication["quorum"]]
    standbys = len([s for s in sync if s != members[0]["name"]])
    try:
        parse_topology(data)
    except TopologyError as exc:
        assert short or standbys < replication["quorum"], str(exc)
        return
    assert not short


# ---- the WAL an unproven promotion puts at risk ---------------------------------------------------

def _state(lsn: int | None) -> ClusterState:
    members = {} if lsn is None else {"old": MemberRecord(health=Health.UNREACHABLE, role=Role.UNKNOWN,
                                                          wal_lsn=lsn)}
    return ClusterState(cluster="c", primary="old", members=members)


def _snap(old: MemberStatus) -> ClusterSnapshot:
    return ClusterSnapshot("c", {"old": old, "new": _standby("new", 100)})


@pytest.mark.parametrize(("published", "seen", "target", "expected"), [
    pytest.param(250, _down("old"), 100, 150, id="last-published-position-of-a-dead-primary"),
    pytest.param(250, MemberStatus("old", Health.HEALTHY, Role.PRIMARY, wal_lsn=400), 100, 300,
                 id="a-live-primary-is-further-than-published"),
    pytest.param(90, _down("old"), 100, 0, id="target-ahead-risks-nothing"),
    pytest.param(None, _down("old"), 100, None, id="never-known-is-unknown"),
    pytest.param(None, MemberStatus("old", Health.HEALTHY, Role.PRIMARY, wal_lsn=130), 100, 30,
                 id="seen-now-but-never-published"),
])
def test_wal_at_risk_is_the_old_primarys_last_known_position_beyond_the_target(
        published: int | None, seen: MemberStatus, target: int, expected: int | None) -> None:
    assert d.wal_at_risk(_state(published), _snap(seen), "old", target) == expected


# ---- a catch-up that did not finish --------------------------------------------------------------

@pytest.mark.parametrize(("reached", "in_quorum", "proven", "accepted", "promote", "words"), [
    pytest.param(500, False, True, False, True, "caught up from src to 500", id="caught-up"),
    pytest.param(500, True, False, False, True, "caught up from src to 500", id="caught-up-even-unproven"),
    pytest.param(400, False, True, False, True, "no commit in those bytes was acknowledged",
                 id="async-source-extra-wal-never-acknowledged"),
    pytest.param(400, True, True, False, False, "src is in the old primary's quorum and may hold acknowledged",
                 id="quorum-source-may-hold-acknowledged-commits"),
    pytest.param(400, False, False, False, False, "zero loss is not proven for tgt", id="unproven-target-held"),
    pytest.param(400, True, False, True, True, "the operator accepted data loss", id="operator-accepted-loss"),
    pytest.param(400, False, False, True, True, "the operator accepted data loss", id="operator-accepted-unproven"),
])
def test_what_to_do_when_the_catch_up_did_not_finish(reached: int, in_quorum: bool, proven: bool, accepted: bool,
                                                    promote: bool, words: str) -> None:
    outcome = d.after_catch_up(target="tgt", source="src", wanted=500, reached=reached, source_in_quorum=in_quorum,
                               proven=proven, accept_data_loss=accepted, waited=3.0)
    assert outcome.promote is promote
    assert words in outcome.detail
    if reached < 500:
        assert "stopped 100 bytes short after 3.0s" in outcome.detail
    if not promote:
        assert "drctl failover CLUSTER --to tgt --accept-data-loss" in outcome.detail


@given(st.integers(0, 1000), st.integers(0, 1000), st.booleans(), st.booleans(), st.booleans())
def test_an_unproven_target_is_never_promoted_short_of_its_catch_up_without_accepted_loss(
        wanted: int, reached: int, in_quorum: bool, proven: bool, accepted: bool) -> None:
    outcome = d.after_catch_up(target="t", source="s", wanted=wanted, reached=reached, source_in_quorum=in_quorum,
                               proven=proven, accept_data_loss=accepted, waited=1.0)
    if reached < wanted and not accepted and (in_quorum or not proven):
        assert not outcome.promote
    else:
        assert outcome.promote


# ---- the promoted target's quorum from its first commit -------------------------------------------

@pytest.fixture
def policy(shipped_topology: Topology) -> d.Policy:
    return d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))


@pytest.mark.parametrize(("old", "target", "down", "expected"), [
    pytest.param("dc1-a", "dc2-a", {"dc1-a"}, (), id="primary-crash-dc1-b-attaches-to-dc2-a"),
    pytest.param("dc1-a", "dc2-a", {"dc1-a", "dc1-b"}, ("dc3-a",), id="dc1-lost-dc2-a-needs-dc3-a-at-once"),
    pytest.param("dc2-a", "dc1-a", {"dc2-a"}, ("dc3-a",), id="dc2-a-crash-dc1-a-has-no-partner-left"),
    pytest.param("dc2-a", "dc1-a", {"dc2-a", "dc3-a"}, ("dc3-a",), id="fallback-down-too-still-recorded"),
])
def test_a_target_without_a_quorum_partner_left_gets_its_fallback_from_the_first_commit(
        policy: d.Policy, old: str, target: str, down: set[str], expected: tuple[str, ...]) -> None:
    snapshot = ClusterSnapshot("payments", {n: _down(n) if n in down else _standby(n, 10) for n in policy.members})
    assert d.fallback_from_first_commit(snapshot, policy, target, old) == expected
    names = policy.standby_names(target, expected)
    assert all(f'"{n}"' not in names for n in policy.members
               if policy.members[n].datacenter == policy.members[target].datacenter)
