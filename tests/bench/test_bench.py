"""The failover bench: aggregation and report on hand-made rounds, the loop's failure handling
with fake systems, and one quick real round against dr-orchestrator (the CI smoke test)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bench.ours import DrOrchestratorSystem
from orchestrator.bench.report import (
    BENCH_JSON,
    BENCH_MD,
    BOXPLOT_PNG,
    percentile,
    summarize_system,
    summary_lines,
    write_bench,
)
from orchestrator.bench.runner import (
    BenchResult,
    LoadSettings,
    RoundResult,
    measure_round,
    run_bench,
    sync_off_acks,
    sync_off_intervals,
)
from orchestrator.bench.system import Fault, RoundFacts, SyncSample
from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.processes import pids_mentioning
from tests.conftest import TEST_PORT_BASE

OLD, NEW, OTHER = "127.0.0.1:32010", "127.0.0.1:32011", "127.0.0.1:32012"
T0 = 1_750_000_000.0
FAULT = T0 + 3.0


def ack(tid: str, end: float, server: str = NEW, *, outcome: Outcome = Outcome.ACK) -> JournalRecord:
    return JournalRecord(id=tid, src=1, dst=2, amount=5, start=end - 0.004, end=end, outcome=outcome,
                         server=server if outcome is Outcome.ACK else None, timeline=None)


def sample(at: float, names: str, server: str = NEW) -> SyncSample:
    return SyncSample(at=at, server=server, synchronous_standby_names=names)


def round_result(system: str, n: int, rto: float | None, *, ok: bool = True, lost: int = 0, acked: int = 100,
                 sync_off: int = 0, rejoined: bool = True, total: int = 20_000) -> RoundResult:
    return RoundResult(system=system, round=n, ok=ok, error=None if ok else "RuntimeError: boom",
                       started_at=T0 + n, observe_s=5.0, fault_at=FAULT + n, rto_seconds=rto, acked=acked,
                       lost=lost, expected_total=20_000, observed_total=total, sync_off_acks=sync_off,
                       old_primary_rejoined=rejoined)


def bench_result(rounds: Sequence[RoundResult], systems: tuple[str, ...]) -> BenchResult:
    load = LoadSettings(users=4, spawn_rate=4, user_rate=25, accounts=20, initial_balance=1000, fault_at_s=3,
                        duration_s=dict.fromkeys(systems, 10.0), observe_s=dict.fromkeys(systems, 5.0))
    return BenchResult(started_at=T0, finished_at=T0 + 60, systems=systems, reference=systems[0],
                       rounds_requested=max(r.round for r in rounds), load=load,
                       settings={s: {"ttl": 30, "name": s} for s in systems}, rounds=tuple(rounds))


# ---- aggregation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([2.0], 95, 2.0),
    ([1.0, 2.0], 50, 1.5),
    ([float(v) for v in range(1, 11)], 95, 9.55),
    ([float(v) for v in range(1, 11)], 100, 10.0),
    ([5.0, 1.0, 3.0], 0, 1.0),
], ids=["single", "two-median", "ten-p95", "max", "unsorted-min"])
def test_percentile_interpolates_between_closest_ranks(values: list[float], q: int, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="need values"):
        percentile([], 50)


def test_summary_counts_measured_rounds_and_ignores_failed_ones() -> None:
    rounds = [round_result("dr-orchestrator", n, rto) for n, rto in enumerate([0.4, 0.3, 0.5, 0.35, 2.0], 1)]
    rounds += [round_result("dr-orchestrator", 6, None, ok=False),
               round_result("patroni-default", 1, 30.0, lost=1, sync_off=7, rejoined=False, total=19_990)]
    s = summarize_system("dr-orchestrator", rounds)
    assert (s.rounds, s.measured, s.failed) == (6, 5, 1)
    assert s.rto_median == pytest.approx(0.4)
    assert s.rto_p95 == pytest.approx(2.0 - 0.2 * 1.5)     # between 0.5 and 2.0 at 80 % of the last step
    assert s.rto_max == pytest.approx(2.0)
    assert (s.lost_total, s.acked_total, s.sync_off_acks_total, s.rejoined) == (0, 500, 0, 5)
    assert s.balance_conserved_all
    peer = summarize_system("patroni-default", rounds)
    assert (peer.lost_total, peer.sync_off_acks_total, peer.rejoined) == (1, 7, 0)
    assert not peer.balance_conserved_all


def test_report_states_the_ratio_of_each_peers_median_to_ours() -> None:
    rounds = [round_result("dr-orchestrator", 1, 0.4), round_result("dr-orchestrator", 2, 0.6),
              round_result("patroni-default", 1, 30.0), round_result("patroni-default", 2, 20.0),
              round_result("fast-peer", 1, 0.25), round_result("fast-peer", 2, 0.25)]
    result = bench_result(rounds, ("dr-orchestrator", "patroni-default", "fast-peer"))
    lines = summary_lines(result)
    assert "dr-orchestrator restores writes 50.0\u00d7 faster than patroni-default (median 0.50 s vs 25.00 s)" in lines
    assert "dr-orchestrator restores writes 2.0\u00d7 slower than fast-peer (median 0.50 s vs 0.25 s)" in lines


# ---- the zero-loss hole: acks while the new primary had synchronous replication off --------


SAMPLES = (
    sample(FAULT + 0.50, ""),            # promoted without a quorum...
    sample(FAULT + 0.55, ""),
    sample(FAULT + 0.60, "ANY 1 (b, c)"),  # ...until its agent restored it
    sample(FAULT + 0.65, "ANY 1 (b, c)"),
)


@pytest.mark.parametrize(("end", "server", "counted"), [
    (FAULT + 0.52, NEW, True),           # inside the sync-off interval
    (FAULT + 0.58, NEW, True),           # held until the next sample
    (FAULT + 0.45, NEW, True),           # before the first poll, which showed it off
    (FAULT + 0.60, NEW, False),          # the sample that shows it back on
    (FAULT + 0.70, NEW, False),
    (FAULT + 0.52, OTHER, False),        # another server: its setting is not known to be off
], ids=["inside", "until-next-sample", "before-first-poll", "back-on", "after", "other-server"])
def test_an_ack_is_counted_exactly_when_its_server_had_sync_off(end: float, server: str, counted: bool) -> None:
    records = [ack("t1", FAULT - 1.0, OLD), ack("planted", end, server)]
    assert sync_off_acks(records, SAMPLES) == (1 if counted else 0)


def test_sync_off_intervals_merge_consecutive_empty_samples() -> None:
    assert sync_off_intervals(SAMPLES) == {NEW: [(float("-inf"), FAULT + 0.60)]}
    assert sync_off_intervals([sample(1.0, "ANY 1 (a)"), sample(2.0, ""), sample(3.0, "")]) == {
        NEW: [(2.0, float("inf"))]}


def test_failed_and_indeterminate_transfers_are_not_acks_with_sync_off() -> None:
    records = [ack("f", FAULT + 0.52, outcome=Outcome.FAIL), ack("i", FAULT + 0.53, outcome=Outcome.INDETERMINATE)]
    assert sync_off_acks(records, SAMPLES) == 0


# ---- one round from frozen inputs -------------------------------------------------------


def journal() -> list[JournalRecord]:
    records = [ack(f"pre{i}", T0 + 1 + i * 0.01, OLD) for i in range(150)]          # until FAULT - 0.5
    records += [ack(f"out{i}", FAULT + 0.01 * i, outcome=Outcome.FAIL) for i in range(40)]
    records += [ack(f"post{i}", FAULT + 0.5 + i * 0.01, NEW) for i in range(100)]   # first ack at +0.50
    return records


def test_measure_round_gives_rto_loss_balance_and_the_sync_off_count() -> None:
    records = journal()
    present = {r.id for r in records if r.outcome is Outcome.ACK} - {"pre149"}
    facts = RoundFacts(new_primary="b", old_primary_rejoined=True, sync_samples=SAMPLES, notes={"polls": 4})
    result = measure_round(system="x", round_no=1, started_at=T0, observe_s=5.0,
                           fault=Fault(at=FAULT, member="a", pids=(11, 12)), facts=facts, records=records,
                           present_ids=present, expected_total=20_000, observed_total=20_000)
    assert result.ok
    assert result.rto_seconds == pytest.approx(0.5)
    assert (result.acked, result.lost, result.new_primary, result.killed_pids) == (250, 1, "b", (11, 12))
    assert result.balance_conserved
    assert result.sync_off_acks == 10                        # ends at +0.50 .. +0.59
    assert result.sync_off_seconds == pytest.approx(0.10)
    assert [c.synchronous_standby_names for c in result.sync_changes] == ["", "ANY 1 (b, c)"]


def test_a_round_without_acks_before_the_fault_is_not_measured() -> None:
    records = [ack(f"post{i}", FAULT + 0.5 + i * 0.01, NEW) for i in range(10)]
    result = measure_round(system="x", round_no=1, started_at=T0, observe_s=5.0, fault=Fault(at=FAULT, member="a"),
                           facts=RoundFacts(new_primary="b", old_primary_rejoined=True), records=records,
                           present_ids=set(), expected_total=1, observed_total=1)
    assert not result.ok and "proves nothing" in (result.error or "")


# ---- the report files ---------------------------------------------------------------------


def test_write_bench_writes_json_markdown_and_boxplot(tmp_path: Path) -> None:
    rounds = [round_result("dr-orchestrator", 1, 0.4), round_result("dr-orchestrator", 2, 0.6),
              round_result("pg_auto_failover-aggressive", 1, 4.0, sync_off=120),
              round_result("pg_auto_failover-aggressive", 2, None, ok=False)]
    result = bench_result(rounds, ("dr-orchestrator", "pg_auto_failover-aggressive"))
    path = write_bench(result, tmp_path / "reports")
    assert path.name == "bench-20250615T150640Z"
    assert BenchResult.model_validate_json((path / BENCH_JSON).read_text()) == result
    assert json.loads((path / BENCH_JSON).read_text())["settings"]["pg_auto_failover-aggressive"]["ttl"] == 30
    md = (path / BENCH_MD).read_text()
    assert "| dr-orchestrator | 2/2 | 0.50 s | 0.59 s | 0.60 s | 0 of 200 | yes | 0 (0.00 s) | 2/2 | 1.0\u00d7 |" in md
    assert "| pg_auto_failover-aggressive | 1/2 | 4.00 s |" in md
    assert "dr-orchestrator restores writes 8.0\u00d7 faster than pg_auto_failover-aggressive" in md
    assert "RuntimeError: boom" in md and '"ttl": 30' in md
    assert (path / BOXPLOT_PNG).read_bytes().startswith(b"\x89PNG")
    assert write_bench(result, tmp_path / "reports").name == "bench-20250615T150640Z-2"


# ---- the loop: failing rounds, Ctrl-C, stop() always -----------------------------------------


class FakeSystem:
    """A system whose start() fails: exercises the loop without Locust or a lab."""

    def __init__(self, name: str, calls: list[str], error: BaseException) -> None:
        self.name = name
        self.calls = calls
        self.error = error

    def settings(self) -> dict[str, Any]:
        return {"fake": True}

    def ports(self) -> tuple[int, ...]:
        return ()

    def start(self, workdir: Path) -> None:
        self.calls.append(f"start {self.name}")
        raise self.error

    def conninfo(self) -> str:
        raise AssertionError("not started")

    def kill_primary(self) -> Fault:
        raise AssertionError("not started")

    def observe(self, fault: Fault, seconds: float) -> RoundFacts:
        raise AssertionError("not started")

    def stop(self) -> None:
        self.calls.append(f"stop {self.name}")


def test_a_failing_round_is_recorded_and_the_bench_goes_on_alternating_order(tmp_path: Path) -> None:
    calls: list[str] = []
    systems = [FakeSystem("one", calls, RuntimeError("no binaries")), FakeSystem("two", calls, OSError("disk"))]
    result = run_bench(systems, 2, tmp_path / "work", users=2, duration_s=8, fault_at_s=3, accounts=10,
                       user_rate=5, observe_s={"two": 40.0})
    # Each round ends with its system's stop(); the final stops run again (no-ops for real systems).
    assert calls == ["start one", "stop one", "start two", "stop two", "start two", "stop two", "start one",
                     "stop one", "stop one", "stop two"]
    assert [(r.system, r.round, r.ok) for r in result.rounds] == [
        ("one", 1, False), ("two", 1, False), ("two", 2, False), ("one", 2, False)]
    assert result.rounds[0].error == "RuntimeError: no binaries"
    assert result.load.observe_s == {"one": 5.0, "two": 40.0}
    assert result.load.duration_s == {"one": 10.0, "two": 45.0}   # the load covers each window
    assert result.settings == {"one": {"fake": True}, "two": {"fake": True}}
    assert any("round 2 failed: OSError: disk" in line for line in summary_lines(result))


def test_ctrl_c_stops_every_system_and_propagates(tmp_path: Path) -> None:
    calls: list[str] = []
    systems = [FakeSystem("one", calls, KeyboardInterrupt()), FakeSystem("two", calls, RuntimeError("x"))]
    with pytest.raises(KeyboardInterrupt):
        run_bench(systems, 3, tmp_path / "work", users=2, duration_s=8, fault_at_s=3, accounts=10, user_rate=5)
    assert calls == ["start one", "stop one", "stop two"]   # Ctrl-C skips the round's teardown, not the stops


# ---- the CI smoke test: one quick real round of dr-orchestrator ----------------------------


@pytest.mark.lab
@pytest.mark.timeout(150)
def test_one_quick_round_of_dr_orchestrator(tmp_path: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="drctl-bench-"))
    work.chmod(0o755)  # the postgres user traverses it
    lines: list[str] = []
    try:
        system = DrOrchestratorSystem(port_base=TEST_PORT_BASE + 6000)
        result = run_bench([system], 1, work, users=4, duration_s=8, fault_at_s=3,
                           accounts=20, user_rate=25, progress=lines.append)
        leftovers = pids_mentioning(str(work))
        lab_left = (work / "dr-orchestrator" / "lab").exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)   # the journals; run_bench has stopped every process
    path = write_bench(result, tmp_path / "reports")
    print("\n".join([*lines, *summary_lines(result), str(path)]))
    (r,) = result.rounds
    assert r.ok, r.error
    assert r.rto_seconds is not None and not r.unrecovered  # its speed is the benchmark's to report
    assert r.acked > 0 and r.lost == 0
    assert r.balance_conserved
    assert r.sync_off_acks == 0 and r.sync_samples > 0
    assert r.new_primary in ("b", "c") and r.fault_member == "a"
    assert result.stop_errors == {}
    assert leftovers == []
    assert not lab_left
