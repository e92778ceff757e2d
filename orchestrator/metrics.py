"""A controller's Prometheus metrics, served at ``/metrics`` by its REST API (:mod:`orchestrator.api.app`).

:class:`ControllerMetrics` owns one :class:`~prometheus_client.CollectorRegistry` (never the
global one: two controllers in one process, as in the tests, keep their own). Two sources:

* **events**: the controller subscribes :meth:`ControllerMetrics.on_event` to its event log;
  :func:`counted` maps an event to a counter (failovers and switchovers by outcome, fencing).
  Each operation is run by one leader, so ``sum()`` over every controller counts each once.
* **reads at scrape time**: the cluster state in ZooKeeper (roles, timeline, lag, the DR lag
  against its bound) and the drill reports on disk (the last RTO/RPO per drill, and the share
  of the yearly error budget the drills' outages used in the last 365 days: :func:`budget_used`).
* **backups** (clusters with a ``backup`` section): the leader's last reading of the primary's
  ``pg_stat_archiver`` (:meth:`ControllerMetrics.note_archiver`; no database call per scrape),
  and the newest verified restore read from the store through a :class:`Cached` reader (one
  store listing per cluster per ``ttl``, not per scrape).

The node agents export the per-member view (role, lag in seconds, probe latency, ZooKeeper
contact) on their health ports (:mod:`orchestrator.agent.health`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.decisions.archiving import ArchiverStats, archive_age_seconds, failing
from orchestrator.errors import OrchestratorError
from orchestrator.state import ClusterState, Outcome, Role
from orchestrator.topology import Topology

SECONDS_PER_YEAR = 365 * 86400


# ---- pure parts ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Counted:
    counter: str        # "failovers" | "switchovers" | "fencing"
    cluster: str
    label: str          # the outcome, or how the member was fenced


def counted(event: str, fields: dict[str, Any]) -> Counted | None:
    """Which counter an event of the controller's log increments, if any."""
    cluster = str(fields.get("cluster", ""))
    if event in ("done", "aborted") and fields.get("kind") in ("failover", "switchover"):
        outcome = Outcome.DONE if event == "done" else Outcome.ABORTED
        return Counted(f"{fields['kind']}s", cluster, outcome.value)
    if event == "switchover-rolled-back":
        return Counted("switchovers", cluster, Outcome.ROLLED_BACK.value)
    if event == "fenced":
        return Counted("fencing", cluster, "before-promotion")
    if event == "fenced-stray":
        return Counted("fencing", cluster, "stray-primary")
    return None


@dataclass(frozen=True)
class DrillOutage:
    cluster: str
    started_at: float
    outage_seconds: float


def budget_used(outages: Iterable[DrillOutage], cluster: str, availability_percent: float, now: float) -> float:
    """The fraction of ``cluster``'s yearly error budget the drills' write outages used in the last 365 days."""
    budget = (100.0 - availability_percent) / 100.0 * SECONDS_PER_YEAR
    spent = sum(max(o.outage_seconds, 0.0) for o in outages
                if o.cluster == cluster and now - SECONDS_PER_YEAR <= o.started_at <= now)
    return spent / budget if budget > 0 else 0.0


@dataclass
class Cached:
    """``read(key)`` remembered for ``ttl`` seconds per key (a failed read is remembered as None too)."""

    read: Callable[[str], float | None]
    ttl: float
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[float, float | None]] = field(default_factory=dict)

    def __call__(self, key: str) -> float | None:
        now = self.clock()
        hit = self._seen.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            value = self.read(key)
        except OrchestratorError:
            value = None
        self._seen[key] = (now, value)
        return value


# ---- the registry --------------------------------------------------------------------------------

StateReader = Callable[[str], ClusterState | None]


class _Collector(Collector):
    def __init__(self, owner: ControllerMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._owner.state_families()
        yield from self._owner.drill_families()
        yield from self._owner.backup_families()


class ControllerMetrics:
    def __init__(self, topology: Topology, *, read_state: StateReader, reports_dir: Path | None,
                 identity: str = "", clock: Callable[[], float] = time.time,
                 last_verified: Callable[[str], float | None] | None = None) -> None:
        self.topology = topology
        self._last_verified = last_verified
        self._archiver: dict[str, tuple[str, ArchiverStats]] = {}
        self._read_state = read_state
        self._reports = reports_dir
        self._identity = identity
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self._counters = {
            "failovers": Counter("drctl_failovers", "Failovers this controller ran, by outcome",
                                 ["cluster", "outcome"], registry=self.registry),
            "switchovers": Counter("drctl_switchovers", "Switchovers this controller ran, by outcome",
                                   ["cluster", "outcome"], registry=self.registry),
            "fencing": Counter("drctl_fencing_events", "Members this controller fenced (before a promotion, "
                               "or a stray primary)", ["cluster", "how"], registry=self.registry),
        }
        for cluster in topology.clusters:   # zero from the start: rate() and absence alerts work at once
            for outcome in Outcome:
                self._counters["failovers"].labels(cluster.name, outcome.value)
                self._counters["switchovers"].labels(cluster.name, outcome.value)
        self.registry.register(_Collector(self))

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        """An :class:`~orchestrator.events.EventLog` listener; never raises."""
        hit = counted(event, fields)
        if hit is not None:
            self._counters[hit.counter].labels(hit.cluster, hit.label).inc()

    def note_archiver(self, cluster: str, member: str, stats: ArchiverStats | None) -> None:
        """The leader's latest ``pg_stat_archiver`` reading of ``cluster``'s primary (None: forget it)."""
        if stats is None:
            self._archiver.pop(cluster, None)
        else:
            self._archiver[cluster] = (member, stats)

    # ---- read at scrape time -------------------------------------------------------------------

    def state_families(self) -> Iterator[GaugeMetricFamily]:
        role = GaugeMetricFamily("drctl_cluster_member_role", "1 for the role the leader last saw a member in",
                                 labels=["cluster", "member", "role"])
        primary = GaugeMetricFamily("drctl_cluster_primary", "1 for the member the cluster state names primary",
                                    labels=["cluster", "member"])
        lag = GaugeMetricFamily("drctl_cluster_member_lag_bytes", "WAL a member lacks against the primary, "
                                "as the leader last measured it", labels=["cluster", "member"])
        timeline = GaugeMetricFamily("drctl_cluster_timeline", "The primary's timeline", labels=["cluster"])
        generation = GaugeMetricFamily("drctl_cluster_generation", "Promotions so far (+1)", labels=["cluster"])
        paused = GaugeMetricFamily("drctl_cluster_paused", "1 in maintenance (no automatic failover)",
                                   labels=["cluster"])
        dr_lag = GaugeMetricFamily("drctl_dr_lag_seconds", "The cross-region DR standbys' lag (the best one's "
                                   "receive lag)", labels=["cluster"])
        dr_bound = GaugeMetricFamily("drctl_dr_lag_bound_seconds", "replication.dr_lag.max_seconds",
                                     labels=["cluster"])
        dr_over = GaugeMetricFamily("drctl_dr_lag_over_bound", "1 while the DR lag is over its bound",
                                    labels=["cluster"])
        leader = GaugeMetricFamily("drctl_controller_leader", "1 when this controller leads (the state's leader)",
                                   labels=["cluster", "controller"])
        up = GaugeMetricFamily("drctl_cluster_state_readable", "1 when this controller could read the cluster "
                               "state from ZooKeeper at this scrape", labels=["cluster"])
        for cluster in self.topology.clusters:
            name = cluster.name
            try:
                state = self._read_state(name)
            except OrchestratorError:
                state = None
            up.add_metric([name], 1.0 if state is not None else 0.0)
            if state is None:
                continue
            for member, record in sorted(state.members.items()):
                for each in Role:
                    role.add_metric([name, member, each.value], 1.0 if record.role is each else 0.0)
                if record.lag_bytes is not None:
                    lag.add_metric([name, member], float(max(record.lag_bytes, 0)))
            for each_member in cluster.members:
                primary.add_metric([name, each_member.name], 1.0 if state.primary == each_member.name else 0.0)
            if state.timeline is not None:
                timeline.add_metric([name], float(state.timeline))
            generation.add_metric([name], float(state.generation))
            paused.add_metric([name], 1.0 if state.paused else 0.0)
            leader.add_metric([name, self._identity], 1.0 if state.leader == self._identity else 0.0)
            if state.dr_lag is not None:
                dr_bound.add_metric([name], state.dr_lag.max_seconds)
                dr_over.add_metric([name], 1.0 if state.dr_lag.over else 0.0)
                if state.dr_lag.lag_seconds is not None:
                    dr_lag.add_metric([name], state.dr_lag.lag_seconds)
        yield from (role, primary, lag, timeline, generation, paused, dr_lag, dr_bound, dr_over, leader, up)

    def drill_families(self) -> Iterator[GaugeMetricFamily]:
        from orchestrator.drills.report import list_reports

        labels = ["drill", "cluster"]
        rto = GaugeMetricFamily("drctl_drill_last_rto_seconds", "The last run's write outage (RTO)", labels=labels)
        rpo = GaugeMetricFamily("drctl_drill_last_rpo_seconds", "The span of the last run's lost acknowledged "
                                "writes (RPO)", labels=labels)
        lost = GaugeMetricFamily("drctl_drill_last_lost_writes", "Acknowledged writes the last run lost",
                                 labels=labels)
        passed = GaugeMetricFamily("drctl_drill_last_passed", "1 when the last run passed", labels=labels)
        when = GaugeMetricFamily("drctl_drill_last_run_timestamp_seconds", "When the last run started",
                                 labels=labels)
        budget = GaugeMetricFamily("drctl_error_budget_used_ratio", "Share of the yearly error budget "
                                   "(targets.availability_percent) the drills' outages used in the last 365 days",
                                   labels=["cluster"])
        entries = list_reports(self._reports) if self._reports is not None else []
        seen: set[str] = set()
        outages: list[DrillOutage] = []
        for entry in entries:   # newest first
            report = entry.report
            if report is None:
                continue
            m = report.measurement
            outages.append(DrillOutage(report.cluster, report.started_at, m.outage.rto_seconds))
            if report.drill in seen:
                continue
            seen.add(report.drill)
            key = [report.drill, report.cluster]
            rto.add_metric(key, m.outage.rto_seconds)
            rpo.add_metric(key, m.loss.rpo_seconds)
            lost.add_metric(key, float(m.loss.lost))
            passed.add_metric(key, 1.0 if report.verdict.passed else 0.0)
            when.add_metric(key, report.started_at)
        now = self._clock()
        for cluster in self.topology.clusters:
            budget.add_metric([cluster.name], budget_used(outages, cluster.name,
                                                          cluster.targets.availability_percent, now))
        yield from (rto, rpo, lost, passed, when, budget)

    def backup_families(self) -> Iterator[GaugeMetricFamily]:
        labels = ["cluster", "member"]
        lag = GaugeMetricFamily("drctl_backup_archive_lag_seconds", "Seconds since the primary last archived "
                                "a WAL segment (pg_stat_archiver.last_archived_time), as the leader last read it",
                                labels=labels)
        failed = GaugeMetricFamily("drctl_backup_archive_failed_count", "Failed archive_command runs on the "
                                   "primary since its statistics were reset (pg_stat_archiver.failed_count)",
                                   labels=labels)
        failing_now = GaugeMetricFamily("drctl_backup_archive_failing", "1 while the primary's last archiving "
                                        "attempt failed", labels=labels)
        verified = GaugeMetricFamily("drctl_backup_last_verified_restore_timestamp_seconds", "When a backup was "
                                     "last proven by a verified restore ('drctl backup verify')", labels=["cluster"])
        now = self._clock()
        for cluster in self.topology.clusters:
            if cluster.backup is None:
                continue
            if cluster.name in self._archiver:
                member, stats = self._archiver[cluster.name]
                age = archive_age_seconds(stats, now)
                if age is not None:
                    lag.add_metric([cluster.name, member], age)
                failed.add_metric([cluster.name, member], float(stats.failed_count))
                failing_now.add_metric([cluster.name, member], 1.0 if failing(stats) else 0.0)
            at = self._last_verified(cluster.name) if self._last_verified is not None else None
            if at is not None:
                verified.add_metric([cluster.name], at)
        yield from (lag, failed, failing_now, verified)
