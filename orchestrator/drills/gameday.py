"""Game days: many faults under one sustained load, judged over the whole window.

Pure: :func:`schedule` places the faults (seeded, one per equal slot, each leaving room to
recover before the next), :func:`analyse` turns the client journal and what the bank holds
afterwards into a :class:`GameDay`: each fault's RTO and RPO, request- and time-based
availability, latency-objective compliance, error-budget burn rate, and the invariants over
the whole window (no acknowledged write lost, money conserved, no duplicate, never two
writers). :mod:`orchestrator.drills.gameday_runner` does the I/O; the tests feed journals.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.drills.measure import data_loss, write_outage, writer_conflicts
from orchestrator.slo.budget import burn_rate, request_availability, time_availability

WARMUP_S = 5.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Planned(_Frozen):
    drill: str        # the drill file whose fault is injected
    offset_s: float   # seconds into the load


def schedule(drills: Sequence[str], *, duration_s: float, seed: int, recovery_s: float) -> tuple[Planned, ...]:
    """One fault per equal slot of ``[WARMUP_S, duration_s]``, at a seeded random time early enough
    in its slot to leave ``recovery_s`` before the slot ends.

    :raises ValueError: no fault, or the window cannot fit them with their recovery time.
    """
    if not drills:
        raise ValueError("--faults: name at least one drill (e.g. primary-crash,planned-switchover)")
    slot = (duration_s - WARMUP_S) / len(drills)
    if slot <= recovery_s:
        need = WARMUP_S + len(drills) * recovery_s
        raise ValueError(f"--duration: {duration_s:g} s cannot fit {len(drills)} fault(s) with {recovery_s:g} s "
                         f"to recover each; give at least {need:.0f} s or fewer faults")
    rng = random.Random(seed)
    return tuple(
        Planned(drill=name, offset_s=WARMUP_S + i * slot + rng.uniform(0, slot - recovery_s))
        for i, name in enumerate(drills)
    )


class Injection(_Frozen):
    """A fault as the runner injected it."""

    drill: str
    kind: str
    description: str
    at: float
    expect_new_primary: bool


class FaultResult(_Frozen):
    drill: str
    kind: str
    description: str
    at: float
    rto_seconds: float
    unrecovered: bool
    recovered_by: str | None
    lost: int
    rpo_seconds: float


class Check(_Frozen):
    name: str
    passed: bool
    reason: str


class GameDay(_Frozen):
    cluster: str
    seed: int
    started_at: float
    window_start: float
    window_end: float
    availability_target: float
    p99_objective_ms: float
    faults: tuple[FaultResult, ...]
    attempts: int
    acks: int
    failed: int
    indeterminate: int
    request_availability: float | None
    time_availability: float | None
    downtime_seconds: float
    p99_ms: float | None
    latency_compliance: float | None    # share of 10 s windows whose p99 met the objective
    burn_rate: float | None              # request-based bad fraction over the allowed one
    lost: int
    expected_total: int
    observed_total: int
    duplicates: int
    writer_conflicts: int
    checks: tuple[Check, ...]
    series: tuple[tuple[float, int, float | None], ...]   # (seconds since start, acks, p99 ms) per second
    # Locust's own count of the transfers (its CSV), an independent check of request availability.
    locust_requests: int | None = None
    locust_failures: int | None = None

    @property
    def locust_availability(self) -> float | None:
        if not self.locust_requests or self.locust_failures is None:
            return None
        return 100.0 * (self.locust_requests - self.locust_failures) / self.locust_requests

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def lines(self) -> list[str]:
        def pct(v: float | None) -> str:
            return "—" if v is None else f"{v:.4f}%"
        out = [
            f"game day on {self.cluster}: {'PASSED' if self.passed else 'FAILED'} "
            f"({sum(c.passed for c in self.checks)}/{len(self.checks)} checks), "
            f"{self.window_end - self.window_start:.0f} s, seed {self.seed}",
            f"availability: requests {pct(self.request_availability)} ({self.acks:,} of {self.attempts:,} acknowledged,"
            f" {self.failed} failed, {self.indeterminate} indeterminate); time {pct(self.time_availability)} "
            f"({self.downtime_seconds:.2f} s down); target {self.availability_target:g}%; Locust's own count "
            f"{pct(self.locust_availability)}",
            f"error budget burn rate {'—' if self.burn_rate is None else f'{self.burn_rate:.1f}'}x "
            f"(1x spends the {self.availability_target:g}% budget exactly over the SLO period)",
            f"latency: p99 {'—' if self.p99_ms is None else f'{self.p99_ms:.1f} ms'} over the window, objective "
            f"{self.p99_objective_ms:g} ms met in "
            f"{'—' if self.latency_compliance is None else f'{100 * self.latency_compliance:.1f}%'} of 10 s windows",
        ]
        for f in self.faults:
            rto = f"not recovered ({f.rto_seconds:.2f} s)" if f.unrecovered else f"RTO {f.rto_seconds:.2f} s"
            out.append(f"  +{f.at - self.window_start:7.1f} s {f.drill} ({f.description}): {rto}, "
                       f"{f.lost} lost (RPO {f.rpo_seconds:.2f} s)")
        out.append(f"invariants: {self.lost} acknowledged lost, balance {self.observed_total:,}/"
                   f"{self.expected_total:,}, {self.duplicates} duplicate(s), "
                   f"{self.writer_conflicts} writer conflict(s)")
        out += [f"failed {c.name}: {c.reason}" for c in self.checks if not c.passed]
        return out


def _p99(values: list[float]) -> float | None:
    return float(np.percentile(values, 99, method="inverted_cdf")) if values else None


def analyse(
    records: Sequence[JournalRecord], injections: Sequence[Injection], *, cluster: str, seed: int,
    started_at: float, window_end: float, present_ids: Collection[str], expected_total: int, observed_total: int,
    duplicates: int, availability_target: float, p99_objective_ms: float, rto_target: float,
    aborted: str | None = None, locust_counts: tuple[int, int] | None = None,
) -> GameDay:
    """Every figure of a game day from its journal; the window runs from the load's start to ``window_end``."""
    start = min((r.start for r in records), default=started_at)
    ordered = sorted(injections, key=lambda i: i.at)
    faults = []
    outages = []
    for i, inj in enumerate(ordered):
        until = ordered[i + 1].at if i + 1 < len(ordered) else window_end
        outage = write_outage(records, fault_at=inj.at, window_end=until, window_start=start,
                              expect_new_primary=inj.expect_new_primary)
        segment = [r for r in records if inj.at - 1.0 <= r.start < until]
        loss = data_loss(segment, present_ids)
        outages.append((inj.at, outage.recovered_at if outage.recovered_at is not None else until))
        faults.append(FaultResult(drill=inj.drill, kind=inj.kind, description=inj.description, at=inj.at,
                                  rto_seconds=outage.rto_seconds, unrecovered=outage.unrecovered,
                                  recovered_by=outage.recovered_by, lost=loss.lost, rpo_seconds=loss.rpo_seconds))
    # Attempts cut off by the runner stopping the load are no service failure.
    window = [r for r in records if start <= r.start <= window_end and not (r.error or "").startswith("interrupted:")]
    acks = [r for r in window if r.outcome is Outcome.ACK]
    failed = sum(r.outcome is Outcome.FAIL for r in window)
    req = request_availability(len(acks), len(window))
    tav = time_availability(outages, start, window_end)
    loss = data_loss(records, present_ids)
    conflicts = writer_conflicts(records)
    latencies = [1000.0 * (r.end - r.start) for r in acks]
    windows: dict[int, list[float]] = {}
    per_second: dict[int, list[float]] = {}
    for r in acks:
        windows.setdefault(int((r.end - start) // 10), []).append(1000.0 * (r.end - r.start))
        per_second.setdefault(int(r.end - start), []).append(1000.0 * (r.end - r.start))
    compliance = (sum((_p99(v) or 0) <= p99_objective_ms for v in windows.values()) / len(windows)
                  if windows else None)
    seconds = int(window_end - start)
    series = tuple((float(s), len(per_second.get(s, [])), _p99(per_second.get(s, []))) for s in range(seconds + 1))
    downtime = sum(min(e, window_end) - b for b, e in outages)
    worst = max(faults, key=lambda f: f.rto_seconds, default=None)
    checks = [
        Check(name="completed", passed=aborted is None,
              reason="every fault was injected and the load ran to the end" if aborted is None else aborted),
        Check(name="load-before-first-fault", passed=bool(ordered) and any(r.end < ordered[0].at for r in acks),
              reason="transfers were acknowledged before the first fault"),
        Check(name="every-fault-recovered", passed=all(not f.unrecovered for f in faults) and bool(faults),
              reason="; ".join(f"{f.drill} {'unrecovered' if f.unrecovered else f'{f.rto_seconds:.2f} s'}"
                               for f in faults) or "no fault was injected"),
        Check(name="rto", passed=worst is None or worst.rto_seconds <= rto_target,
              reason=f"worst RTO {0 if worst is None else worst.rto_seconds:.2f} s, target {rto_target:g} s"),
        Check(name="no-acknowledged-write-lost", passed=loss.lost == 0,
              reason=f"{loss.lost} of {loss.acked:,} acknowledged transfers missing from the primary"),
        Check(name="money-conserved", passed=expected_total == observed_total,
              reason=f"total balance {observed_total:,}, expected {expected_total:,}"),
        Check(name="no-duplicate-transfer", passed=duplicates == 0, reason=f"{duplicates} applied twice"),
        Check(name="single-writable-primary", passed=not conflicts,
              reason="never two writers" if not conflicts else
              f"{conflicts[0].older} acknowledged {conflicts[0].late_acks} after {conflicts[0].newer} took over"),
        Check(name="failed-transfers-not-committed", passed=loss.failed_but_committed == 0,
              reason=f"{loss.failed_but_committed} transfer(s) reported failed were committed"),
    ]
    if locust_counts is not None and locust_counts[0] > 0 and req is not None:
        independent = 100.0 * (locust_counts[0] - locust_counts[1]) / locust_counts[0]
        checks.append(Check(
            name="availability-agrees-with-locust", passed=abs(independent - req) <= 0.001,
            reason=f"journal {req:.5f}% vs Locust's own count {independent:.5f}% "
                   f"({locust_counts[0] - locust_counts[1]:,} of {locust_counts[0]:,})"))
    return GameDay(
        cluster=cluster, seed=seed, started_at=started_at, window_start=start, window_end=window_end,
        availability_target=availability_target, p99_objective_ms=p99_objective_ms, faults=tuple(faults),
        attempts=len(window), acks=len(acks), failed=failed, indeterminate=len(window) - len(acks) - failed,
        request_availability=req, time_availability=tav, downtime_seconds=downtime,
        p99_ms=_p99(latencies), latency_compliance=compliance,
        burn_rate=None if req is None else burn_rate(1 - req / 100, availability_target),
        lost=loss.lost, expected_total=expected_total, observed_total=observed_total, duplicates=duplicates,
        writer_conflicts=len(conflicts), checks=tuple(checks), series=series,
        locust_requests=None if locust_counts is None else locust_counts[0],
        locust_failures=None if locust_counts is None else locust_counts[1],
    )

