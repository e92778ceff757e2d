"""Break-glass: the refusals of drctl dr promote, and adopting its promotion when ZooKeeper returns (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import decisions as d
from orchestrator.state import (
    ClusterSnapshot,
    ClusterState,
    Health,
    MemberStatus,
    Operation,
    OperationKind,
    Role,
    Step,
)
from orchestrator.topology import Topology

MEMBERS = ("dc1-a", "dc1-b", "dc2-a", "dc3-a")
STANDBY = MemberStatus("dc3-a", Health.HEALTHY, Role.STANDBY, timeline=1, wal_lsn=900)


@pytest.fixture(scope="module")
def policy(shipped_topology: Topology) -> d.Policy:
    return d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))


GOOD = {"accept_data_loss": True, "confirm_fenced": ["east"], "serving": 1, "servers": 3, "status": STANDBY}


@pytest.mark.parametrize(("target", "change", "expected"), [
    pytest.param("dc3-a", {"serving": 2}, "ZooKeeper has a majority (2 of 3 servers serve): do not break glass; "
                                         "use drctl failover payments --to dc3-a --accept-data-loss", id="majority"),
    pytest.param("dc9-a", {}, "--to: 'dc9-a' is not a member of payments", id="not-a-member"),
    pytest.param("dc3-a", {"accept_data_loss": False}, "--accept-data-loss: missing", id="no-accept"),
    pytest.param("dc3-a", {"confirm_fenced": ["west"]}, "--confirm-fenced: west named, but the region(s) that must "
                                                       "be fenced before promoting dc3-a (in west) are east",
                 id="wrong-region"),
    pytest.param("dc3-a", {"confirm_fenced": []}, "--confirm-fenced: nothing named", id="no-region"),
    pytest.param("dc3-a", {"status": MemberStatus("dc3-a", Health.UNREACHABLE, error="refused")},
                 "--to: dc3-a does not answer (refused)", id="unreachable"),
    pytest.param("dc3-a", {"status": MemberStatus("dc3-a", Health.HEALTHY, Role.PRIMARY)},
                 "--to: dc3-a is not a standby (it is primary)", id="already-primary"),
    pytest.param("dc3-a", {}, None, id="allowed"),
])
def test_break_glass_refuses_with_one_line(policy: d.Policy, target: str, change: dict[str, object],
                                           expected: str | None) -> None:
    args = {**GOOD, **change}
    why = d.refusal(policy, target, **args)  # type: ignore[arg-type]
    if expected is None:
        assert why is None
    else:
        assert why is not None and why.startswith(expected) and "\n" not in why, why


def test_the_lost_regions_are_every_member_region_but_the_targets(policy: d.Policy) -> None:
    assert d.lost_regions(policy, "dc3-a") == ("east",)
    assert d.lost_regions(policy, "dc2-a") == ("west",)


def test_adoption_is_the_first_rule_and_happens_once(policy: d.Policy) -> None:
    bg = d.new_record(policy, "dc3-a", confirm_fenced=["east"], at=50.0, by="ops@host", known_generation=0,
                      timeline=2, ident="bg1")
    running = Operation(id="op1", kind=OperationKind.FAILOVER, source="dc1-a", target="dc2-a", reason="x",
                        started_at=40.0, step=Step.FENCE)
    state = ClusterState(cluster="payments", primary="dc1-a", generation=4, operation=running)
    snapshot = ClusterSnapshot("payments", {"dc3-a": MemberStatus("dc3-a", Health.HEALTHY, Role.PRIMARY)})
    decision = d.decide(snapshot, state, policy, d.Memory(), 60.0, break_glass=bg)
    assert isinstance(decision, d.AdoptBreakGlass) and decision.record.id == "bg1"
    after = d.adopted(state, bg, 60.0)
    assert (after.primary, after.generation, after.timeline, after.operation) == ("dc3-a", 5, 2, None)
    assert after.break_glass == ("bg1",)
    assert [(op.id, op.outcome) for op in after.history][-2:] == [("op1", "aborted"), ("bg1", "done")]
    assert after.history[-1].accept_data_loss and after.history[-1].lost_region == "east"
    assert d.adoption(after, bg) is None
    assert not isinstance(d.decide(snapshot, after, policy, d.Memory(), 61.0, break_glass=bg), d.AdoptBreakGlass)


roles = st.sampled_from([Role.PRIMARY, Role.STANDBY, None])


@settings(deadline=None, max_examples=200)
@given(st.fixed_dictionaries({name: roles for name in MEMBERS}), st.sampled_from(MEMBERS),
       st.integers(min_value=1, max_value=50), st.sampled_from(MEMBERS))
def test_after_adoption_only_the_break_glass_primary_keeps_writing(
        shipped_topology: Topology, seen: dict[str, Role | None], old_primary: str, generation: int,
        target: str) -> None:
    policy = d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))
    members = {n: (MemberStatus(n, Health.UNREACHABLE, error="refused", refused=True) if role is None
                   else MemberStatus(n, Health.HEALTHY, role, timeline=1, wal_lsn=100)) for n, role in seen.items()}
    snapshot = ClusterSnapshot("payments", members)
    state = ClusterState(cluster="payments", primary=old_primary, generation=generation)
    lost = d.lost_regions(policy, target)
    bg = d.new_record(policy, target, confirm_fenced=lost, at=1.0, by="ops", known_generation=0, timeline=2)
    after = d.adopted(state, bg, 2.0)
    assert after.primary == target and after.generation > generation
    decision = d.decide(snapshot, after, policy, d.Memory(), 3.0, break_glass=bg)
    strays = [n for n in snapshot.primaries() if n != target]
    if strays:
        # Every other writer is fenced before anything else happens: never two primaries.
        assert isinstance(decision, d.FenceStray) and decision.member in strays
    assert not isinstance(decision, d.Failover | d.AdoptBreakGlass)
