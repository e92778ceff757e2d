"""Drill measurement: RTO, RPO, invariants, availability and error budget.

The drill runner collects frozen inputs (the client journal of :mod:`orchestrator.drills.journal`,
the controller's timeline, which journaled transfer ids the new primary holds, the bank's
totals) and calls :func:`measure`, then :func:`orchestrator.drills.verdict.judge` against the
drill's targets (re-exported here for older callers). Nothing
here reads a file, a clock or a database: every figure is a function of the arguments, so
the tests feed hand-made journals. All results are frozen pydantic models that round-trip
through JSON (:mod:`orchestrator.drills.report` stores them).

Times are epoch seconds on the load generator's clock, which the controller shares in the lab.
A *writer* is the ``(server, timeline)`` pair an acknowledgement came from.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from enum import StrEnum
from itertools import pairwise

from pydantic import BaseModel, ConfigDict

from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.drills.verdict import Check as Check
from orchestrator.drills.verdict import CheckName as CheckName
from orchestrator.drills.verdict import Verdict as Verdict
from orchestrator.drills.verdict import judge as judge
from orchestrator.state import Operation
from orchestrator.topology import Targets

# Check, CheckName, Verdict and judge live in orchestrator.drills.verdict; the redundant
# aliases above keep them importable from here for older callers (the drill runner).

SECONDS_PER_YEAR = 365 * 24 * 3600

class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- inputs -------------------------------------------------------------------------------


class Milestone(StrEnum):
    """Points of a recovery; the controller's timeline events carry the middle ones as names."""

    FAULT = "fault"
    DETECTED = "detected"
    FENCED = "fenced"
    PROMOTED = "promoted"
    REPOINTED = "repointed"
    DONE = "done"
    FIRST_WRITE = "first-write"   # the client-observed recovery: see :class:`WriteOutage`


class TimelineEvent(_Frozen):
    at: float
    name: str
    detail: str = ""


Writer = tuple[str, int | None]


def _writer(record: JournalRecord) -> Writer | None:
    return None if record.server is None else (record.server, record.timeline)


def writer_label(writer: Writer | None) -> str | None:
    if writer is None:
        return None
    server, timeline = writer
    return server if timeline is None else f"{server} (timeline {timeline})"


def _differs(a: Writer, b: Writer) -> bool:
    """Another server, or the same server on another known timeline."""
    return a[0] != b[0] or (a[1] is not None and b[1] is not None and a[1] != b[1])


def ids_to_look_up(records: Iterable[JournalRecord]) -> frozenset[str]:
    """Every journaled transfer id: pass the subset found on the new primary to :func:`measure`."""
    return frozenset(r.id for r in records)


# ---- RTO: the client-observed write outage -----------------------------------------------


class WriteOutage(_Frozen):
    """From the fault to the first acknowledgement that proves writes are back.

    Recovery is the first ``ack`` that started after the fault and, when a new primary is
    expected and the pre-fault writer is known, came from another writer: acks the dying
    primary still returns a few ms after the fault are genuine (they count for the RPO) but
    prove nothing about recovery; they are counted as ``straggler_acks``. The recovery time
    is the ack's ``end`` (when the client saw it), an upper bound of the real instant.
    Without a recovery before ``window_end``, ``unrecovered`` is set and the RTO is the
    whole window. ``longest_gap_seconds`` is the longest pause between consecutive acks
    (by ``end``) in the window, open-ended at ``window_end`` when unrecovered.
    """

    fault_at: float
    window_start: float
    window_end: float
    acks_before_fault: int
    pre_fault_writer: str | None
    new_writer_required: bool
    recovered_at: float | None
    recovered_by: str | None
    rto_seconds: float
    unrecovered: bool
    straggler_acks: int
    longest_gap_seconds: float
    longest_gap_from: float | None
    longest_gap_to: float | None


def write_outage(
    records: Iterable[JournalRecord],
    *,
    fault_at: float,
    window_end: float,
    window_start: float | None = None,
    expect_new_primary: bool | None = None,
) -> WriteOutage:
    """Measure the write outage; records may come in any order.

    ``expect_new_primary``: True for faults that move the primary (kill, outage of its data
    centre, switchover), False for those that must not (controller or ZooKeeper loss), None
    to infer it (a new writer is required if any post-fault ack came from one).
    ``window_start`` defaults to the first record's start.

    :raises ValueError: ``window_end`` is before ``fault_at``.
    """
    if window_end < fault_at:
        raise ValueError(f"window_end {window_end} is before fault_at {fault_at}; end the window after the fault")
    recs = tuple(records)
    start = min(fault_at, window_start if window_start is not None else min((r.start for r in recs), default=fault_at))
    acks = sorted(
        (r for r in recs if r.outcome is Outcome.ACK and start <= r.end <= window_end),
        key=lambda r: (r.end, r.start, r.id),
    )
    before = [r for r in acks if r.end <= fault_at]
    pre = _writer(before[-1]) if before else None
    after = [r for r in acks if r.start > fault_at]

    def is_new(record: JournalRecord) -> bool:
        writer = _writer(record)
        return pre is not None and writer is not None and _differs(writer, pre)

    if expect_new_primary is None:
        require_new = any(is_new(r) for r in after)
    else:
        require_new = expect_new_primary and pre is not None
    recovery = next((r for r in after if is_new(r)), None) if require_new else next(iter(after), None)
    stragglers = [r for r in after if r is not recovery and (recovery is None or r.end <= recovery.end)]

    points = [r.end for r in acks]
    if recovery is None:   # the gap stays open until the window ends (the whole window without acks)
        points = [*(points or [start]), window_end]
    gap, gap_from, gap_to = 0.0, None, None
    for earlier, later in pairwise(points):
        if later - earlier > gap:
            gap, gap_from, gap_to = later - earlier, earlier, later
    return WriteOutage(
        fault_at=fault_at,
        window_start=start,
        window_end=window_end,
        acks_before_fault=len(before),
        pre_fault_writer=writer_label(pre),
        new_writer_required=require_new,
        recovered_at=None if recovery is None else recovery.end,
        recovered_by=None if recovery is None else writer_label(_writer(recovery)),
        rto_seconds=(window_end if recovery is None else recovery.end) - fault_at,
        unrecovered=recovery is None,
        straggler_acks=len(stragglers) if require_new else 0,
        longest_gap_seconds=gap,
        longest_gap_from=gap_from,
        longest_gap_to=gap_to,
    )


# ---- server-side phases from the controller's timeline -----------------------------------


class Mark(_Frozen):
    milestone: Milestone
    at: float | None
    since_fault: float | None


class Step(_Frozen):
    source: Milestone
    target: Milestone
    seconds: float | None   # None when either end is missing from the timeline

    @property
    def label(self) -> str:
        return f"{self.source} → {self.target}"


class ServerPhases(_Frozen):
    marks: tuple[Mark, ...]
    steps: tuple[Step, ...]

    def at(self, milestone: Milestone) -> float | None:
        return next((m.at for m in self.marks if m.milestone is milestone), None)


_STEPS = (Milestone.FAULT, Milestone.DETECTED, Milestone.FENCED, Milestone.PROMOTED, Milestone.FIRST_WRITE)


def server_phases(events: Iterable[TimelineEvent], *, fault_at: float, first_write_at: float | None) -> ServerPhases:
    """Fault → detected → fenced → promoted → first write, from the first event of each name
    at or after the fault (earlier events belong to another incident). ``first_write_at``
    is :attr:`WriteOutage.recovered_at`."""
    times: dict[Milestone, float | None] = {m: None for m in Milestone}
    for event in sorted(events, key=lambda e: e.at):
        if event.at < fault_at or event.name not in Milestone._value2member_map_:
            continue
        milestone = Milestone(event.name)
        if times[milestone] is None:
            times[milestone] = event.at
    times[Milestone.FAULT] = fault_at
    times[Milestone.FIRST_WRITE] = first_write_at
    marks = tuple(
        Mark(milestone=m, at=t, since_fault=None if t is None else t - fault_at) for m, t in times.items()
    )
    steps = []
    for source, target in pairwise(_STEPS):
        begin, end = times[source], times[target]
        steps.append(Step(source=source, target=target, seconds=None if begin is None or end is None else end - begin))
    return ServerPhases(marks=marks, steps=tuple(steps))


# ---- zero loss proven: what the controller recorded about each promotion -----------------


class Promotion(_Frozen):
    """One failover or switchover the drill caused, as the controller recorded it."""

    operation: str
    kind: str
    source: str
    target: str
    proven: bool
    proof: str
    accept_data_loss: bool
    wal_at_risk_bytes: int | None
    # A DR promotion after a region loss: the region, and the DR lag when it was lost.
    lost_region: str = ""
    data_loss_window_s: float | None = None

    def words(self) -> str:
        """``failover dc1-a -> dc2-a: zero loss proven: yes (why)``, with the WAL at risk when unproven."""
        head = f"{self.kind} {self.source} -> {self.target}: zero loss proven: "
        if self.proven:
            return head + f"yes ({self.proof or 'no reason recorded'})"
        risk = "unknown" if self.wal_at_risk_bytes is None else f"{self.wal_at_risk_bytes} bytes"
        accepted = ", data loss accepted by the operator" if self.accept_data_loss else ""
        region = ""
        if self.lost_region:
            lag = "unknown" if self.data_loss_window_s is None else f"{self.data_loss_window_s:.2f} s"
            region = f"; region {self.lost_region} lost, DR lag at loss: {lag}"
        return head + f"no ({self.proof or 'no reason recorded'}{accepted}); WAL at risk: {risk}{region}"


def promotions(history: Iterable[Operation], *, fault_at: float, until: float) -> tuple[Promotion, ...]:
    """The operations started between the fault (1 s of slack before it) and ``until``: the drill's."""
    return tuple(
        Promotion(operation=op.id, kind=op.kind.value, source=op.source, target=op.target, proven=op.proven,
                  proof=op.proof, accept_data_loss=op.accept_data_loss, wal_at_risk_bytes=op.wal_at_risk_bytes,
                  lost_region=op.lost_region, data_loss_window_s=op.data_loss_window_s)
        for op in history if fault_at - 1 <= op.started_at <= until
    )


# ---- RPO: acknowledged transfers missing after recovery ----------------------------------


class DataLoss(_Frozen):
    """Per transfer id (a retried transfer reuses its id, so attempts are grouped by id).

    ``lost``: acknowledged ids absent from the new primary. ``rpo_seconds``: the span of
    their acknowledgements, first to last (0 for a single loss: the zero-loss invariant
    catches that). Indeterminate ids (no ack, some attempt without an answer) are counted
    apart as committed or not, never as lost. ``failed_but_committed``: ids whose every
    attempt failed yet exist, which breaks the journal's contract.
    """

    acked: int
    lost: int
    lost_ids: tuple[str, ...]
    lost_first_ack_at: float | None
    lost_last_ack_at: float | None
    rpo_seconds: float
    indeterminate: int
    indeterminate_committed: int
    indeterminate_not_committed: int
    failed_but_committed: int


def data_loss(records: Iterable[JournalRecord], present_ids: Collection[str]) -> DataLoss:
    """Compare the journal with the ids found on the new primary after recovery."""
    by_id: dict[str, list[JournalRecord]] = {}
    for record in records:
        by_id.setdefault(record.id, []).append(record)
    acked: dict[str, float] = {}
    indeterminate: list[str] = []
    failed: list[str] = []
    for tid, attempts in by_id.items():
        acks = [r.end for r in attempts if r.outcome is Outcome.ACK]
        if acks:
            acked[tid] = min(acks)
        elif any(r.outcome is Outcome.INDETERMINATE for r in attempts):
            indeterminate.append(tid)
        else:
            failed.append(tid)
    lost = sorted((at, tid) for tid, at in acked.items() if tid not in present_ids)
    committed = sum(1 for tid in indeterminate if tid in present_ids)
    return DataLoss(
        acked=len(acked),
        lost=len(lost),
        lost_ids=tuple(tid for _, tid in lost),
        lost_first_ack_at=lost[0][0] if lost else None,
        lost_last_ack_at=lost[-1][0] if lost else None,
        rpo_seconds=lost[-1][0] - lost[0][0] if lost else 0.0,
        indeterminate=len(indeterminate),
        indeterminate_committed=committed,
        indeterminate_not_committed=len(indeterminate) - committed,
        failed_but_committed=sum(1 for tid in failed if tid in present_ids),
    )


# ---- invariants ---------------------------------------------------------------------------


class WriterConflict(_Frozen):
    """Evidence that two servers were writable at once (see :func:`writer_conflicts`)."""

    older: str
    newer: str
    newer_first_ack_at: float
    first_late_ack_id: str
    first_late_ack_start: float
    late_acks: int


def writer_conflicts(records: Iterable[JournalRecord], *, tolerance_s: float = 0.0) -> tuple[WriterConflict, ...]:
    """Never two writable primaries, judged from the journal alone.

    Writers (``server``, ``timeline``) are ordered: the higher timeline is newer when both
    are known and differ, otherwise the one whose first ack ended later. Writer N became
    writable no later than its first ack's ``end``. An ack from an older writer O whose
    ``start`` is after that instant (plus ``tolerance_s``) means O accepted a write while N
    was already accepting them: a conflict. Acks that started before N's first ack are
    ordinary stragglers of a failover. Acks without a server are ignored. Only definite
    evidence counts; without timelines a deliberate switch back to an old server reads as
    a conflict, which is why the workload records the timeline.
    """
    groups: dict[Writer, list[JournalRecord]] = {}
    for record in records:
        writer = _writer(record)
        if record.outcome is Outcome.ACK and writer is not None:
            groups.setdefault(writer, []).append(record)
    first = {w: min(r.end for r in acks) for w, acks in groups.items()}

    def newer(a: Writer, b: Writer) -> bool:
        if a[1] is not None and b[1] is not None and a[1] != b[1]:
            return a[1] > b[1]
        return (first[a], a[0], a[1] or 0) > (first[b], b[0], b[1] or 0)

    found = []
    ordered = sorted(groups, key=lambda w: (first[w], w[0], w[1] or 0))
    for old in ordered:
        for new in ordered:
            if new == old or not newer(new, old):
                continue
            late = sorted(
                (r for r in groups[old] if r.start > first[new] + tolerance_s), key=lambda r: (r.start, r.id)
            )
            if late:
                found.append(
                    WriterConflict(
                        older=writer_label(old) or "",
                        newer=writer_label(new) or "",
                        newer_first_ack_at=first[new],
                        first_late_ack_id=late[0].id,
                        first_late_ack_start=late[0].start,
                        late_acks=len(late),
                    )
                )
    return tuple(found)


class Invariants(_Frozen):
    expected_total: int
    observed_total: int
    duplicate_transfers: int
    writer_conflicts: tuple[WriterConflict, ...]

    @property
    def money_conserved(self) -> bool:
        return self.expected_total == self.observed_total


# ---- availability and error budget --------------------------------------------------------


class Availability(_Frozen):
    """Attempts that started in the window; only acks succeed (indeterminate is no success)."""

    attempted: int
    succeeded: int
    failed: int
    indeterminate: int
    percent: float | None   # None without attempts


def availability(records: Iterable[JournalRecord], *, window_start: float, window_end: float) -> Availability:
    counts = dict.fromkeys(Outcome, 0)
    for record in records:
        if window_start <= record.start <= window_end:
            counts[record.outcome] += 1
    attempted = sum(counts.values())
    return Availability(
        attempted=attempted,
        succeeded=counts[Outcome.ACK],
        failed=counts[Outcome.FAIL],
        indeterminate=counts[Outcome.INDETERMINATE],
        percent=100.0 * counts[Outcome.ACK] / attempted if attempted else None,
    )


class ErrorBudget(_Frozen):
    availability_percent: float
    budget_seconds_per_year: float
    outage_seconds: float
    fraction_of_budget: float
    incidents_per_year: int | None   # None: the drill caused no outage, so no bound

    def sentence(self) -> str:
        budget_min = self.budget_seconds_per_year / 60
        head = (
            f"This drill's {self.outage_seconds:.2f} s write outage uses {100 * self.fraction_of_budget:.3g}% "
            f"of the {self.availability_percent:g}% yearly error budget ({budget_min:.2f} min)"
        )
        if self.incidents_per_year is None:
            return head + "; it caused no outage, so the budget sets no limit on such incidents."
        return head + f"; the budget allows {self.incidents_per_year} such incident(s) a year."


def error_budget(outage_seconds: float, availability_percent: float) -> ErrorBudget:
    """99.99% allows 0.01% of a 365-day year: 3153.6 s (52.56 min)."""
    budget = (100.0 - availability_percent) / 100.0 * SECONDS_PER_YEAR
    outage = max(outage_seconds, 0.0)
    return ErrorBudget(
        availability_percent=availability_percent,
        budget_seconds_per_year=budget,
        outage_seconds=outage,
        fraction_of_budget=outage / budget,
        # The epsilon keeps 3153.6 / 1051.2 from flooring to 2.
        incidents_per_year=math.floor(budget / outage + 1e-9) if outage > 0 else None,
    )


# ---- the plot's series --------------------------------------------------------------------


class SeriesPoint(_Frozen):
    t: float                # bucket start, seconds relative to the fault
    acks: int               # acks whose end falls in the bucket
    p99_ms: float | None    # p99 latency of acks ending in the trailing latency window


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)]


def ack_series(
    records: Iterable[JournalRecord],
    *,
    fault_at: float,
    window_start: float,
    window_end: float,
    bucket_s: float = 0.1,
    latency_window_s: float = 1.0,
) -> tuple[SeriesPoint, ...]:
    """Throughput per ``bucket_s`` bucket and p99 latency over a trailing window (nearest rank)."""
    acks = sorted(
        ((r.end, 1000.0 * (r.end - r.start)) for r in records if r.outcome is Outcome.ACK),
        key=lambda pair: pair[0],
    )
    buckets = max(math.ceil((window_end - window_start) / bucket_s - 1e-9), 0)
    points = []
    lo = hi = 0
    for index in range(buckets):
        begin = window_start + index * bucket_s
        end = begin + bucket_s
        while hi < len(acks) and acks[hi][0] < end:
            hi += 1
        while lo < hi and acks[lo][0] < end - latency_window_s:
            lo += 1
        in_bucket = sum(1 for at, _ in acks[lo:hi] if at >= begin)
        latencies = [ms for _, ms in acks[lo:hi]]
        points.append(SeriesPoint(t=begin - fault_at, acks=in_bucket, p99_ms=_p99(latencies) if latencies else None))
    return tuple(points)


# ---- everything together ------------------------------------------------------------------


class Measurement(_Frozen):
    fault_at: float
    window_start: float
    window_end: float
    records: int
    outage: WriteOutage
    phases: ServerPhases
    loss: DataLoss
    invariants: Invariants
    availability: Availability
    budget: ErrorBudget
    events: tuple[TimelineEvent, ...]
    series: tuple[SeriesPoint, ...]
    # Reports written before promotions were recorded read back with none.
    promotions: tuple[Promotion, ...] = ()


def measure(
    records: Iterable[JournalRecord],
    *,
    fault_at: float,
    window_end: float,
    present_ids: Collection[str],
    expected_total: int,
    observed_total: int,
    targets: Targets,
    duplicate_transfers: int = 0,
    events: Iterable[TimelineEvent] = (),
    window_start: float | None = None,
    expect_new_primary: bool | None = None,
    operations: Iterable[Promotion] = (),
) -> Measurement:
    """Every figure of a drill. ``present_ids``: the journaled ids (:func:`ids_to_look_up`)
    found on the new primary; the totals and duplicate count come from the bank;
    ``operations``: the drill's promotions (:func:`promotions`).

    :raises ValueError: ``window_end`` is before ``fault_at``.
    """
    recs = tuple(records)
    evts = tuple(sorted(events, key=lambda e: e.at))
    outage = write_outage(
        recs, fault_at=fault_at, window_end=window_end, window_start=window_start,
        expect_new_primary=expect_new_primary,
    )
    start = outage.window_start
    return Measurement(
        fault_at=fault_at,
        window_start=start,
        window_end=window_end,
        records=len(recs),
        outage=outage,
        phases=server_phases(evts, fault_at=fault_at, first_write_at=outage.recovered_at),
        loss=data_loss(recs, present_ids),
        invariants=Invariants(
            expected_total=expected_total,
            observed_total=observed_total,
            duplicate_transfers=duplicate_transfers,
            writer_conflicts=writer_conflicts(recs),
        ),
        availability=availability(recs, window_start=start, window_end=window_end),
        budget=error_budget(outage.rto_seconds, targets.availability_percent),
        events=evts,
        series=ack_series(recs, fault_at=fault_at, window_start=start, window_end=window_end),
        promotions=tuple(operations),
    )
