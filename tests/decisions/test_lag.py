"""The cross-region RPO bound, pure: lag in seconds, the alert's hysteresis, bounded mode's hold and its
synchronous_standby_names form (PostgreSQL's FIRST/ANY semantics simulated)."""

from __future__ import annotations

import functools
import re
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import decisions as d
from orchestrator.errors import TopologyError
from orchestrator.state import ClusterSnapshot, ClusterState, DrLagRecord, DrMemberLag, Health, MemberStatus, Role
from orchestrator.topology import Topology, load_topology, parse_topology
from tests.conftest import REPO

LAB = load_topology(REPO / "topology" / "lab.yaml")


def policy_with(topo: Topology, **dr_lag: object) -> d.Policy:
    data = topo.model_dump(mode="json")
    data["clusters"][0]["replication"]["dr_lag"] = dr_lag
    changed = parse_topology(data)
    return d.Policy.from_topology(changed, changed.cluster("payments"))


BOUNDED = policy_with(LAB, max_seconds=5, mode="bounded")


@pytest.fixture
def bounded(shipped_topology: Topology) -> d.Policy:
    return policy_with(shipped_topology, max_seconds=5, mode="bounded")


# ---- lag in seconds ------------------------------------------------------------------------------

def history(*samples: tuple[float, int]) -> d.WalHistory:
    h = d.WalHistory()
    for at, lsn in samples:
        h = d.observe(h, "dc1-a", lsn, at)
    return h


def test_a_caught_up_standby_lags_zero_also_when_the_primary_is_idle() -> None:
    h = history((0.0, 100), (1.0, 200), (2.0, 200), (60.0, 200))
    assert d.seconds_behind(h, 200, 60.0) == (0.0, True)


def test_a_stalled_standby_lags_by_the_age_of_the_first_wal_it_lacks_growing_while_idle() -> None:
    # position 150 was current until 1.0 s (last seen), then the primary moved to 200 and idled.
    h = history((0.0, 100), (1.0, 150), (1.1, 200), (2.0, 200))
    assert d.seconds_behind(h, 150, 5.0) == (4.0, True)
    assert d.seconds_behind(h, 150, 50.0) == (49.0, True)
    assert d.seconds_behind(h, 170, 5.0) == (4.0, True)  # between samples: an upper bound


def test_an_unchanged_position_moves_its_time_so_an_idle_spell_is_not_counted_as_lag() -> None:
    h = history((0.0, 100), (30.0, 100), (30.1, 200))
    assert d.seconds_behind(h, 100, 30.2) == pytest.approx((0.2, True))


def test_a_position_older_than_the_history_is_a_lower_bound() -> None:
    h = history((10.0, 500), (11.0, 600))
    assert d.seconds_behind(h, 100, 12.0) == (2.0, False)
    assert d.seconds_behind(h, None, 12.0) == (None, True)


def test_a_new_primary_or_a_position_going_back_starts_a_new_history() -> None:
    h = history((0.0, 100), (1.0, 200))
    assert d.observe(h, "dc2-a", 300, 2.0).samples == ((2.0, 300),)
    assert d.observe(h, "dc1-a", 50, 2.0).samples == ((2.0, 50),)


def test_the_history_keeps_only_its_horizon() -> None:
    h = d.WalHistory()
    for n in range(100):
        h = d.observe(h, "dc1-a", n, float(n), horizon=10.0)
    assert h.samples[0][0] >= 89.0 and h.samples[-1] == (99.0, 99)


@settings(deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 5), st.integers(0, 1000)), min_size=1, max_size=40),
       st.integers(0, 40_000), st.floats(0, 100))
def test_lag_is_never_negative_zero_iff_caught_up_and_monotone_in_position(
        steps: list[tuple[float, int]], position: int, extra: float) -> None:
    h, at, lsn = d.WalHistory(), 0.0, 0
    for gap, grow in steps:
        at, lsn = at + gap, lsn + grow
        h = d.observe(h, "dc1-a", lsn, at)
    now = at + extra
    seconds, _ = d.seconds_behind(h, position, now)
    assert seconds is not None and seconds >= 0
    if position >= lsn:
        assert seconds == 0
    further, _ = d.seconds_behind(h, position + 100, now)
    assert further is not None and further <= seconds


# ---- measuring from a probe ----------------------------------------------------------------------

def primary_status(lsn: int, attached: dict[str, tuple[int | None, int | None]]) -> MemberStatus:
    return MemberStatus("dc1-a", Health.HEALTHY, Role.PRIMARY, timeline=1, wal_lsn=lsn, attached=attached)


def test_measure_takes_the_most_advanced_known_position_and_keeps_the_last_one_when_unreachable(
        bounded: d.Policy) -> None:
    h = history((0.0, 100), (1.0, 200), (2.0, 300))
    standby = MemberStatus("dc3-a", Health.HEALTHY, Role.STANDBY, wal_lsn=200, replay_lsn=100)
    snap = ClusterSnapshot("payments", {"dc1-a": primary_status(300, {"dc3-a": (100, 100)}), "dc3-a": standby})
    readings = d.measure(h, snap, bounded, "dc1-a", 3.0, {})
    assert set(readings) == {"dc3-a"}  # only the DR standby: the east members are not measured
    r = readings["dc3-a"]
    assert (r.receive_lsn, r.replay_lsn, r.receive_lag_s, r.replay_lag_s, r.attached) == (200, 100, 2.0, 3.0, True)
    gone = ClusterSnapshot("payments", {"dc1-a": primary_status(300, {}),
                                        "dc3-a": MemberStatus("dc3-a", Health.UNREACHABLE)})
    later = d.measure(h, gone, bounded, "dc1-a", 10.0, readings)["dc3-a"]
    assert (later.receive_lsn, later.receive_lag_s, later.attached) == (200, 9.0, False)


def test_nothing_is_measured_while_the_primary_does_not_answer(bounded: d.Policy) -> None:
    h = history((0.0, 100))
    snap = ClusterSnapshot("payments", {"dc1-a": MemberStatus("dc1-a", Health.UNREACHABLE)})
    assert d.measure(h, snap, bounded, "dc1-a", 1.0, {}) == {}


# ---- the synchronous_standby_names form ----------------------------------------------------------

def test_the_hold_form_puts_the_dr_standby_first_beside_the_zero_loss_quorum(bounded: d.Policy) -> None:
    assert bounded.dr_members("dc1-a") == ("dc3-a",)
    assert bounded.standby_names("dc1-a", hold="dc3-a") == 'FIRST 2 ("dc3-a", "dc2-a")'
    assert bounded.standby_names("dc2-a", hold="dc3-a") == 'FIRST 2 ("dc3-a", "dc1-a", "dc1-b")'
    assert bounded.standby_names("dc1-a") == 'ANY 1 ("dc2-a")'
    # fallbacks in the quorum: the plain form (they confirm across regions already)
    assert bounded.standby_names("dc1-a", ("dc3-a",), hold="dc3-a") == 'ANY 1 ("dc2-a", "dc3-a")'


def synchronous_set(setting: str, streaming: frozenset[str]) -> frozenset[str] | None:
    """PostgreSQL 15's choice for ``setting`` given the streaming standbys; None: commits wait."""
    match = re.fullmatch(r"(FIRST|ANY) (\d+) \((.*)\)", setting)
    assert match is not None, setting
    kind, count = match[1], int(match[2])
    names = [n.strip().strip('"') for n in match[3].split(",")]
    present = [n for n in names if n in streaming]
    if len(present) < count:
        return None
    return frozenset(present[:count]) if kind == "FIRST" else frozenset(present)


@functools.cache
def hold_policy(quorum: int) -> d.Policy:
    data = LAB.model_dump(mode="json")
    data["clusters"][0]["replication"]["dr_lag"] = {"max_seconds": 5, "mode": "bounded"}
    data["clusters"][0]["targets"]["rpo_seconds"] = 1 if quorum == 2 else 0
    data["clusters"][0]["replication"]["quorum"] = quorum
    topo = parse_topology(data)
    return d.Policy.from_topology(topo, topo.cluster("payments"))


@settings(max_examples=300, deadline=None)  # timing is no target; the machine may be busy
@given(st.sampled_from(["dc1-a", "dc1-b", "dc2-a"]), st.integers(1, 2), st.sets(st.sampled_from(
    ["dc1-a", "dc1-b", "dc2-a", "dc3-a"])))
def test_the_hold_never_loses_the_zero_loss_quorum_and_includes_the_dr_standby_whenever_it_streams(
        primary: str, quorum: int, up: set[str]) -> None:
    policy = hold_policy(quorum)
    candidates = [c for c in policy.quorum_for(primary)[0] if c != primary]
    streaming = frozenset(up - {primary})
    chosen = synchronous_set(policy.standby_names(primary, hold="dc3-a"), streaming)
    if chosen is not None:
        # every commit confirmed by at least `quorum` quorum candidates, as without the hold
        assert len(chosen & set(candidates)) >= quorum
        assert ("dc3-a" in chosen) is ("dc3-a" in streaming)
    else:
        assert len(streaming & set(candidates)) < quorum + ("dc3-a" not in streaming)
    plain = synchronous_set(policy.standby_names(primary), streaming)
    if plain is not None and chosen is not None:
        assert len(plain & set(candidates)) >= quorum


# ---- the alert and the hold ----------------------------------------------------------------------

def reading(lag: float | None, *, attached: bool = True, lsn: int = 100) -> dict[str, DrMemberLag]:
    return {"dc3-a": DrMemberLag(receive_lsn=lsn, replay_lsn=lsn, receive_lag_s=lag, replay_lag_s=lag,
                                 attached=attached)}


def test_the_alert_fires_once_on_crossing_and_once_on_recovery(bounded: d.Policy) -> None:
    record: DrLagRecord | None = None
    events = []
    for at, lag in enumerate([0.1, 3.0, 6.0, 7.0, 9.0, 4.0, 2.6, 2.4, 2.0, 6.0]):
        change = d.alert_change(record, reading(lag), bounded, float(at))
        if change is not None:
            events.append((at, change))
            record = DrLagRecord(max_seconds=5, mode="bounded", over=change, over_changed_at=float(at))
    assert events == [(2, True), (7, False), (9, True)]


def run_hold(policy: d.Policy, lags: list[float | None], attached: list[bool] | None = None, *, step: float = 0.5
             ) -> list[str | None]:
    """Apply hold_change round by round; the DR standby held after each round."""
    state = ClusterState(cluster="payments", primary="dc1-a")
    held: list[str | None] = []
    for n, lag in enumerate(lags):
        now = n * step
        change = d.hold_change(state, policy, reading(lag, attached=attached[n] if attached else True), now)
        record = d.record_of(state, policy)
        if isinstance(change, d.HoldCommits):
            state = state.model_copy(update={"dr_lag": record.model_copy(update={
                "holding": change.member, "holding_primary": "dc1-a", "holding_since": now})})
        elif isinstance(change, d.ReleaseCommits):
            state = state.model_copy(update={"dr_lag": record.model_copy(update={"holding": None})})
        held.append(state.dr_lag.held_by("dc1-a") if state.dr_lag else None)
    return held


def test_bounded_mode_holds_over_the_bound_and_releases_under_resume_below(bounded: d.Policy) -> None:
    held = run_hold(bounded, [1.0, 5.5, 8.0, 4.0, 3.0, 0.2, 0.2])  # a round every 0.5 s
    assert held == [None, "dc3-a", "dc3-a", "dc3-a", "dc3-a", None, None]
    # back under at once: still held DR_MIN_SECONDS (1 s) before it is released
    assert run_hold(bounded, [1.0, 5.5, 0.2, 0.2, 0.2]) == [None, "dc3-a", "dc3-a", None, None]


def test_alert_mode_never_holds(shipped_topology: Topology) -> None:
    assert run_hold(policy_with(shipped_topology, max_seconds=5), [9.0, 9.0, None]) == [None, None, None]


def test_when_down_release_lets_commits_go_and_hold_keeps_waiting(shipped_topology: Topology) -> None:
    lags: list[float | None] = [6.0, 7.0, 8.0, 9.0]
    attached = [True, True, False, False]
    release = policy_with(shipped_topology, max_seconds=5, mode="bounded")
    hold = policy_with(shipped_topology, max_seconds=5, mode="bounded", when_down="hold")
    assert run_hold(release, lags, attached) == ["dc3-a", "dc3-a", None, None]
    assert run_hold(hold, lags, attached) == ["dc3-a"] * 4
    assert run_hold(release, [9.0], [False]) == [None]
    assert run_hold(hold, [9.0], [False]) == ["dc3-a"]


def test_a_hold_recorded_for_another_primary_is_void(bounded: d.Policy) -> None:
    record = DrLagRecord(max_seconds=5, mode="bounded", holding="dc3-a", holding_primary="dc2-a",
                         holding_since=0.0)
    state = ClusterState(cluster="payments", primary="dc1-a", dr_lag=record)
    assert d.hold_change(state, bounded, reading(0.1), 10.0) is None
    assert isinstance(d.hold_change(state, bounded, reading(9.0), 10.0), d.HoldCommits)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0, 20)), min_size=1, max_size=60))
def test_the_dr_standby_is_held_iff_over_the_bound_with_hysteresis(lags: list[float | None]) -> None:
    held = run_hold(BOUNDED, lags)  # one round every 0.5 s
    start = 0
    for n, (lag, now_held) in enumerate(zip(lags, held, strict=True)):
        before = held[n - 1] if n else None
        if before is None and now_held is not None:
            start = n
        if lag is None or lag > 5:
            assert now_held == "dc3-a", f"round {n}: lag {lag} over the bound but not held"
        elif before is None:
            assert now_held is None, f"round {n}: lag {lag} within the bound but held"
        if before is not None and now_held is None:  # released: at or under resume_below, held >= 1 s
            assert lag is not None and lag <= 2.5 and (n - start) * 0.5 >= d.DR_MIN_SECONDS
        if before is not None and (lag is None or lag > 2.5):
            assert now_held == before  # inside the band nothing changes: no flapping


# ---- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("dr_lag", "message"), [
    ({"max_seconds": 5, "resume_below_seconds": 5}, "resume_below_seconds 5 is not below max_seconds 5"),
    ({"max_seconds": 0.1}, "dr_lag.max_seconds: 0.1 is within two probe intervals"),
    ({"max_seconds": 5, "mode": "strict"}, "dr_lag.mode"),
    ({"max_seconds": 5, "when_down": "wait"}, "dr_lag.when_down"),
])
def test_bad_dr_lag_settings_are_one_line_naming_the_field(shipped_topology: Topology, dr_lag: dict[str, object],
                                                           message: str) -> None:
    with pytest.raises(TopologyError, match=re.escape(message)) as caught:
        policy_with(shipped_topology, **dr_lag)
    assert "\n" not in str(caught.value)


def test_a_bound_needs_an_asynchronous_member_in_another_region(shipped_topology: Topology) -> None:
    data = shipped_topology.model_dump(mode="json")
    cluster = data["clusters"][0]
    cluster["members"] = [m for m in cluster["members"] if m["name"] != "dc3-a"]
    cluster["replication"].update(fallback=[], dr_lag={"max_seconds": 5, "mode": "bounded"})
    with pytest.raises(TopologyError, match=r"clusters\.payments\.replication\.dr_lag: no asynchronous member "
                                            r"outside the primary's region 'east'.*add a member in another region"):
        parse_topology(data)


def test_every_subset_form_for_the_lab_quorum() -> None:
    # Exhaustive over the lab's members: with the hold, commits wait only when the DR standby does
    # not stream and the primary has no quorum+1 streaming candidates.
    setting = 'FIRST 2 ("dc3-a", "dc2-a")'
    for size in range(4):
        for up in combinations(["dc1-b", "dc2-a", "dc3-a"], size):
            chosen = synchronous_set(setting, frozenset(up))
            assert (chosen is not None) is ({"dc2-a", "dc3-a"} <= set(up))


def test_a_new_leaders_lower_bound_never_clears_the_alert_or_releases_the_hold(bounded: d.Policy) -> None:
    # A new leader's history starts now: a stalled standby reads ">= 0.2 s" (inexact), not "caught up".
    inexact = {"dc3-a": DrMemberLag(receive_lsn=100, receive_lag_s=0.2, exact=False, attached=True)}
    over = DrLagRecord(max_seconds=5, mode="bounded", over=True, over_changed_at=0.0, holding="dc3-a",
                       holding_primary="dc1-a", holding_since=0.0)
    state = ClusterState(cluster="payments", primary="dc1-a", dr_lag=over)
    assert d.alert_change(over, inexact, bounded, 100.0) is None
    assert d.hold_change(state, bounded, inexact, 100.0) is None
    assert d.alert_change(over, reading(0.2), bounded, 100.0) is False
    assert isinstance(d.hold_change(state, bounded, reading(0.2), 100.0), d.ReleaseCommits)
