"""Drill measurement on hand-made journals: RTO, phases, RPO, invariants, availability, budget, verdict."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.drills.measure import (
    Measurement,
    Milestone,
    TimelineEvent,
    ack_series,
    availability,
    data_loss,
    error_budget,
    ids_to_look_up,
    measure,
    promotions,
    server_phases,
    write_outage,
    writer_conflicts,
)
from orchestrator.drills.verdict import CheckName, Verdict, judge
from orchestrator.state import Operation, OperationKind
from orchestrator.topology import Targets

A, B = "127.0.0.1:25410", "127.0.0.1:25411"
FAULT = 1000.0
END = FAULT + 8.0
TARGETS = Targets(rto_seconds=5, rpo_seconds=0, availability_percent=99.99)

_ids = iter(range(1, 10**9))


def rec(
    start: float,
    end: float | None = None,
    outcome: Outcome = Outcome.ACK,
    server: str | None = A,
    timeline: int | None = 1,
    tid: str | None = None,
) -> JournalRecord:
    return JournalRecord(
        id=tid or f"t{next(_ids)}", src=1, dst=2, amount=5, start=start,
        end=start + 0.004 if end is None else end, outcome=outcome, server=server, timeline=timeline,
    )


def steady(first: float, last: float, step: float = 0.05, server: str | None = A, timeline: int | None = 1) -> list[
    JournalRecord
]:
    """One ack every ``step`` seconds, starting at ``first``, up to ``last``."""
    count = round((last - first) / step)
    return [rec(first + i * step, server=server, timeline=timeline) for i in range(count + 1)]


def failover_journal() -> list[JournalRecord]:
    """A acks until the fault, one straggler 1 ms after it, failures, then B on timeline 2 from +3 s."""
    return [
        *steady(FAULT - 4, FAULT - 0.05),
        rec(FAULT + 0.001, FAULT + 0.003, tid="straggler"),
        rec(FAULT + 0.01, FAULT + 2.0, Outcome.INDETERMINATE, tid="lost-answer"),
        rec(FAULT + 2.1, FAULT + 2.2, Outcome.FAIL, server=None, timeline=None),
        *steady(FAULT + 3.0, END - 0.1, server=B, timeline=2),
    ]


def all_present(records: Iterable[JournalRecord]) -> frozenset[str]:
    return frozenset(r.id for r in records if r.outcome is Outcome.ACK)


def run(records: list[JournalRecord], *, present: frozenset[str] | None = None, **kw: object) -> Measurement:
    args: dict[str, object] = {
        "fault_at": FAULT, "window_end": END, "expected_total": 10_000, "observed_total": 10_000,
        "targets": TARGETS,
    }
    args.update(kw)
    return measure(records, present_ids=all_present(records) if present is None else present, **args)  # type: ignore[arg-type]


# ---- RTO ----------------------------------------------------------------------------------


def test_failover_rto_ignores_the_dying_primarys_straggler_ack() -> None:
    out = write_outage(failover_journal(), fault_at=FAULT, window_end=END)
    assert out.new_writer_required
    assert out.pre_fault_writer == f"{A} (timeline 1)"
    assert out.recovered_by == f"{B} (timeline 2)"
    assert out.rto_seconds == pytest.approx(3.004)
    assert not out.unrecovered
    assert out.straggler_acks == 1
    assert out.longest_gap_seconds == pytest.approx(3.001)   # straggler end -> B's first ack
    assert out.longest_gap_from == pytest.approx(FAULT + 0.003)


def test_without_expecting_a_new_primary_the_first_ack_after_the_fault_counts() -> None:
    out = write_outage(failover_journal(), fault_at=FAULT, window_end=END, expect_new_primary=False)
    assert out.rto_seconds == pytest.approx(0.003)
    assert out.straggler_acks == 0


def test_no_outage_when_writes_keep_flowing() -> None:
    journal = steady(FAULT - 4, END - 0.01)
    out = write_outage(journal, fault_at=FAULT, window_end=END, expect_new_primary=False)
    assert not out.unrecovered
    assert 0 < out.rto_seconds < 0.06
    assert out.longest_gap_seconds == pytest.approx(0.05)
    # Inference agrees: nobody else acked, so no new writer is required.
    assert write_outage(journal, fault_at=FAULT, window_end=END) == out


def test_outage_spanning_the_window_end_is_unrecovered_and_the_gap_stays_open() -> None:
    journal = steady(FAULT - 4, FAULT - 0.05)
    out = write_outage(journal, fault_at=FAULT, window_end=END, expect_new_primary=True)
    assert out.unrecovered
    assert out.recovered_at is None
    assert out.rto_seconds == pytest.approx(8.0)
    assert out.longest_gap_to == END
    assert out.longest_gap_seconds == pytest.approx(8.0 + 0.05 - 0.004)


def test_only_the_old_primary_acking_after_the_fault_is_no_recovery_when_a_new_one_is_expected() -> None:
    journal = [*steady(FAULT - 4, FAULT - 0.05), rec(FAULT + 0.001, tid="straggler")]
    out = write_outage(journal, fault_at=FAULT, window_end=END, expect_new_primary=True)
    assert out.unrecovered
    assert out.straggler_acks == 1


def test_recovery_after_the_window_end_does_not_count() -> None:
    journal = [*steady(FAULT - 4, FAULT - 0.05), rec(END + 0.5, server=B, timeline=2)]
    out = write_outage(journal, fault_at=FAULT, window_end=END)
    assert out.unrecovered
    assert out.rto_seconds == pytest.approx(8.0)


def test_records_out_of_order_give_the_same_outage() -> None:
    journal = failover_journal()
    shuffled = journal[:]
    random.Random(4).shuffle(shuffled)
    assert write_outage(shuffled, fault_at=FAULT, window_end=END) == write_outage(
        journal, fault_at=FAULT, window_end=END
    )


def test_empty_journal_is_an_unrecovered_window() -> None:
    out = write_outage([], fault_at=FAULT, window_end=END)
    assert out.unrecovered
    assert out.rto_seconds == 8.0
    assert out.acks_before_fault == 0
    assert out.longest_gap_seconds == 8.0


def test_unknown_servers_fall_back_to_the_first_ack_after_the_fault() -> None:
    journal = [*steady(FAULT - 1, FAULT - 0.05, server=None, timeline=None), rec(FAULT + 2, server=None)]
    out = write_outage(journal, fault_at=FAULT, window_end=END, expect_new_primary=True)
    assert not out.new_writer_required
    assert out.rto_seconds == pytest.approx(2.004)


def test_window_end_before_the_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="before fault_at"):
        write_outage([], fault_at=FAULT, window_end=FAULT - 1)


# ---- server-side phases ---------------------------------------------------------------------


def test_phases_from_the_controller_timeline() -> None:
    events = [
        TimelineEvent(at=FAULT - 50, name="promoted", detail="an earlier incident"),
        TimelineEvent(at=FAULT + 1.0, name="promoted", detail="dc1-b"),
        TimelineEvent(at=FAULT + 0.3, name="detected"),
        TimelineEvent(at=FAULT + 0.5, name="fenced"),
        TimelineEvent(at=FAULT + 0.6, name="detected", detail="a second report"),
        TimelineEvent(at=FAULT + 1.2, name="repointed"),
        TimelineEvent(at=FAULT + 1.3, name="something-else"),
    ]
    phases = server_phases(events, fault_at=FAULT, first_write_at=FAULT + 3.0)
    assert [s.label for s in phases.steps] == [
        "fault → detected", "detected → fenced", "fenced → promoted", "promoted → first-write",
    ]
    assert [s.seconds for s in phases.steps] == pytest.approx([0.3, 0.2, 0.5, 2.0])
    assert phases.at(Milestone.REPOINTED) == FAULT + 1.2
    assert phases.at(Milestone.DONE) is None


def test_missing_phases_are_none() -> None:
    events = [TimelineEvent(at=FAULT + 0.2, name="fenced"), TimelineEvent(at=FAULT + 0.4, name="promoted")]
    phases = server_phases(events, fault_at=FAULT, first_write_at=None)
    seconds = [s.seconds for s in phases.steps]
    assert seconds[0] is None and seconds[1] is None and seconds[3] is None
    assert seconds[2] == pytest.approx(0.2)


# ---- RPO ------------------------------------------------------------------------------------


def test_every_acknowledged_transfer_present_means_no_loss() -> None:
    journal = failover_journal()
    loss = data_loss(journal, all_present(journal))
    assert loss.lost == 0
    assert loss.rpo_seconds == 0.0
    assert loss.acked == sum(1 for r in journal if r.outcome is Outcome.ACK)


def test_planted_loss_makes_the_rpo_check_fail() -> None:
    """A journal claiming an acknowledged transfer the database lacks must fail the drill."""
    journal = [*failover_journal(), rec(FAULT - 0.02, tid="planted")]
    present = all_present(journal) - {"planted"}
    m = run(journal, present=present)
    assert m.loss.lost == 1
    assert m.loss.lost_ids == ("planted",)
    verdict = judge(m, TARGETS)
    assert not verdict.passed
    [failure] = verdict.failures
    assert failure.name is CheckName.NO_ACKED_WRITE_LOST
    assert "planted" in failure.reason


def test_rpo_is_the_span_of_the_lost_acknowledgements() -> None:
    journal = [*steady(FAULT - 4, FAULT - 0.05), rec(FAULT - 1.0, tid="l1"), rec(FAULT - 0.4, tid="l2")]
    loss = data_loss(journal, all_present(journal) - {"l1", "l2"})
    assert loss.lost == 2
    assert loss.rpo_seconds == pytest.approx(0.6)
    assert loss.lost_ids == ("l1", "l2")


def test_a_positive_rpo_target_tolerates_losses_inside_it() -> None:
    journal = [*failover_journal(), rec(FAULT - 1.0, tid="l1"), rec(FAULT - 0.4, tid="l2")]
    m = run(journal, present=all_present(journal) - {"l1", "l2"})
    within = judge(m, TARGETS.model_copy(update={"rpo_seconds": 1.0}))
    assert within.passed
    assert CheckName.NO_ACKED_WRITE_LOST not in {c.name for c in within.checks}
    over = judge(m, TARGETS.model_copy(update={"rpo_seconds": 0.5}))
    assert [c.name for c in over.failures] == [CheckName.RPO]


def test_indeterminate_transfers_are_looked_up_and_counted_apart() -> None:
    journal = [
        *steady(FAULT - 1, FAULT - 0.05),
        rec(FAULT, FAULT + 1, Outcome.INDETERMINATE, tid="i1"),
        rec(FAULT, FAULT + 1, Outcome.INDETERMINATE, tid="i2"),
        rec(FAULT, FAULT + 1, Outcome.INDETERMINATE, tid="i3"),
    ]
    loss = data_loss(journal, all_present(journal) | {"i1", "i3"})
    assert (loss.indeterminate, loss.indeterminate_committed, loss.indeterminate_not_committed) == (3, 2, 1)
    assert loss.lost == 0
    assert ids_to_look_up(journal) >= {"i1", "i2", "i3"}


def test_a_retried_transfer_is_one_transfer() -> None:
    journal = [
        rec(FAULT - 1, outcome=Outcome.FAIL, tid="x"),
        rec(FAULT - 0.5, outcome=Outcome.INDETERMINATE, tid="x"),
        rec(FAULT + 3, server=B, timeline=2, tid="x"),
    ]
    loss = data_loss(journal, {"x"})
    assert (loss.acked, loss.lost, loss.indeterminate, loss.failed_but_committed) == (1, 0, 0, 0)


def test_a_failed_transfer_that_committed_breaks_the_journal_contract() -> None:
    journal = [*failover_journal(), rec(FAULT - 1, outcome=Outcome.FAIL, tid="f")]
    m = run(journal, present=all_present(journal) | {"f"})
    assert m.loss.failed_but_committed == 1
    assert [c.name for c in judge(m, TARGETS).failures] == [CheckName.FAILED_NOT_COMMITTED]


# ---- invariants -----------------------------------------------------------------------------


def test_a_clean_failover_has_no_writer_conflict() -> None:
    assert writer_conflicts(failover_journal()) == ()


def test_old_primary_acknowledging_after_the_new_one_is_split_brain() -> None:
    journal = [*failover_journal(), rec(FAULT + 4.0, tid="late"), rec(FAULT + 5.0)]
    [conflict] = writer_conflicts(journal)
    assert conflict.older == f"{A} (timeline 1)"
    assert conflict.newer == f"{B} (timeline 2)"
    assert conflict.first_late_ack_id == "late"
    assert conflict.late_acks == 2
    verdict = judge(run(journal), TARGETS)
    assert [c.name for c in verdict.failures] == [CheckName.SINGLE_WRITABLE_PRIMARY]


def test_two_servers_promoted_to_the_same_timeline_conflict() -> None:
    journal = [*steady(FAULT, FAULT + 2, server=A, timeline=2), *steady(FAULT + 1, FAULT + 3, server=B, timeline=2)]
    [conflict] = writer_conflicts(journal)
    assert conflict.older.startswith(A) and conflict.newer.startswith(B)


def test_an_ack_that_started_before_the_new_primary_answered_is_no_conflict() -> None:
    journal = [rec(FAULT - 1), rec(FAULT + 2.0, FAULT + 2.5), rec(FAULT + 2.1, FAULT + 2.2, server=B, timeline=2)]
    assert writer_conflicts(journal) == ()


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        pytest.param({"observed_total": 9_995}, CheckName.MONEY_CONSERVED, id="money-created-or-destroyed"),
        pytest.param({"duplicate_transfers": 1}, CheckName.NO_DUPLICATE_TRANSFER, id="duplicate"),
    ],
)
def test_bank_invariants(change: dict[str, Any], failed: CheckName) -> None:
    verdict = judge(run(failover_journal(), **change), TARGETS)
    assert [c.name for c in verdict.failures] == [failed]


# ---- availability and error budget ----------------------------------------------------------


def test_availability_counts_attempts_that_started_in_the_window() -> None:
    journal = [
        *[rec(FAULT + i * 0.1) for i in range(7)],
        rec(FAULT + 1, outcome=Outcome.FAIL), rec(FAULT + 1, outcome=Outcome.FAIL),
        rec(FAULT + 1, outcome=Outcome.INDETERMINATE),
        rec(END + 1),   # after the window
    ]
    av = availability(journal, window_start=FAULT, window_end=END)
    assert (av.attempted, av.succeeded, av.failed, av.indeterminate) == (10, 7, 2, 1)
    assert av.percent == pytest.approx(70.0)
    assert availability([], window_start=FAULT, window_end=END).percent is None


@pytest.mark.parametrize(
    ("target", "outage", "budget_min", "fraction", "incidents"),
    [
        pytest.param(99.99, 3.1536, 52.56, 0.001, 1000, id="four-nines"),
        pytest.param(99.99, 1051.2, 52.56, 1 / 3, 3, id="exact-division"),
        pytest.param(99.9, 60.0, 525.6, 60 / 31536, 525, id="three-nines"),
        pytest.param(99.99, 4000.0, 52.56, 4000 / 3153.6, 0, id="over-budget"),
        pytest.param(99.99, 0.0, 52.56, 0.0, None, id="no-outage"),
    ],
)
def test_error_budget(target: float, outage: float, budget_min: float, fraction: float, incidents: int | None) -> None:
    budget = error_budget(outage, target)
    assert budget.budget_seconds_per_year / 60 == pytest.approx(budget_min)
    assert budget.fraction_of_budget == pytest.approx(fraction)
    assert budget.incidents_per_year == incidents


def test_error_budget_sentence() -> None:
    sentence = error_budget(3.1536, 99.99).sentence()
    assert "52.56 min" in sentence
    assert "0.1%" in sentence
    assert "1000 such incident(s) a year" in sentence


# ---- series, measurement and verdict --------------------------------------------------------


def test_series_counts_acks_per_bucket_and_p99_over_the_trailing_second() -> None:
    journal = [rec(FAULT + 0.01, FAULT + 0.02), rec(FAULT + 0.03, FAULT + 0.05), rec(FAULT, FAULT + 0.15)]
    series = ack_series(journal, fault_at=FAULT, window_start=FAULT, window_end=FAULT + 0.3)
    assert [p.acks for p in series] == [2, 1, 0]
    assert series[0].t == 0.0
    assert series[0].p99_ms == pytest.approx(20.0)
    assert series[1].p99_ms == pytest.approx(150.0)
    assert ack_series([], fault_at=FAULT, window_start=FAULT, window_end=FAULT + 0.3)[0].p99_ms is None


def test_a_clean_failover_passes_every_check() -> None:
    events = [TimelineEvent(at=FAULT + t, name=n) for t, n in [(0.3, "detected"), (0.5, "fenced"), (1, "promoted")]]
    m = run(failover_journal(), events=events, expect_new_primary=True)
    verdict = judge(m, TARGETS)
    assert verdict.passed, verdict.failures
    assert CheckName.NO_ACKED_WRITE_LOST in {c.name for c in verdict.checks}
    assert CheckName.RPO not in {c.name for c in verdict.checks}   # zero RPO: judged by count, not span
    assert Measurement.model_validate_json(m.model_dump_json()) == m
    assert Verdict.model_validate_json(verdict.model_dump_json()) == verdict


def test_an_rto_over_target_fails() -> None:
    verdict = judge(run(failover_journal()), TARGETS.model_copy(update={"rto_seconds": 2.0}))
    [failure] = verdict.failures
    assert failure.name is CheckName.RTO
    assert failure.reason == "writes recovered 3.00 s after the fault, over the 2 s RTO target"


def test_unrecovered_aborted_and_loadless_drills_fail() -> None:
    m = run([], expect_new_primary=True)
    verdict = judge(m, TARGETS, aborted="no recovery within 50 s (10 x the RTO target)")
    assert {c.name for c in verdict.failures} == {CheckName.COMPLETED, CheckName.LOAD_BEFORE_FAULT, CheckName.RTO}
    rto = next(c for c in verdict.failures if c.name is CheckName.RTO)
    assert "did not recover" in rto.reason


def test_a_verdict_cannot_claim_a_pass_with_a_failed_check() -> None:
    failed = judge(run([]), TARGETS)
    with pytest.raises(ValueError, match="every check passed"):
        Verdict(passed=True, checks=failed.checks)


# ---- properties -----------------------------------------------------------------------------

_records = st.lists(
    st.tuples(
        st.floats(-10, 20, allow_nan=False),            # start, relative to the fault
        st.floats(0, 3, allow_nan=False),               # duration
        st.sampled_from(list(Outcome)),
        st.sampled_from([A, B, None]),
        st.sampled_from([1, 2, None]),
    ),
    max_size=60,
).map(
    lambda rows: [
        rec(FAULT + s, FAULT + s + d, outcome=o, server=srv, timeline=tl, tid=f"p{i}")
        for i, (s, d, o, srv, tl) in enumerate(rows)
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    journal=_records,
    window=st.floats(0, 15, allow_nan=False),
    expect=st.sampled_from([True, False, None]),
    seed=st.integers(0, 1000),
)
def test_rto_is_bounded_by_the_window_and_independent_of_order(
    journal: list[JournalRecord], window: float, expect: bool | None, seed: int
) -> None:
    window_end = FAULT + window
    out = write_outage(journal, fault_at=FAULT, window_end=window_end, expect_new_primary=expect)
    assert 0 <= out.rto_seconds <= window_end - FAULT
    assert out.unrecovered == (out.recovered_at is None)
    if out.unrecovered:
        assert out.rto_seconds == window_end - FAULT
    assert out.longest_gap_seconds >= 0
    shuffled = journal[:]
    random.Random(seed).shuffle(shuffled)
    assert write_outage(shuffled, fault_at=FAULT, window_end=window_end, expect_new_primary=expect) == out


@settings(max_examples=200, deadline=None)
@given(journal=_records, keep=st.floats(0, 1), seed=st.integers(0, 1000))
def test_loss_never_exceeds_acks_and_indeterminate_adds_up(
    journal: list[JournalRecord], keep: float, seed: int
) -> None:
    rng = random.Random(seed)
    present = frozenset(r.id for r in journal if rng.random() < keep)
    loss = data_loss(journal, present)
    assert 0 <= loss.lost <= loss.acked
    assert loss.rpo_seconds >= 0
    assert loss.indeterminate_committed + loss.indeterminate_not_committed == loss.indeterminate
    assert loss.lost == len(loss.lost_ids)


@settings(max_examples=100, deadline=None)
@given(journal=_records, window=st.floats(0.1, 15, allow_nan=False))
def test_measurement_round_trips_through_json_and_availability_is_a_ratio(
    journal: list[JournalRecord], window: float
) -> None:
    m = run(journal, window_end=FAULT + window)
    assert Measurement.model_validate_json(m.model_dump_json()) == m
    assert m.availability.percent is None or 0 <= m.availability.percent <= 100
    assert judge(m, TARGETS).passed == all(c.passed for c in judge(m, TARGETS).checks)


# ---- zero loss proven -------------------------------------------------------------------------


def _op(started_at: float, *, proven: bool = True, accepted: bool = False, kind: OperationKind = OperationKind.FAILOVER
        ) -> Operation:
    return Operation(id=f"op{started_at}", kind=kind, source="dc1-a", target="dc2-a", reason="r",
                     started_at=started_at, proven=proven, proof="why" if proven else "why not",
                     accept_data_loss=accepted, wal_at_risk_bytes=None if proven else 4096)


def test_the_drills_promotions_are_the_operations_started_in_its_window() -> None:
    history = [_op(FAULT - 30), _op(FAULT - 0.5), _op(FAULT + 1, kind=OperationKind.SWITCHOVER), _op(END + 30)]
    found = promotions(history, fault_at=FAULT, until=END)
    assert [(p.operation, p.kind) for p in found] == [(f"op{FAULT - 0.5}", "failover"),
                                                       (f"op{FAULT + 1}", "switchover")]


@pytest.mark.parametrize(("ops", "rpo", "passed", "words"), [
    pytest.param([_op(FAULT)], 0.0, True, "failover dc1-a -> dc2-a: zero loss proven: yes (why)", id="proven"),
    pytest.param([], 0.0, True, "the drill caused no promotion", id="no-promotion"),
    pytest.param([_op(FAULT, proven=False)], 0.0, False,
                 "zero loss proven: no (why not); WAL at risk: 4096 bytes; with an RPO target of 0 a promotion "
                 "without proven zero loss needs an operator's --accept-data-loss", id="unproven-automatic-fails"),
    pytest.param([_op(FAULT, proven=False, accepted=True)], 0.0, True,
                 "no (why not, data loss accepted by the operator); WAL at risk: 4096 bytes",
                 id="unproven-but-accepted-by-an-operator"),
    pytest.param([_op(FAULT), _op(FAULT + 2, proven=False)], 0.0, False, "zero loss proven: yes (why); failover",
                 id="one-unproven-of-two"),
    pytest.param([_op(FAULT, proven=False)], 1.0, True, "the RPO target is 1 s, so a promotion need not prove",
                 id="positive-rpo-needs-no-proof"),
])
def test_an_rpo_zero_drill_fails_when_a_promotion_was_not_proven_lossless(
        ops: list[Operation], rpo: float, passed: bool, words: str) -> None:
    m = run(failover_journal(), operations=promotions(ops, fault_at=FAULT, until=END))
    verdict = judge(m, TARGETS.model_copy(update={"rpo_seconds": rpo}))
    check = next(c for c in verdict.checks if c.name is CheckName.ZERO_LOSS_PROVEN)
    assert check.passed is passed and verdict.passed is passed
    assert words in check.reason
