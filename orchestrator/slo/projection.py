"""The availability projection: a seeded Monte Carlo of yearly downtime from measured recoveries.

Each simulated year draws, for every failure kind, a Poisson number of incidents at the
topology's expected rate (``slo.incidents_per_year``; planned switchovers at
``slo.switchovers_per_year``) and, for each incident, an outage drawn with replacement from
the RTOs the drills measured for that kind (:mod:`orchestrator.slo.evidence`). A kind no
drill measured is left out of the simulation and reported as unmeasured, never given a
made-up recovery time: the projection then says how long such incidents could take on
average before the budget is spent.

Pure: every figure is a function of the arguments and the seed (numpy's PCG64 generator),
so the same inputs and seed give the same projection. ``drctl slo project`` calls
:func:`project`; :mod:`orchestrator.slo.page` renders the result.
"""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.slo.budget import SECONDS_PER_YEAR, availability_from_downtime, budget_seconds

PLANNED_SWITCHOVER = "planned-switchover"   # the source name of planned maintenance


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Strength(StrEnum):
    """How much a kind's measured RTOs can be trusted as its recovery-time distribution."""

    STRONG = "strong"
    WEAK = "weak"              # too few drills, or the newest too old
    UNMEASURED = "unmeasured"  # no drill: left out of the simulation


class Source(_Frozen):
    """One cause of downtime: its yearly rate and the measured outages (seconds) of its drills."""

    name: str
    planned: bool = False
    rate_per_year: float = Field(ge=0)
    rto_samples: tuple[float, ...] = ()
    unrecovered: int = 0                  # samples that are only lower bounds (no recovery in the window)
    newest_age_days: float | None = None  # age of the newest drill behind the samples

    def strength(self, min_drills: int, max_age_days: float) -> tuple[Strength, str]:
        if not self.rto_samples:
            return Strength.UNMEASURED, "no drill measured its recovery"
        reasons = []
        if len(self.rto_samples) < min_drills:
            reasons.append(f"only {len(self.rto_samples)} drill(s), fewer than {min_drills}")
        if self.newest_age_days is not None and self.newest_age_days > max_age_days:
            reasons.append(f"newest drill {self.newest_age_days:.0f} days old, over {max_age_days:g}")
        if self.unrecovered:
            reasons.append(f"{self.unrecovered} drill(s) did not recover in their window (RTO is a lower bound)")
        if reasons:
            return Strength.WEAK, "; ".join(reasons)
        return Strength.STRONG, f"{len(self.rto_samples)} drill(s), newest {self.newest_age_days or 0:.0f} days old"


class SourceResult(_Frozen):
    name: str
    planned: bool
    rate_per_year: float
    strength: Strength
    evidence: str                        # why the strength, in words
    drills: int
    rto_median_s: float | None
    rto_max_s: float | None
    mean_downtime_s: float | None        # per simulated year; None when unmeasured
    share_of_downtime: float | None      # of the mean yearly downtime
    share_of_budget: float | None        # of the yearly error budget


class Verdict(StrEnum):
    MEETS = "meets"                      # even the low end of the interval meets the target
    MEETS_ON_AVERAGE = "meets-on-average"  # the mean does, a bad year does not
    MISSES = "misses"


class Projection(_Frozen):
    cluster: str
    seed: int
    years: int
    target_percent: float
    budget_seconds: float
    min_drills: int
    max_age_days: float
    sources: tuple[SourceResult, ...]
    mean_downtime_s: float
    downtime_percentiles_s: dict[str, float]   # "p2.5", "p50", "p95", "p97.5", "p99" of yearly downtime
    availability_mean: float
    availability_low: float                    # 2.5th percentile of yearly availability
    availability_high: float                   # 97.5th percentile
    share_of_years_meeting: float              # simulated years whose downtime fits the budget
    verdict: Verdict
    complete: bool                             # every source with a positive rate was measured
    dominant: str | None                       # the source with the largest share of the downtime
    histogram: tuple[tuple[float, float, int], ...]   # (from s, to s, years) of yearly downtime

    def headline(self) -> str:
        """``99.9991% (95% interval 99.9987-99.9994%): meets 99.99%``, with the caveat when incomplete."""
        words = {Verdict.MEETS: "meets", Verdict.MEETS_ON_AVERAGE: "meets on average only, not in a bad year:",
                 Verdict.MISSES: "MISSES"}[self.verdict]
        # Enough decimals that the unavailability shows (99.99997%, not a rounded 100.0000%).
        digits = _decimals(self.availability_low)
        head = (f"{self.availability_mean:.{digits}f}% (95% interval {self.availability_low:.{digits}f} to "
                f"{self.availability_high:.{digits}f}%): {words} {self.target_percent:g}%")
        missing = [s.name for s in self.sources if s.strength is Strength.UNMEASURED and s.rate_per_year > 0]
        if missing:
            head += f"; INCOMPLETE: no drill measured {', '.join(missing)}, left out"
        return head


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0


def project(
    cluster: str,
    sources: list[Source],
    *,
    target_percent: float,
    seed: int,
    years: int = 100_000,
    min_drills: int = 5,
    max_age_days: float = 90.0,
    bins: int = 30,
) -> Projection:
    """Simulate ``years`` years and summarise them.

    :raises ValueError: ``years`` below 1, a negative RTO sample, or a bad target.
    """
    if years < 1:
        raise ValueError(f"years: {years} must be at least 1")
    budget = budget_seconds(target_percent)
    rng = np.random.default_rng(seed)
    total = np.zeros(years)
    per_source: dict[str, float] = {}
    for source in sources:
        samples = np.asarray(source.rto_samples, dtype=float)
        if samples.size and samples.min() < 0:
            raise ValueError(f"{source.name}: a measured RTO is negative; check the drill reports")
        if not samples.size or source.rate_per_year == 0:
            continue
        counts = rng.poisson(source.rate_per_year, size=years)
        draws = samples[rng.integers(0, samples.size, size=int(counts.sum()))]
        downtime = np.bincount(np.repeat(np.arange(years), counts), weights=draws, minlength=years)
        total += downtime
        per_source[source.name] = float(downtime.mean())
    mean = float(total.mean())
    results = []
    for source in sources:
        strength, why = source.strength(min_drills, max_age_days)
        samples = np.asarray(source.rto_samples, dtype=float)
        src_mean = per_source.get(source.name, 0.0 if samples.size else None)
        results.append(SourceResult(
            name=source.name, planned=source.planned, rate_per_year=source.rate_per_year, strength=strength,
            evidence=why, drills=int(samples.size),
            rto_median_s=float(np.median(samples)) if samples.size else None,
            rto_max_s=float(samples.max()) if samples.size else None,
            mean_downtime_s=src_mean,
            share_of_downtime=None if src_mean is None else (src_mean / mean if mean > 0 else 0.0),
            share_of_budget=None if src_mean is None else src_mean / budget,
        ))
    availability = 100.0 * (1.0 - total / SECONDS_PER_YEAR)
    low, high = _percentile(availability, 2.5), _percentile(availability, 97.5)
    avail_mean = availability_from_downtime(mean)
    if low >= target_percent:
        verdict = Verdict.MEETS
    elif avail_mean >= target_percent:
        verdict = Verdict.MEETS_ON_AVERAGE
    else:
        verdict = Verdict.MISSES
    # Years whose downtimes differ by under a microsecond are one bin: numpy cannot split a range
    # narrower than its floats' spacing into ``bins`` (a property test found RTOs of 5e-324 s).
    spread = float(total.max() - total.min()) if total.size else 0.0
    counts, edges = np.histogram(total, bins=bins if spread > 1e-6 else 1)
    dominant = max(per_source, key=lambda name: per_source[name]) if per_source and mean > 0 else None
    return Projection(
        cluster=cluster, seed=seed, years=years, target_percent=target_percent, budget_seconds=budget,
        min_drills=min_drills, max_age_days=max_age_days, sources=tuple(results), mean_downtime_s=mean,
        downtime_percentiles_s={f"p{q:g}": _percentile(total, q) for q in (2.5, 50, 95, 97.5, 99)},
        availability_mean=avail_mean, availability_low=low, availability_high=high,
        share_of_years_meeting=float((total <= budget).mean()),
        verdict=verdict,
        complete=all(s.rto_samples for s in sources if s.rate_per_year > 0),
        dominant=dominant,
        histogram=tuple((float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(len(counts))),
    )


def headroom_seconds(projection: Projection, rate_per_year: float) -> float | None:
    """The mean outage an unmeasured kind at ``rate_per_year`` could have before the mean uses the whole budget.

    None for a zero rate (it costs nothing); 0 when the budget is already spent.
    """
    if rate_per_year <= 0:
        return None
    return max(projection.budget_seconds - projection.mean_downtime_s, 0.0) / rate_per_year


def _decimals(percent: float, least: int = 4, most: int = 8) -> int:
    """Decimals that show the first significant digit of ``100 - percent`` (``least`` to ``most``)."""
    gap = 100.0 - percent
    if gap <= 0:
        return least
    return max(least, min(most, -math.floor(math.log10(gap))))
