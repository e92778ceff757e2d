"""Game-day schedule and analysis, capacity steps and knee: pure, on hand-made journals."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.drills.capacity import StepResult, latency_percentiles, paced_load, step_result, summarise
from orchestrator.drills.gameday import WARMUP_S, Injection, analyse, schedule
from orchestrator.drills.gameday_report import write_capacity
from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.drills.runner import DrillRunner
from orchestrator.errors import InvalidInput
from orchestrator.lab import Lab
from orchestrator.topology import load_topology
from tests.conftest import REPO

A, B = "127.0.0.1:1", "127.0.0.1:2"
T0 = 1_750_000_000.0


def _rec(i: int, start: float, outcome: Outcome, server: str | None, timeline: int | None, ms: float = 4.0
         ) -> JournalRecord:
    return JournalRecord(id=f"00000000-0000-0000-0000-{i:012d}", src=1, dst=2, amount=1, start=start,
                         end=start + ms / 1000, outcome=outcome, server=server, timeline=timeline,
                         error=None if outcome is Outcome.ACK else "connection refused")


def _journal(outage: tuple[float, float], seconds: float = 60.0, step: float = 0.01) -> list[JournalRecord]:
    records = []
    for i in range(int(seconds / step)):
        t = T0 + i * step
        if outage[0] <= t - T0 < outage[1]:
            records.append(_rec(i, t, Outcome.FAIL, None, None))
        elif t - T0 < outage[0]:
            records.append(_rec(i, t, Outcome.ACK, A, 1))
        else:
            records.append(_rec(i, t, Outcome.ACK, B, 2))
    return records


def test_analyse_counts_each_fault_and_the_whole_window() -> None:
    records = _journal((20.0, 21.5))
    inj = [Injection(drill="primary-crash", kind="kill-primary", description="kill", at=T0 + 20.0,
                     expect_new_primary=True)]
    present = {r.id for r in records if r.outcome is Outcome.ACK}
    g = analyse(records, inj, cluster="payments", seed=1, started_at=T0, window_end=T0 + 60, present_ids=present,
                expected_total=100, observed_total=100, duplicates=0, availability_target=99.99,
                p99_objective_ms=50, rto_target=5)
    (fault,) = g.faults
    assert fault.rto_seconds == pytest.approx(1.5 + 0.004, abs=0.011)
    assert fault.lost == 0 and not fault.unrecovered
    failed = sum(r.outcome is Outcome.FAIL for r in records)
    # request-based availability is exactly the independent count of journal outcomes
    assert g.request_availability == pytest.approx(100 * (len(records) - failed) / len(records), abs=1e-12)
    assert g.time_availability == pytest.approx(100 * (1 - fault.rto_seconds / (60 - 0)), abs=0.01)
    assert g.burn_rate == pytest.approx((failed / len(records)) / 0.0001)
    assert g.passed, [c for c in g.checks if not c.passed]
    assert g.latency_compliance == 1.0 and g.p99_ms == pytest.approx(4.0, abs=1e-3)


def test_availability_is_checked_against_locusts_own_count() -> None:
    records = _journal((20.0, 21.0))
    present = {r.id for r in records if r.outcome is Outcome.ACK}
    failed = sum(r.outcome is Outcome.FAIL for r in records)
    kwargs = dict(cluster="payments", seed=1, started_at=T0, window_end=T0 + 60, present_ids=present,
                  expected_total=100, observed_total=100, duplicates=0, availability_target=99.99,
                  p99_objective_ms=50, rto_target=5)
    agree = analyse(records, [], locust_counts=(len(records), failed), **kwargs)  # type: ignore[arg-type]
    check = next(c for c in agree.checks if c.name == "availability-agrees-with-locust")
    assert check.passed and agree.locust_availability == pytest.approx(agree.request_availability)
    disagree = analyse(records, [], locust_counts=(len(records), failed + 1), **kwargs)  # type: ignore[arg-type]
    assert not next(c for c in disagree.checks if c.name == "availability-agrees-with-locust").passed


def test_analyse_catches_a_lost_write_and_unbalanced_money() -> None:
    records = _journal((20.0, 21.0))
    present = {r.id for r in records if r.outcome is Outcome.ACK} - {records[10].id}
    inj = [Injection(drill="primary-crash", kind="kill-primary", description="kill", at=T0 + 20.0,
                     expect_new_primary=True)]
    g = analyse(records, inj, cluster="payments", seed=1, started_at=T0, window_end=T0 + 60, present_ids=present,
                expected_total=100, observed_total=99, duplicates=0, availability_target=99.99,
                p99_objective_ms=1, rto_target=5)
    failed = {c.name for c in g.checks if not c.passed}
    assert failed == {"no-acknowledged-write-lost", "money-conserved"}
    assert g.latency_compliance == 0.0


@given(st.lists(st.sampled_from(["primary-crash", "planned-switchover"]), min_size=1, max_size=6),
       st.integers(0, 2**31), st.floats(100, 3600))
def test_schedule_is_seeded_ordered_and_leaves_room(drills: list[str], seed: int, duration: float) -> None:
    recovery = 10.0
    try:
        plan = schedule(drills, duration_s=duration, seed=seed, recovery_s=recovery)
    except ValueError as exc:
        assert "--duration" in str(exc)
        return
    assert plan == schedule(drills, duration_s=duration, seed=seed, recovery_s=recovery)
    assert [p.drill for p in plan] == drills
    offsets = [p.offset_s for p in plan]
    assert offsets[0] >= WARMUP_S
    assert all(b - a >= recovery - 1e-9 for a, b in itertools.pairwise(offsets))
    assert duration - offsets[-1] >= recovery - 1e-9


def test_schedule_refuses_a_window_too_short() -> None:
    with pytest.raises(ValueError, match=r"--duration: 30 s cannot fit 2 fault\(s\)"):
        schedule(["a", "b"], duration_s=30, seed=0, recovery_s=30)


def _step(users: int, tput: float, broke: str | None = None) -> StepResult:
    return StepResult(users=users, seconds=10, attempts=int(tput * 10), acks=int(tput * 10), throughput=tput,
                      error_percent=0, latency_ms={"p99": 5.0}, broke=broke)


@pytest.mark.parametrize(("steps", "sustainable", "knee", "stopped"), [
    pytest.param([_step(5, 500), _step(10, 900), _step(15, 950), _step(20, 960, "p99 over")], 950, 10, "20 users",
                 id="flattens-then-breaks"),
    pytest.param([_step(5, 500, "p99 over")], None, None, "5 users", id="first-step-breaks"),
    pytest.param([_step(5, 500), _step(10, 1000)], 1000, 10, "reached max users", id="never-breaks"),
])
def test_summarise(steps: list[StepResult], sustainable: float | None, knee: int | None, stopped: str) -> None:
    c = summarise("payments", steps, p99_objective_ms=50, max_error_percent=1, max_users=10)
    assert c.sustainable_throughput == sustainable and c.knee_users == knee and c.stopped_by.startswith(stopped)
    assert len(c.lines()) == len(steps) + 4


def test_step_result_judges_latency_then_errors() -> None:
    records = [_rec(i, T0 + i * 0.01, Outcome.ACK, A, 1, ms=float(i % 100)) for i in range(1000)]
    slow = step_result(records, users=5, start=T0, end=T0 + 10, p99_objective_ms=50, max_error_percent=1)
    assert slow.broke is not None and "p99 98.0 ms" in slow.broke
    assert slow.latency_ms == pytest.approx(latency_percentiles(float(i % 100) for i in range(1000)), abs=1e-3)
    assert slow.throughput == pytest.approx(100)
    errors = [*records[:900], *(_rec(i, T0 + i * 0.01, Outcome.FAIL, A, 1) for i in range(900, 1000))]
    ok = step_result(errors, users=5, start=T0, end=T0 + 10, p99_objective_ms=500, max_error_percent=1)
    assert ok.broke is not None and "10.00% errors" in ok.broke


@given(users=st.integers(1, 500), throughput=st.floats(1, 1e5), fraction=st.floats(0.01, 1.0))
def test_paced_load_offers_the_fraction_of_capacity_with_the_sustaining_users(users: int, throughput: float,
                                                                             fraction: float) -> None:
    c = summarise("payments", [_step(users, throughput)], p99_objective_ms=50, max_error_percent=1, max_users=users)
    paced_users, rate = paced_load(c, fraction)
    assert paced_users == users
    assert paced_users * rate == pytest.approx(fraction * throughput, rel=1e-9)


def test_paced_load_refuses_a_run_without_a_sustainable_step_and_a_bad_fraction() -> None:
    broken = summarise("payments", [_step(5, 500, "p99 over")], p99_objective_ms=50, max_error_percent=1,
                       max_users=5)
    with pytest.raises(ValueError, match="no step within its objectives"):
        paced_load(broken, 0.7)
    fine = summarise("payments", [_step(5, 500)], p99_objective_ms=50, max_error_percent=1, max_users=5)
    with pytest.raises(ValueError, match=r"not in \(0, 1\]"):
        paced_load(fine, 1.5)


def test_a_drill_at_a_fraction_of_capacity_is_paced_from_the_newest_run_of_its_cluster(tmp_path: Path) -> None:
    reports, drills = tmp_path / "reports", tmp_path / "drills"
    drills.mkdir()
    text = (REPO / "drills" / "primary-crash.yaml").read_text()
    (drills / "primary-crash.yaml").write_text(text.replace(
        "load: {users: 10, spawn_rate: 10, duration_s: 12, accounts: 100}",
        "load: {users: 10, spawn_rate: 10, duration_s: 12, accounts: 100, capacity_fraction: 0.7}"))
    runner = DrillRunner(Lab(load_topology(REPO / "topology" / "lab.yaml"), tmp_path / "lab"), drills, reports)
    with pytest.raises(InvalidInput, match=r"load\.capacity_fraction: no capacity run of payments.*drctl load"):
        runner.load("primary-crash")

    def run(cluster: str, tput: float, at: float) -> None:
        write_capacity(summarise(cluster, [_step(8, tput / 2), _step(16, tput)], p99_objective_ms=50,
                                 max_error_percent=1, max_users=16), reports, at=at)

    run("payments", 400.0, T0)
    run("payments", 800.0, T0 + 3600)      # the newest run of the cluster counts
    run("ledger", 9000.0, T0 + 7200)       # another cluster's run does not
    spec = runner.load("primary-crash")
    assert spec.load.users == 16 and spec.load.user_rate == pytest.approx(0.7 * 800 / 16)
    basis = runner.load_basis["primary-crash"]
    assert basis["sustainable_throughput"] == 800.0 and basis["offered_throughput"] == pytest.approx(560.0)
    assert str(basis["capacity_run"]).endswith("-capacity-payments")
