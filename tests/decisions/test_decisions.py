"""Failure detection, candidate choice and the decision table: pure, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import decisions as d
from orchestrator.state import ClusterSnapshot, ClusterState, Health, MemberStatus, Operation, OperationKind, Role
from orchestrator.topology import Topology

PRIMARY_EP = "127.0.0.1:25409"


@pytest.fixture
def policy(shipped_topology: Topology) -> d.Policy:
    return d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))


def up_standby(name: str, lsn: int, *, streaming: bool = False, upstream: str | None = PRIMARY_EP) -> MemberStatus:
    return MemberStatus(name, Health.HEALTHY, Role.STANDBY, timeline=1, wal_lsn=lsn, streaming=streaming,
                        upstream=upstream)


def down(name: str) -> MemberStatus:
    return MemberStatus(name, Health.UNREACHABLE, error="connection refused", refused=True)


def snap(*members: MemberStatus) -> ClusterSnapshot:
    return ClusterSnapshot("payments", {m.name: m for m in members}, taken_at=100.0)


def dead_primary(**lsns: int) -> ClusterSnapshot:
    members = [down("dc1-a")] + [up_standby(n.replace("_", "-"), lsn) for n, lsn in lsns.items()]
    return snap(*members)


STATE = ClusterState(cluster="payments", primary="dc1-a")
FAILED = d.Memory(failures={"dc1-a": 2})


# ---- the lease ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("session", "leader", "lease", "current", "expected"), [
    pytest.param(d.SessionState.CONNECTED, True, 3, 3, True, id="connected-leader-current-epoch"),
    pytest.param(d.SessionState.SUSPENDED, True, 3, 3, False, id="suspended-session"),
    pytest.param(d.SessionState.LOST, True, 3, 3, False, id="lost-session"),
    pytest.param(d.SessionState.CONNECTED, False, 3, 3, False, id="not-leader"),
    pytest.param(d.SessionState.CONNECTED, True, 3, 4, False, id="stale-epoch"),
    pytest.param(d.SessionState.CONNECTED, True, None, 4, False, id="no-lease"),
])
def test_only_a_sure_leader_acts(session: d.SessionState, leader: bool, lease: int | None, current: int | None,
                                 expected: bool) -> None:
    assert d.may_act(session, leader, lease, current) is expected


@pytest.mark.parametrize(("mine", "primaries", "others", "idle", "expected"), [
    pytest.param("dc1", {"dc1"}, ["dc2", "dc3"], True, True, id="colocated-with-primary-hands-over"),
    pytest.param("dc2", {"dc1"}, ["dc1", "dc3"], True, False, id="already-elsewhere"),
    pytest.param("dc1", {"dc1"}, ["dc2"], False, False, id="busy-keeps-leading"),
    pytest.param("dc1", {"dc1"}, [], True, False, id="no-one-to-hand-to"),
    pytest.param("dc1", {"dc1", "dc2"}, ["dc2"], True, False, id="others-also-host-a-primary"),
])
def test_leader_hands_over_only_when_calm_and_someone_outside_the_primary_dc_waits(
        mine: str, primaries: set[str], others: list[str], idle: bool, expected: bool) -> None:
    assert d.should_yield(mine, frozenset(primaries), others, idle) is expected


# ---- detection ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("snapshot", "failures", "verdict"), [
    pytest.param(snap(MemberStatus("dc1-a", Health.HEALTHY, Role.PRIMARY, wal_lsn=10)), 0, d.Verdict.HEALTHY,
                 id="answers-as-primary"),
    pytest.param(dead_primary(dc1_b=10, dc2_a=10), 1, d.Verdict.SUSPECT, id="one-failure-is-not-enough"),
    pytest.param(snap(down("dc1-a"), up_standby("dc1-b", 10, streaming=True), up_standby("dc2-a", 10)), 5,
                 d.Verdict.ALIVE_ELSEWHERE, id="standby-still-streams-from-it"),
    pytest.param(snap(down("dc1-a"), down("dc1-b"), down("dc2-a"), down("dc3-a")), 5, d.Verdict.UNCONFIRMED,
                 id="controller-cut-off-from-everyone"),
    pytest.param(dead_primary(dc1_b=10, dc2_a=10), 2, d.Verdict.FAILED, id="confirmed-by-standbys"),
    pytest.param(snap(down("dc1-a"), up_standby("dc1-b", 10, streaming=True, upstream="127.0.0.1:9"),
                      up_standby("dc2-a", 10)), 2, d.Verdict.FAILED, id="streaming-from-elsewhere-confirms"),
])
def test_assess_primary(policy: d.Policy, snapshot: ClusterSnapshot, failures: int, verdict: d.Verdict) -> None:
    assert d.assess_primary(snapshot, policy, "dc1-a", failures).verdict is verdict


# ---- candidate choice ----------------------------------------------------------------------------

def test_most_advanced_synchronous_standby_wins(policy: d.Policy) -> None:
    choice = d.choose_candidate(dead_primary(dc1_b=100, dc2_a=200, dc3_a=999), policy, "dc1-a")
    assert isinstance(choice, d.Candidate)
    assert (choice.name, choice.proven) == ("dc2-a", True)


def test_same_region_then_priority_break_ties(policy: d.Policy) -> None:
    anywhere = d.Policy(**{**policy.__dict__, "outside_datacenter": False})  # a positive RPO: no DC rule
    choice = d.choose_candidate(dead_primary(dc1_b=200, dc2_a=200), anywhere, "dc1-a")
    assert isinstance(choice, d.Candidate) and choice.name == "dc1-b"
    preferred = d.Policy(**{**anywhere.__dict__, "members": {
        **policy.members, "dc2-a": d.MemberPolicy(**{**policy.members["dc2-a"].__dict__, "priority": 200})}})
    choice = d.choose_candidate(dead_primary(dc1_b=200, dc2_a=200), preferred, "dc1-a")
    assert isinstance(choice, d.Candidate) and choice.name == "dc2-a"


def test_async_dr_member_is_never_chosen_automatically(policy: d.Policy) -> None:
    choice = d.choose_candidate(snap(down("dc1-a"), down("dc1-b"), down("dc2-a"), up_standby("dc3-a", 500)),
                                policy, "dc1-a")
    assert isinstance(choice, d.Refusal)


def test_operator_may_choose_async_only_when_accepting_loss(policy: d.Policy) -> None:
    snapshot = dead_primary(dc1_b=100, dc3_a=50)
    refused = d.choose_candidate(snapshot, policy, "dc1-a", target="dc3-a")
    assert isinstance(refused, d.Refusal) and "--accept-data-loss" in refused.reason
    forced = d.choose_candidate(snapshot, policy, "dc1-a", target="dc3-a", allow_async=True)
    assert isinstance(forced, d.Candidate) and forced.name == "dc3-a" and not forced.proven


def test_losing_the_primarys_whole_data_centre_still_proves_zero_loss(policy: d.Policy) -> None:
    """dc1-b never confirmed dc1-a's commits (same data centre): dc2-a alone holds them all."""
    choice = d.choose_candidate(snap(down("dc1-a"), down("dc1-b"), up_standby("dc2-a", 100)), policy, "dc1-a")
    assert isinstance(choice, d.Candidate) and choice.name == "dc2-a" and choice.proven
    assert "1 of the 1 quorum standby(s) of dc1-a (dc2-a) seen" in choice.proof


def test_a_member_beside_the_primary_is_asynchronous_and_never_promoted_automatically(policy: d.Policy) -> None:
    choice = d.choose_candidate(snap(down("dc1-a"), up_standby("dc1-b", 900), down("dc2-a")), policy, "dc1-a")
    assert isinstance(choice, d.Refusal)
    forced = d.choose_candidate(snap(down("dc1-a"), up_standby("dc1-b", 900), down("dc2-a")), policy, "dc1-a",
                                target="dc1-b", allow_async=True)
    assert isinstance(forced, d.Candidate) and not forced.proven and "only 0 of the 1" in forced.proof


def test_one_surviving_quorum_member_of_two_cannot_prove_zero_loss(policy: d.Policy) -> None:
    """dc2-a's commits wait for ANY 1 (dc1-a, dc1-b): with dc1-a gone too, dc1-b may lack some."""
    choice = d.choose_candidate(snap(down("dc2-a"), down("dc1-a"), up_standby("dc1-b", 100)), policy, "dc2-a")
    assert isinstance(choice, d.Candidate) and choice.name == "dc1-b" and not choice.proven
    assert "only 1 of the 2 quorum standby(s) of dc2-a (dc1-a, dc1-b) seen, 2 needed" in choice.proof


def test_a_failover_away_from_a_primary_that_still_takes_writes_is_not_proven(policy: d.Policy) -> None:
    live = snap(_primary("dc1-a"), up_standby("dc1-b", 100), up_standby("dc2-a", 100))
    choice = d.choose_candidate(live, policy, "dc1-a", target="dc2-a")
    assert isinstance(choice, d.Candidate) and not choice.proven and "switchover" in choice.proof


def test_a_target_behind_a_quorum_member_is_not_proven(policy: d.Policy) -> None:
    behind = snap(down("dc2-a"), up_standby("dc1-a", 100), up_standby("dc1-b", 70))
    choice = d.choose_candidate(behind, policy, "dc2-a", target="dc1-b")
    assert isinstance(choice, d.Candidate) and not choice.proven
    assert choice.proof == "dc1-b is 30 bytes of WAL behind dc1-a, which may hold acknowledged commits"


statuses = st.builds(
    lambda reach, lsn, streaming: (reach, lsn, streaming),
    st.booleans(), st.integers(0, 10_000), st.booleans(),
)


@given(st.sampled_from(["dc1-a", "dc1-b", "dc2-a"]),
       st.fixed_dictionaries({n: statuses for n in ("dc1-a", "dc1-b", "dc2-a", "dc3-a")}))
def test_choice_is_never_behind_an_eligible_member_and_never_async(
    shipped_topology: Topology, primary: str, members: dict[str, tuple[bool, int, bool]]
) -> None:
    policy = d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))
    snapshot = snap(down(primary), *[
        up_standby(name, lsn, streaming=streaming) if reach else down(name)
        for name, (reach, lsn, streaming) in members.items() if name != primary
    ])
    choice = d.choose_candidate(snapshot, policy, primary)
    quorum = policy.quorum_for(primary)[0]
    eligible = [n for n in quorum if n != primary and members[n][0]]
    if not eligible:
        assert isinstance(choice, d.Refusal)
        return
    assert isinstance(choice, d.Candidate)
    assert choice.name in eligible  # never dc3-a, never a member of the primary's data centre
    assert all(choice.wal_lsn >= members[n][1] for n in eligible)
    assert choice.proven is (len(eligible) == len([n for n in quorum if n != primary]))


# ---- the decision table ---------------------------------------------------------------------------

def test_confirmed_failure_fails_over(policy: d.Policy) -> None:
    decision = d.decide(dead_primary(dc1_b=10, dc2_a=20), STATE, policy, FAILED, now=100.0)
    assert isinstance(decision, d.Failover)
    assert (decision.source, decision.target, decision.proven) == ("dc1-a", "dc2-a", True)


def test_paused_cluster_does_not_fail_over(policy: d.Policy) -> None:
    paused = STATE.model_copy(update={"paused": True})
    decision = d.decide(dead_primary(dc1_b=10, dc2_a=20), paused, policy, FAILED, now=100.0)
    assert isinstance(decision, d.Blocked) and "paused" in decision.reason


def test_anti_flap_blocks_a_second_failover(policy: d.Policy) -> None:
    recent = STATE.model_copy(update={"last_failover_at": 100.0 - policy.anti_flap_seconds / 2})
    decision = d.decide(dead_primary(dc1_b=10, dc2_a=20), recent, policy, FAILED, now=100.0)
    assert isinstance(decision, d.Blocked) and "anti-flap" in decision.reason
    later = d.decide(dead_primary(dc1_b=10, dc2_a=20), recent, policy, FAILED,
                     now=100.0 + policy.anti_flap_seconds)
    assert isinstance(later, d.Failover)


def test_an_unprovable_failover_is_never_automatic_and_names_the_command_to_force_it(policy: d.Policy) -> None:
    snapshot = snap(down("dc2-a"), down("dc1-a"), up_standby("dc1-b", 100), up_standby("dc3-a", 100))
    state = STATE.model_copy(update={"primary": "dc2-a"})
    blocked = d.decide(snapshot, state, policy, d.Memory(failures={"dc2-a": 2}), now=100.0)
    assert isinstance(blocked, d.Blocked)
    assert "zero loss NOT provable: only 1 of the 2 quorum standby(s)" in blocked.reason
    assert blocked.reason.endswith("(to promote it anyway: drctl failover payments --to dc1-b --accept-data-loss)")


def test_an_automatic_failover_carries_its_proof(policy: d.Policy) -> None:
    decision = d.decide(snap(down("dc1-a"), down("dc1-b"), up_standby("dc2-a", 100)), STATE, policy, FAILED,
                        now=100.0)
    assert isinstance(decision, d.Failover) and decision.proven and decision.target == "dc2-a"
    assert decision.proof.startswith("1 of the 1 quorum standby(s) of dc1-a (dc2-a) seen")


def test_half_done_operation_is_resumed_first(policy: d.Policy) -> None:
    op = Operation(id="x", kind=OperationKind.FAILOVER, source="dc1-a", target="dc1-b", reason="r", started_at=1.0)
    state = STATE.model_copy(update={"operation": op})
    decision = d.decide(dead_primary(dc1_b=10), state, policy, FAILED, now=100.0)
    assert isinstance(decision, d.Resume) and decision.operation.id == "x"


def test_a_second_writable_primary_is_fenced(policy: d.Policy) -> None:
    snapshot = snap(MemberStatus("dc1-a", Health.HEALTHY, Role.PRIMARY, wal_lsn=10),
                    MemberStatus("dc1-b", Health.HEALTHY, Role.PRIMARY, wal_lsn=10))
    decision = d.decide(snapshot, STATE, policy, d.Memory(), now=100.0)
    assert isinstance(decision, d.FenceStray) and decision.member == "dc1-b"


def test_standby_pointing_elsewhere_is_repointed_and_a_dead_one_rejoined(policy: d.Policy) -> None:
    primary = MemberStatus("dc1-a", Health.HEALTHY, Role.PRIMARY, wal_lsn=10)
    snapshot = snap(primary, up_standby("dc1-b", 10, streaming=True),
                    up_standby("dc2-a", 10, upstream="127.0.0.1:1"), up_standby("dc3-a", 10, streaming=True))
    decision = d.decide(snapshot, STATE, policy, d.Memory(), now=100.0)
    assert isinstance(decision, d.Repoint) and decision.members == ("dc2-a",)
    dead = snap(primary, up_standby("dc1-b", 10, streaming=True), down("dc2-a"),
                up_standby("dc3-a", 10, streaming=True))
    memory = d.remember(d.Memory(), dead, now=100.0)
    # dc2-a is dc1-a's only quorum partner: the fallback joins first, then dc2-a is rejoined.
    assert isinstance(d.decide(dead, STATE, policy, memory, now=100.5), d.WidenQuorum)
    widened = STATE.model_copy(update={"synchronous_extra": ("dc3-a",)})
    assert isinstance(d.decide(dead, widened, policy, memory, now=100.5), d.Idle)
    later = d.decide(dead, widened, policy, memory, now=100.0 + policy.rejoin_delay_seconds)
    assert isinstance(later, d.Rejoin) and later.member == "dc2-a"


def test_memory_counts_consecutive_failures_only() -> None:
    bad, good = snap(down("dc1-a")), snap(MemberStatus("dc1-a", Health.HEALTHY, Role.PRIMARY, wal_lsn=1))
    memory = d.remember(d.remember(d.Memory(), bad, 1.0), bad, 2.0)
    assert memory.failures["dc1-a"] == 2 and memory.first_failure_at["dc1-a"] == 1.0
    assert "dc1-a" not in d.remember(memory, good, 3.0).failures


# ---- the quorum's fallback members ---------------------------------------------------------------

DC2_EP = "127.0.0.1:25411"


def dr_standby() -> MemberStatus:
    return up_standby("dc3-a", 10, streaming=True, upstream=DC2_EP)


def _primary_with(*attached: str) -> MemberStatus:
    return MemberStatus("dc2-a", Health.HEALTHY, Role.PRIMARY, wal_lsn=10, replicas={n: "quorum" for n in attached})


def test_fallback_joins_the_quorum_only_after_the_in_region_candidates_are_gone_a_while(policy: d.Policy) -> None:
    state = STATE.model_copy(update={"primary": "dc2-a"})
    snapshot = snap(_primary_with(), down("dc1-a"), down("dc1-b"), dr_standby())
    memory = d.remember(d.Memory(), snapshot, now=100.0)
    assert isinstance(d.decide(snapshot, state, policy, memory, now=100.05), d.Idle)
    decision = d.decide(snapshot, state, policy, memory, now=100.0 + d.QUORUM_SHORTAGE_SECONDS)
    assert isinstance(decision, d.WidenQuorum) and decision.members == ("dc3-a",)


def test_fallback_leaves_the_quorum_once_an_in_region_standby_is_back(policy: d.Policy) -> None:
    widened = STATE.model_copy(update={"primary": "dc2-a", "synchronous_extra": ("dc3-a",)})
    back = snap(_primary_with("dc1-b", "dc3-a"), down("dc1-a"),
                up_standby("dc1-b", 10, streaming=True, upstream=DC2_EP), dr_standby())
    decision = d.decide(back, widened, policy, d.remember(d.Memory(), back, 1.0), now=1.0)
    assert isinstance(decision, d.NarrowQuorum)
    still_short = snap(_primary_with("dc3-a"), down("dc1-a"), down("dc1-b"), dr_standby())
    assert not isinstance(d.decide(still_short, widened, policy, d.Memory(), now=1.0), d.WidenQuorum | d.NarrowQuorum)


def test_a_fallback_in_the_quorum_counts_as_a_candidate_that_may_hold_commits(policy: d.Policy) -> None:
    """With dc3-a in the quorum it may hold the last commits: it counts in the proof and may be chosen."""
    widened = STATE.model_copy(update={"primary": "dc2-a", "synchronous_extra": ("dc3-a",)})
    failed = d.Memory(failures={"dc2-a": 2})
    everyone = snap(down("dc2-a"), up_standby("dc1-a", 10), up_standby("dc1-b", 10), up_standby("dc3-a", 50))
    decision = d.decide(everyone, widened, policy, failed, now=100.0)
    assert isinstance(decision, d.Failover) and decision.target == "dc3-a" and decision.proven
    # Only dc3-a left: dc1-b may have confirmed commits dc3-a lacks, so no automatic failover.
    alone = snap(down("dc2-a"), down("dc1-a"), down("dc1-b"), up_standby("dc3-a", 50))
    blocked = d.decide(alone, widened, policy, failed, now=100.0)
    assert isinstance(blocked, d.Blocked) and "--to dc3-a --accept-data-loss" in blocked.reason
    plain = d.decide(alone, STATE.model_copy(update={"primary": "dc2-a"}), policy, failed, now=100.0)
    assert isinstance(plain, d.Blocked) and "no reachable synchronous standby" in plain.reason


def test_the_candidate_first_catches_up_from_a_survivor_that_received_more() -> None:
    snapshot = snap(down("dc1-a"), up_standby("dc2-a", 100), up_standby("dc3-a", 180), up_standby("dc1-b", 150))
    assert d.catch_up_source(snapshot, "dc2-a", "dc1-a") == "dc3-a"
    assert d.catch_up_source(snapshot, "dc3-a", "dc1-a") is None
    assert d.catch_up_source(snap(down("dc1-a"), up_standby("dc2-a", 100), down("dc3-a")), "dc2-a", "dc1-a") is None


# ---- the quorum follows the primary's region; planned switchover to any standby -----------------

def _primary(name: str) -> MemberStatus:
    return MemberStatus(name, Health.HEALTHY, Role.PRIMARY, wal_lsn=100)


@pytest.mark.parametrize(("primary", "candidates", "fallback"), [
    pytest.param("dc1-a", ("dc2-a",), ("dc3-a",), id="home-primary-outside-its-dc"),
    pytest.param("dc1-b", ("dc2-a",), ("dc3-a",), id="its-dc-peer-likewise"),
    pytest.param("dc2-a", ("dc1-a", "dc1-b"), ("dc3-a",), id="other-dc-same-region"),
    pytest.param("dc3-a", ("dc1-a", "dc1-b", "dc2-a"), (), id="dr-site-without-peers-uses-everyone-else"),
])
def test_quorum_is_formed_outside_the_primarys_data_centre(policy: d.Policy, primary: str,
                                                           candidates: tuple[str, ...], fallback: tuple[str, ...]
                                                           ) -> None:
    assert policy.quorum_for(primary) == (candidates, fallback)


@pytest.mark.parametrize(("primary", "candidates", "fallback"), [
    pytest.param("dc1-a", ("dc1-a", "dc1-b", "dc2-a"), ("dc3-a",), id="home-region-configured-set"),
    pytest.param("dc2-a", ("dc1-a", "dc1-b", "dc2-a"), ("dc3-a",), id="other-dc-same-region"),
    pytest.param("dc3-a", ("dc1-a", "dc1-b", "dc2-a", "dc3-a"), (), id="dr-site-without-peers-uses-everyone"),
])
def test_with_a_positive_rpo_the_quorum_is_formed_around_the_primarys_region(
        policy: d.Policy, primary: str, candidates: tuple[str, ...], fallback: tuple[str, ...]) -> None:
    anywhere = d.Policy(**{**policy.__dict__, "outside_datacenter": False})
    assert anywhere.quorum_for(primary) == (candidates, fallback)


def test_a_dr_region_with_peers_in_another_dc_uses_them_first_and_the_home_region_as_fallback(
        policy: d.Policy) -> None:
    west_b = d.MemberPolicy("dc4-a", "dc4", "west", "127.0.0.1:1", False, 100, False)
    wider = d.Policy(**{**policy.__dict__, "members": {**policy.members, "dc4-a": west_b}})
    assert wider.quorum_for("dc3-a") == (("dc4-a",), ("dc1-a", "dc1-b", "dc2-a"))
    assert wider.standby_names("dc3-a") == 'ANY 1 ("dc4-a")'
    beside = d.MemberPolicy("dc3-b", "dc3", "west", "127.0.0.1:1", False, 100, False)
    same_dc = d.Policy(**{**policy.__dict__, "members": {**policy.members, "dc3-b": beside}})
    assert same_dc.quorum_for("dc3-a") == (("dc1-a", "dc1-b", "dc2-a"), ())


def test_home_quorum_list_equals_the_rendered_configuration(shipped_topology: Topology, policy: d.Policy) -> None:
    cluster = shipped_topology.cluster("payments")
    assert policy.standby_names("dc1-a") == shipped_topology.synchronous_standby_names(cluster) == 'ANY 1 ("dc2-a")'
    assert policy.standby_names("dc1-a", ("dc3-a",)) == shipped_topology.synchronous_standby_names(cluster, ("dc3-a",))
    assert policy.standby_names("dc2-a") == 'ANY 1 ("dc1-a", "dc1-b")'
    assert policy.standby_names("dc3-a") == 'ANY 1 ("dc1-a", "dc1-b", "dc2-a")'


HEALTHY = snap(_primary("dc1-a"), up_standby("dc1-b", 100, streaming=True), up_standby("dc2-a", 100, streaming=True),
               up_standby("dc3-a", 90, streaming=True))


@pytest.mark.parametrize(("snapshot", "target", "expected"), [
    pytest.param(HEALTHY, "dc3-a", None, id="async-dr-standby-cross-region"),
    pytest.param(HEALTHY, "dc1-b", None, id="in-region-standby"),
    pytest.param(HEALTHY, "dc1-a", "dc1-a is already the primary", id="the-primary-itself"),
    pytest.param(HEALTHY, "dc9-z", "'dc9-z' is not a member of payments", id="unknown-member"),
    pytest.param(snap(down("dc1-a"), up_standby("dc3-a", 90)), "dc3-a", "dc1-a is not a healthy primary",
                 id="primary-down-is-a-failover"),
    pytest.param(snap(_primary("dc1-a"), down("dc3-a")), "dc3-a", "cannot promote dc3-a: it is unreachable",
                 id="target-unreachable"),
])
def test_planned_switchover_goes_to_any_standby(policy: d.Policy, snapshot: ClusterSnapshot, target: str,
                                                expected: str | None) -> None:
    choice = d.plan_switchover(snapshot, policy, "dc1-a", target)
    if expected is None:
        assert isinstance(choice, d.Candidate) and choice.name == target and choice.proven
    else:
        assert isinstance(choice, d.Refusal) and expected in choice.reason


def test_switchover_whose_quorum_can_never_be_made_is_refused_up_front(policy: d.Policy) -> None:
    never = d.Policy(**{**policy.__dict__, "quorum": 4})
    why = d.switchover_refusal(never, "dc1-a", "dc3-a")
    assert why is not None and "quorum needs 4 confirming standby(s) but only 3" in why
    promote_never = d.Policy(**{**policy.__dict__, "members": {
        **policy.members, "dc3-a": d.MemberPolicy(**{**policy.members["dc3-a"].__dict__, "never_promote": True})}})
    assert d.switchover_refusal(promote_never, "dc1-a", "dc3-a") == "cannot promote dc3-a: it is never_promote"


def test_after_a_dr_switchover_a_failover_counts_the_home_members_as_its_quorum(policy: d.Policy) -> None:
    state = STATE.model_copy(update={"primary": "dc3-a"})
    snapshot = snap(down("dc3-a"), up_standby("dc1-a", 50), up_standby("dc1-b", 90), up_standby("dc2-a", 80))
    decision = d.decide(snapshot, state, policy, d.Memory(failures={"dc3-a": 2}), now=100.0)
    assert isinstance(decision, d.Failover) and decision.target == "dc1-b" and decision.proven
    healthy = snap(_primary("dc3-a"), up_standby("dc1-a", 100, streaming=True))
    assert d.decide(healthy, state, policy, d.Memory(), now=100.0).__class__ is not d.WidenQuorum


@pytest.mark.parametrize(("kind", "arms"), [
    pytest.param(OperationKind.FAILOVER, True, id="failover-arms-anti-flap"),
    pytest.param(OperationKind.SWITCHOVER, False, id="switchover-does-not"),
])
def test_only_a_failover_starts_the_anti_flap_period(kind: OperationKind, arms: bool) -> None:
    op = Operation(id="x", kind=kind, source="dc1-a", target="dc1-b", reason="r", started_at=1.0)
    done = d.finished(STATE.model_copy(update={"operation": op}), op, now=50.0)
    assert done.operation is None and done.history[-1].id == "x"
    assert (done.last_failover_at == 50.0) is arms


# ---- a candidate's own node agent -----------------------------------------------------------------

LAPSED = d.AgentView(live=False, postmaster_alive=True, bound_s=1.75, session_timeout_s=3.5)
LIVE = d.AgentView(live=True, postmaster_alive=True, bound_s=1.75, session_timeout_s=3.5)


def test_a_candidate_whose_agent_lapsed_is_never_promoted(policy: d.Policy) -> None:
    # Its agent would fence it the moment it saw it primary without a lease: an outage, not a failover.
    blocked = d.decide(dead_primary(dc1_b=10, dc2_a=20), STATE, policy, FAILED, now=100.0,
                       agents={"dc2-a": LAPSED, "dc1-b": LIVE})
    assert isinstance(blocked, d.Blocked)
    assert "no reachable synchronous standby of payments can be promoted (dc2-a: node agent without a " \
           "ZooKeeper session)" in blocked.reason
    live = d.decide(dead_primary(dc1_b=10, dc2_a=20), STATE, policy, FAILED, now=100.0,
                    agents={"dc2-a": LIVE, "dc1-b": LIVE})
    assert isinstance(live, d.Failover) and live.target == "dc2-a"


def test_a_member_without_a_registered_agent_is_judged_as_before(policy: d.Policy) -> None:
    decision = d.decide(dead_primary(dc1_b=10, dc2_a=20), STATE, policy, FAILED, now=100.0, agents={})
    assert isinstance(decision, d.Failover) and decision.target == "dc2-a"


def test_an_operator_cannot_promote_a_member_whose_agent_lapsed(policy: d.Policy) -> None:
    refused = d.choose_candidate(dead_primary(dc1_b=10, dc2_a=20), policy, "dc1-a", target="dc2-a",
                                 agents={"dc2-a": LAPSED})
    assert isinstance(refused, d.Refusal)
    assert refused.reason == ("cannot promote dc2-a: its node agent holds no ZooKeeper session (start the agent, "
                              "or wait for it to reconnect)")


@given(st.sampled_from(["dc1-a", "dc1-b", "dc2-a"]),
       st.fixed_dictionaries({n: statuses for n in ("dc1-a", "dc1-b", "dc2-a", "dc3-a")}),
       st.fixed_dictionaries({n: st.sampled_from(["live", "lapsed", "none"]) for n in ("dc1-b", "dc2-a", "dc3-a")}),
       st.booleans())
def test_no_choice_ever_lands_on_a_lapsed_agent(
    shipped_topology: Topology, primary: str, members: dict[str, tuple[bool, int, bool]],
    agent_state: dict[str, str], allow_async: bool,
) -> None:
    policy = d.Policy.from_topology(shipped_topology, shipped_topology.cluster("payments"))
    snapshot = snap(down(primary), *[
        up_standby(name, lsn, streaming=streaming) if reach else down(name)
        for name, (reach, lsn, streaming) in members.items() if name != primary
    ])
    agents = {n: LIVE if s == "live" else LAPSED for n, s in agent_state.items() if s != "none"}
    choice = d.choose_candidate(snapshot, policy, primary, allow_async=allow_async, agents=agents)
    without = d.choose_candidate(snapshot, policy, primary, allow_async=allow_async)
    if isinstance(choice, d.Candidate):
        assert agent_state.get(choice.name) != "lapsed"
    if isinstance(without, d.Candidate) and agent_state.get(without.name) != "lapsed":
        assert isinstance(choice, d.Candidate) and choice.name == without.name  # nothing else changes
