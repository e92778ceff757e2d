"""The evidence behind a projection: every stored drill report's measured RTO, grouped by failure kind.

:func:`sources` is pure (it takes reports already read and the current time); ``drctl slo
project`` reads them with :func:`orchestrator.drills.report.list_reports` from the same
reports directory ``drctl drill run`` writes. A drill counts for the kind its fault
reproduces (``kill-primary`` is a primary crash, ``partition-datacenter`` a data-centre loss
that goes silent, ``region-loss`` a lost region, ``switchover`` planned maintenance); a kind no
stored drill measured has no evidence until one runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.drills.report import DrillReport
from orchestrator.slo.projection import PLANNED_SWITCHOVER, Source
from orchestrator.topology import Cluster, IncidentKind

# drill fault kind -> the source it measures
FAULT_SOURCES: dict[str, str] = {
    "kill-primary": IncidentKind.PRIMARY_CRASH.value,
    "datacenter-outage": IncidentKind.DATACENTER_OUTAGE.value,
    "partition-datacenter": IncidentKind.DATACENTER_OUTAGE.value,
    "region-loss": IncidentKind.REGION_LOSS.value,
    "controller-leader-crash": IncidentKind.CONTROLLER_LEADER_CRASH.value,
    "zookeeper-server-loss": IncidentKind.ZOOKEEPER_SERVER_LOSS.value,
    "switchover": PLANNED_SWITCHOVER,
}
_DAY = 86_400.0


def sources(reports: Iterable[DrillReport], cluster: Cluster, *, now: float) -> list[Source]:
    """One :class:`Source` per incident kind with a rate in the cluster's SLO, then planned switchovers.

    A drill that was aborted before any recovery still counts, with its window as a lower
    bound of the RTO (flagged as unrecovered): leaving it out would flatter the projection.
    """
    samples: dict[str, list[float]] = {}
    unrecovered: dict[str, int] = {}
    newest: dict[str, float] = {}
    for report in reports:
        name = FAULT_SOURCES.get(report.fault)
        if name is None or report.cluster != cluster.name:
            continue
        outage = report.measurement.outage
        samples.setdefault(name, []).append(max(outage.rto_seconds, 0.0))
        unrecovered[name] = unrecovered.get(name, 0) + int(outage.unrecovered)
        newest[name] = max(newest.get(name, 0.0), report.started_at)
    slo = cluster.slo
    rates: list[tuple[str, float, bool]] = [(k.value, r, False) for k, r in slo.incidents_per_year.items()]
    rates.append((PLANNED_SWITCHOVER, slo.switchovers_per_year, True))
    return [
        Source(name=name, planned=planned, rate_per_year=rate, rto_samples=tuple(samples.get(name, ())),
               unrecovered=unrecovered.get(name, 0),
               newest_age_days=(now - newest[name]) / _DAY if name in newest else None)
        for name, rate, planned in rates
    ]
