"""The soak without a lab: its catalogue, its seeded plan, and how a round is judged from a journal."""

from __future__ import annotations

import random

import pytest

from orchestrator.decisions.detection import stall_tolerance_s
from orchestrator.drills import soak
from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.drills.measure import Promotion
from orchestrator.drills.soak import Executed, RoundResult, judge_round, kinds_of, plan, summarise
from orchestrator.drills.spec import FaultKind, KillPrimary, StallPrimary, ZooKeeperServerLoss
from orchestrator.topology import Cluster, Topology

TODAY = {"primary-crash", "controller-leader-crash", "zookeeper-server-loss", "planned-switchover",
         "datacenter-outage", "stall-primary", "stall-leader-controller", "stall-zookeeper"}


@pytest.fixture
def cluster(shipped_topology: Topology) -> Cluster:
    return shipped_topology.cluster("payments")


def test_the_catalogue_holds_todays_kinds(shipped_topology: Topology) -> None:
    assert set(soak.CATALOGUE) >= TODAY
    assert kinds_of(None) == tuple(soak.CATALOGUE)
    assert kinds_of("stall-primary, primary-crash") == ("primary-crash", "stall-primary")


@pytest.mark.parametrize(("faults", "message"), [
    ("primary-crsh", r"--faults: unknown fault kind 'primary-crsh'; use some of primary-crash"),
    (" , ", r"--faults: name at least one kind"),
])
def test_unknown_kinds_are_refused_with_the_catalogue(faults: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kinds_of(faults)


def test_the_same_seed_plans_the_same_soak_and_another_seed_another(shipped_topology: Topology,
                                                                    cluster: Cluster) -> None:
    kinds = kinds_of(None)
    first = plan(shipped_topology, cluster, rounds=50, seed=11, kinds=kinds)
    assert first == plan(shipped_topology, cluster, rounds=50, seed=11, kinds=kinds)
    assert first != plan(shipped_topology, cluster, rounds=50, seed=12, kinds=kinds)
    assert [r.index for r in first] == list(range(1, 51))
    assert {r.kind for r in first} == set(kinds)    # 50 draws over 8 kinds reach every one
    assert all(0.5 <= r.delay_s <= 3.0 for r in first)
    assert all(r.fault.kind == soak.CATALOGUE[r.kind](random.Random(0), shipped_topology, cluster).kind
               for r in first)


def test_a_restricted_plan_draws_only_the_named_kinds(shipped_topology: Topology, cluster: Cluster) -> None:
    rounds = plan(shipped_topology, cluster, rounds=40, seed=3, kinds=("stall-primary",))
    tolerance = stall_tolerance_s(shipped_topology)
    durations = [r.fault.duration_s for r in rounds if isinstance(r.fault, StallPrimary)]
    assert len(durations) == 40
    # Both sides of the tolerance are drawn: short ones test false failovers, long ones real ones.
    assert any(d < tolerance for d in durations) and any(d > tolerance for d in durations)
    assert all(d < 0.75 * tolerance + 1e-9 or d >= tolerance + 3 for d in durations)


def test_a_registered_kind_is_drawn(shipped_topology: Topology, cluster: Cluster,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soak, "CATALOGUE", dict(soak.CATALOGUE))
    soak.register("partition-primary", lambda rng, t, c: KillPrimary(kind=FaultKind.KILL_PRIMARY))
    assert "partition-primary" in kinds_of(None)
    rounds = plan(shipped_topology, cluster, rounds=3, seed=0, kinds=("partition-primary",))
    assert [r.kind for r in rounds] == ["partition-primary"] * 3
    with pytest.raises(ValueError, match="lower-case"):
        soak.register("Bad Name", lambda rng, t, c: KillPrimary(kind=FaultKind.KILL_PRIMARY))


# ---- judging a round ----------------------------------------------------------------------------

A, B = "127.0.0.1:1", "127.0.0.1:2"
T0 = 1000.0


def rec(n: int, start: float, server: str = A, timeline: int = 1, outcome: Outcome = Outcome.ACK) -> JournalRecord:
    return JournalRecord(id=f"00000000-0000-0000-0000-{n:012d}", src=1, dst=2, amount=1, start=start,
                         end=start + 0.01, outcome=outcome, server=server, timeline=timeline)


def failover(proven: bool = True) -> Promotion:
    return Promotion(operation="op", kind="failover", source="dc1-a", target="dc2-a", proven=proven,
                     proof="seen" if proven else "", accept_data_loss=False, wal_at_risk_bytes=None)


def executed(**update: object) -> Executed:
    base = Executed(index=1, kind="primary-crash", description="kill", at=T0, healed_at=None,
                    expect_new_primary=True, end=T0 + 10, redundancy_s=4.0, money=(100, 100),
                    promotions=(failover(),))
    return base.model_copy(update=update)


JOURNAL = [rec(1, T0 - 0.5), rec(2, T0 - 0.2), rec(3, T0 + 1.0, B, 2), rec(4, T0 + 1.5, B, 2)]
KILL = KillPrimary(kind=FaultKind.KILL_PRIMARY)


def test_a_clean_round_breaks_nothing(shipped_topology: Topology) -> None:
    result = judge_round(executed(), KILL, shipped_topology, JOURNAL, {r.id for r in JOURNAL}, window_start=T0 - 1)
    assert result.ok, result.broken
    assert result.rto_seconds == pytest.approx(1.01) and result.recovered_by == f"{B} (timeline 2)"
    assert result.acked == 4 and result.lost == 0 and result.redundancy_s == 4.0


@pytest.mark.parametrize(("journal", "present", "update", "broken"), [
    (JOURNAL, {r.id for r in JOURNAL[1:]}, {}, "1 acknowledged transfer(s) lost"),
    ([*JOURNAL, rec(5, T0 + 2.0, A, 1)], None, {}, "two writers: 127.0.0.1:1 (timeline 1) acknowledged 1"),
    (JOURNAL, None, {"money": (99, 100)}, "money not conserved: 99 instead of 100"),
    (JOURNAL, None, {"promotions": (failover(proven=False),)}, "promotion without proven zero loss"),
    (JOURNAL, None, {"redundancy_s": None}, "did not return to full redundancy"),
    (JOURNAL[:2], None, {}, "writes did not recover within the round"),
], ids=["lost", "two-writers", "money", "unproven", "no-redundancy", "unrecovered"])
def test_a_round_that_breaks_an_invariant_says_which(shipped_topology: Topology, journal: list[JournalRecord],
                                                     present: set[str] | None, update: dict[str, object],
                                                     broken: str) -> None:
    ids = present if present is not None else {r.id for r in journal}
    result = judge_round(executed(**update), KILL, shipped_topology, journal, ids, window_start=T0 - 1)
    assert not result.ok and any(broken in line for line in result.broken), result.broken


def test_a_failover_during_a_short_stall_is_counted_false(shipped_topology: Topology) -> None:
    short = StallPrimary(kind=FaultKind.STALL_PRIMARY, duration_s=0.5)
    long = StallPrimary(kind=FaultKind.STALL_PRIMARY, duration_s=stall_tolerance_s(shipped_topology) + 1)
    stalled = executed(kind="stall-primary", expect_new_primary=False)
    ids = {r.id for r in JOURNAL}
    bad = judge_round(stalled, short, shipped_topology, JOURNAL, ids, window_start=T0 - 1)
    assert bad.false_failovers == 1
    assert "false failover dc1-a -> dc2-a after a 0.5 s stall, within the 2 s tolerance" in bad.broken, bad.broken
    assert judge_round(stalled, long, shipped_topology, JOURNAL, ids, window_start=T0 - 1).ok
    # A fault that is no stall is never judged for false failovers.
    zk = ZooKeeperServerLoss(kind=FaultKind.ZOOKEEPER_SERVER_LOSS)
    assert judge_round(stalled, zk, shipped_topology, JOURNAL, ids, window_start=T0 - 1).false_failovers == 0


def test_the_summary_gives_each_kinds_rto_distribution() -> None:
    def result(kind: str, rto: float, redundancy: float | None, promotions: tuple[str, ...] = (),
               broken: tuple[str, ...] = ()) -> RoundResult:
        return RoundResult(index=1, kind=kind, description="", at=T0, healed_at=None, rto_seconds=rto,
                           unrecovered=False, recovered_by=None, redundancy_s=redundancy, acked=1, lost=0,
                           writer_conflicts=0, money_conserved=True, promotions=promotions, unproven=0,
                           false_failovers=0, broken=broken)
    summary = summarise([result("primary-crash", 1.0, 5.0, ("failover a -> b: ...",)),
                         result("stall-primary", 0.4, None), result("primary-crash", 3.0, 7.0, ("failover b -> a",)),
                         result("primary-crash", 2.0, 6.0, broken=("x",))])
    assert [k.kind for k in summary] == ["primary-crash", "stall-primary"]
    crash, stall = summary
    assert (crash.rounds, crash.rto_median_s, crash.rto_max_s) == (3, 2.0, 3.0)
    assert (crash.redundancy_median_s, crash.redundancy_max_s, crash.failovers, crash.broken) == (6.0, 7.0, 2, 1)
    assert stall.redundancy_median_s is None and stall.failovers == 0
