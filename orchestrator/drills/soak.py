"""The randomized soak: seeded random faults, one round after another, under one continuous load.

Pure: the fault **catalogue** (kind -> how to draw its parameters from the seeded RNG), the
**plan** (:func:`plan`: the same seed and catalogue give the same rounds, faults and delays) and
the **analysis** (:func:`judge_round`, :func:`summarise`). :mod:`orchestrator.drills.soak_runner`
does the I/O (inject, recover, wait for full redundancy, read the journal);
:mod:`orchestrator.drills.soak_report` writes the JSON and HTML.

Registering a fault kind: call :func:`register` with its name and a :data:`Draw` (the RNG, the
topology and the cluster in, a drill :data:`~orchestrator.drills.spec.Fault` out) and add the
kind's injector to :func:`orchestrator.drills.faults.inject`. The link faults of the namespaced
lab (``partition-datacenter``, ``one-way-cut``, ...) register here the same way; a kind whose
lab is missing leaves itself out of :data:`CATALOGUE` and ``--faults`` names the kinds there are.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Collection, Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from orchestrator.decisions.detection import stall_tolerance_s
from orchestrator.drills.journal import JournalRecord
from orchestrator.drills.measure import Promotion, data_loss, write_outage, writer_conflicts
from orchestrator.drills.spec import (
    PRIMARY_DATACENTER,
    ZOOKEEPER_LEADER,
    ControllerLeaderCrash,
    DatacenterOutage,
    Fault,
    FaultKind,
    KillPrimary,
    StallLeaderController,
    StallPrimary,
    StallZooKeeper,
    Switchover,
    ZooKeeperServerLoss,
)
from orchestrator.drills.stalls import false_failovers, stall_tolerance
from orchestrator.topology import Cluster, Topology

Draw = Callable[[random.Random, Topology, Cluster], Fault]
CATALOGUE: dict[str, Draw] = {}


def register(kind: str, draw: Draw) -> None:
    """Add (or replace) a soak fault kind: ``draw`` picks its parameters from the soak's RNG.

    :raises ValueError: ``kind`` is not a lower-case name.
    """
    if not kind or not all(c.islower() or c.isdigit() or c == "-" for c in kind):
        raise ValueError(f"soak fault kind {kind!r}: use lower-case letters, digits and '-'")
    CATALOGUE[kind] = draw


# ---- today's kinds (the loopback lab) ---------------------------------------------------------

def _members_dcs(topology: Topology, cluster: Cluster) -> list[str]:
    return sorted({m.datacenter for m in cluster.members})


def _stall_primary(rng: random.Random, topology: Topology, _cluster: Cluster) -> Fault:
    """Mostly within the tolerance (each one a false-failover test), sometimes well past it."""
    tolerance = stall_tolerance_s(topology)
    if rng.random() < 0.75:
        return StallPrimary(kind=FaultKind.STALL_PRIMARY, duration_s=round(rng.uniform(0.2, 0.75 * tolerance), 2))
    return StallPrimary(kind=FaultKind.STALL_PRIMARY, duration_s=round(rng.uniform(tolerance + 3, tolerance + 6), 2))


register("primary-crash", lambda rng, t, c: KillPrimary(kind=FaultKind.KILL_PRIMARY))
register("controller-leader-crash", lambda rng, t, c: ControllerLeaderCrash(kind=FaultKind.CONTROLLER_LEADER_CRASH))
register("zookeeper-server-loss", lambda rng, t, c: ZooKeeperServerLoss(
    kind=FaultKind.ZOOKEEPER_SERVER_LOSS, datacenter=rng.choice([ZOOKEEPER_LEADER, *t.zookeeper_datacenters])))
# The target is drawn among the synchronous members; the runner moves it when it is the primary already.
register("planned-switchover", lambda rng, t, c: Switchover(
    kind=FaultKind.SWITCHOVER, to=rng.choice(list(t.synchronous_members(c)))))
register("datacenter-outage", lambda rng, t, c: DatacenterOutage(
    kind=FaultKind.DATACENTER_OUTAGE, datacenter=rng.choice([PRIMARY_DATACENTER, *_members_dcs(t, c)])))
register("stall-primary", _stall_primary)
register("stall-leader-controller", lambda rng, t, c: StallLeaderController(
    kind=FaultKind.STALL_LEADER_CONTROLLER, duration_s=round(rng.uniform(0.3, 4.0), 2)))
register("stall-zookeeper", lambda rng, t, c: StallZooKeeper(
    kind=FaultKind.STALL_ZOOKEEPER, duration_s=round(rng.uniform(0.3, 4.0), 2),
    datacenter=rng.choice([ZOOKEEPER_LEADER, *t.zookeeper_datacenters])))


# ---- the plan -------------------------------------------------------------------------------

class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Round(_Frozen):
    index: int            # from 1
    kind: str             # the catalogue's name
    fault: Fault
    delay_s: float        # after the cluster is back at full redundancy, before the fault


def kinds_of(faults: str | None) -> tuple[str, ...]:
    """``--faults a,b`` (None: the whole catalogue), in catalogue order.

    :raises ValueError: an unknown kind; the message lists the catalogue.
    """
    if faults is None:
        return tuple(CATALOGUE)
    names = [n.strip() for n in faults.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--faults: name at least one kind; the catalogue has {', '.join(CATALOGUE)}")
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise ValueError(f"--faults: unknown fault kind {unknown[0]!r}; use some of {', '.join(CATALOGUE)}")
    return tuple(k for k in CATALOGUE if k in names)


def plan(topology: Topology, cluster: Cluster, *, rounds: int, seed: int, kinds: Sequence[str],
         max_delay_s: float = 3.0) -> tuple[Round, ...]:
    """``rounds`` rounds, each a kind drawn uniformly from ``kinds``, its parameters, and a delay in
    ``[0.5, max_delay_s]``: a fault lands anywhere in the probe cycle, not in step with the soak.

    :raises ValueError: no round or no kind.
    """
    if rounds < 1:
        raise ValueError(f"--rounds: {rounds} runs nothing; give at least 1")
    if not kinds:
        raise ValueError("--faults: name at least one kind")
    rng = random.Random(seed)
    out = []
    for index in range(1, rounds + 1):
        kind = rng.choice(list(kinds))
        fault = CATALOGUE[kind](rng, topology, cluster)
        out.append(Round(index=index, kind=kind, fault=fault, delay_s=round(rng.uniform(0.5, max_delay_s), 3)))
    return tuple(out)


def expects_new_primary(fault: Fault, primary_datacenter: str) -> bool:
    """Whether the fault must move the primary (a stall need not: it is judged by false failovers)."""
    if isinstance(fault, KillPrimary | Switchover):
        return True
    if isinstance(fault, DatacenterOutage):
        return fault.datacenter in (PRIMARY_DATACENTER, primary_datacenter)
    return False


# ---- judging a round --------------------------------------------------------------------------

class Executed(_Frozen):
    """What the runner saw of one round (I/O done)."""

    index: int
    kind: str
    description: str
    at: float
    healed_at: float | None
    expect_new_primary: bool
    end: float                        # the round's window ends (the next round's fault, or the load's end)
    redundancy_s: float | None        # fault (or heal) -> every member streaming again; None: never
    money: tuple[int, int]            # (observed, expected) total balance once recovered
    promotions: tuple[Promotion, ...]
    aborted: str | None = None


class RoundResult(_Frozen):
    index: int
    kind: str
    description: str
    at: float
    healed_at: float | None
    rto_seconds: float
    unrecovered: bool
    recovered_by: str | None
    redundancy_s: float | None
    acked: int
    lost: int
    writer_conflicts: int
    money_conserved: bool
    promotions: tuple[str, ...]
    unproven: int
    false_failovers: int
    broken: tuple[str, ...]           # one line per invariant the round broke
    journal: str | None = None        # the round's journal, kept when it broke one

    @property
    def ok(self) -> bool:
        return not self.broken


def judge_round(executed: Executed, fault: Fault, topology: Topology, records: Iterable[JournalRecord],
                present_ids: Collection[str], *, window_start: float) -> RoundResult:
    """Every invariant of one round, from the journal's records of its window."""
    recs = [r for r in records if executed.at - 1.0 <= r.start < executed.end]
    outage = write_outage(recs, fault_at=executed.at, window_end=max(executed.end, executed.at),
                          window_start=window_start, expect_new_primary=executed.expect_new_primary)
    loss = data_loss(recs, present_ids)
    conflicts = writer_conflicts(recs)
    false: tuple[Promotion, ...] = ()
    why = ""
    if isinstance(fault, StallPrimary | StallLeaderController | StallZooKeeper):
        tolerance = stall_tolerance(topology, fault)
        false = false_failovers(fault, tolerance, executed.promotions)
        why = (f"a {fault.duration_s:g} s stall, within the {tolerance:g} s tolerance" if tolerance is not None
               else f"a {fault.duration_s:g} s {fault.kind}, which leaves the primary healthy")
    unproven = [p for p in executed.promotions if not p.proven and not p.accept_data_loss]
    observed, expected = executed.money
    broken = [
        *([f"aborted: {executed.aborted}"] if executed.aborted else []),
        *([f"writes did not recover within the round ({outage.rto_seconds:.1f} s)"] if outage.unrecovered else []),
        *([f"{loss.lost} acknowledged transfer(s) lost (first {loss.lost_ids[0]})"] if loss.lost else []),
        *([f"two writers: {c.older} acknowledged {c.late_acks} after {c.newer} took over" for c in conflicts]),
        *([f"money not conserved: {observed:,} instead of {expected:,}"] if observed != expected else []),
        *([f"promotion without proven zero loss: {p.words()}" for p in unproven]),
        *([f"false failover {p.source} -> {p.target} after {why}" for p in false]),
        *(["the cluster did not return to full redundancy"] if executed.redundancy_s is None else []),
    ]
    return RoundResult(
        index=executed.index, kind=executed.kind, description=executed.description, at=executed.at,
        healed_at=executed.healed_at, rto_seconds=outage.rto_seconds, unrecovered=outage.unrecovered,
        recovered_by=outage.recovered_by, redundancy_s=executed.redundancy_s, acked=loss.acked, lost=loss.lost,
        writer_conflicts=len(conflicts), money_conserved=observed == expected,
        promotions=tuple(p.words() for p in executed.promotions), unproven=len(unproven),
        false_failovers=len(false), broken=tuple(broken),
    )


# ---- the whole soak ---------------------------------------------------------------------------

class KindSummary(_Frozen):
    kind: str
    rounds: int
    rto_median_s: float
    rto_max_s: float
    redundancy_median_s: float | None
    redundancy_max_s: float | None
    failovers: int
    false_failovers: int
    broken: int


class Soak(_Frozen):
    cluster: str
    seed: int
    rounds_planned: int
    kinds: tuple[str, ...]
    started_at: float
    finished_at: float
    stall_tolerance_s: float
    rounds: tuple[RoundResult, ...]
    summary: tuple[KindSummary, ...]
    acked: int
    lost: int
    writer_conflicts: int
    false_failovers: int
    duplicates: int                   # transfers applied twice, over the whole soak
    aborted: str | None = None

    @property
    def passed(self) -> bool:
        return (self.aborted is None and len(self.rounds) == self.rounds_planned and self.duplicates == 0
                and all(r.ok for r in self.rounds))

    def lines(self) -> list[str]:
        out = [f"soak on {self.cluster}: {'PASSED' if self.passed else 'FAILED'}, {len(self.rounds)}/"
               f"{self.rounds_planned} rounds, seed {self.seed}, {self.finished_at - self.started_at:.0f} s; "
               f"{self.acked:,} acknowledged transfers, {self.lost} lost, {self.writer_conflicts} overlapping "
               f"writer(s), {self.false_failovers} false failover(s) (stall tolerance {self.stall_tolerance_s:g} s), "
               f"{self.duplicates} duplicate transfer(s)",
               f"{'kind':<24} {'rounds':>6} {'RTO med':>8} {'RTO max':>8} {'redund. med':>11} {'redund. max':>11} "
               f"{'failovers':>9} {'false':>5} {'broken':>6}"]

        def s(v: float | None) -> str:
            return "—" if v is None else f"{v:.2f}"
        for k in self.summary:
            out.append(f"{k.kind:<24} {k.rounds:>6} {k.rto_median_s:>8.2f} {k.rto_max_s:>8.2f} "
                       f"{s(k.redundancy_median_s):>11} {s(k.redundancy_max_s):>11} {k.failovers:>9} "
                       f"{k.false_failovers:>5} {k.broken:>6}")
        for r in self.rounds:
            if r.broken:
                out.append(f"round {r.index} ({r.kind}: {r.description}) broke: {'; '.join(r.broken)}"
                           + (f" [journal {r.journal}]" if r.journal else ""))
        if self.aborted:
            out.append(f"aborted: {self.aborted}")
        return out


def summarise(rounds: Sequence[RoundResult]) -> tuple[KindSummary, ...]:
    """Per kind, in order of first appearance: the RTO and redundancy distributions and the counts."""
    kinds: dict[str, list[RoundResult]] = {}
    for r in rounds:
        kinds.setdefault(r.kind, []).append(r)
    out = []
    for kind, group in kinds.items():
        rtos = [r.rto_seconds for r in group]
        redundancy = [r.redundancy_s for r in group if r.redundancy_s is not None]
        out.append(KindSummary(
            kind=kind, rounds=len(group), rto_median_s=statistics.median(rtos), rto_max_s=max(rtos),
            redundancy_median_s=statistics.median(redundancy) if redundancy else None,
            redundancy_max_s=max(redundancy) if redundancy else None,
            failovers=sum(sum(p.startswith("failover ") for p in r.promotions) for r in group),
            false_failovers=sum(r.false_failovers for r in group), broken=sum(not r.ok for r in group)))
    return tuple(out)
