"""SLO arithmetic: error budgets, burn rates, request- and time-based availability.

Pure functions of their arguments (no clock, no I/O), used by the availability projection
(:mod:`orchestrator.slo.projection`), the game day (:mod:`orchestrator.drills.gameday`) and
the capacity run. A year is 365 days, as in :mod:`orchestrator.drills.measure`: 99.99%
allows 3153.6 s (52.56 min) of downtime a year.
"""

from __future__ import annotations

from collections.abc import Iterable

SECONDS_PER_YEAR = 365 * 24 * 3600
MINUTES_PER_YEAR = SECONDS_PER_YEAR / 60


def _check_percent(availability_percent: float) -> None:
    if not 0 < availability_percent < 100:
        raise ValueError(f"availability_percent: {availability_percent!r} must be between 0 and 100 (exclusive)")


def budget_seconds(availability_percent: float, period_s: float = SECONDS_PER_YEAR) -> float:
    """Downtime ``availability_percent`` allows over ``period_s`` seconds.

    :raises ValueError: the percentage is not in (0, 100) or the period is negative.
    """
    _check_percent(availability_percent)
    if period_s < 0:
        raise ValueError(f"period_s: {period_s!r} is negative; give the period's length in seconds")
    return (100.0 - availability_percent) / 100.0 * period_s


def budget_minutes_per_year(availability_percent: float) -> float:
    """99.99% -> 52.56 min; 99.9% -> 525.6 min."""
    return budget_seconds(availability_percent) / 60.0


def availability_from_downtime(downtime_s: float, period_s: float = SECONDS_PER_YEAR) -> float:
    """The time-based availability (percent) of a period with ``downtime_s`` seconds down (clamped to it).

    :raises ValueError: the period is not positive.
    """
    if period_s <= 0:
        raise ValueError(f"period_s: {period_s!r} must be positive")
    down = min(max(downtime_s, 0.0), period_s)
    return 100.0 * (1.0 - down / period_s)


def request_availability(succeeded: int, attempted: int) -> float | None:
    """Successful requests over attempted ones, in percent; None without attempts.

    :raises ValueError: negative counts or more successes than attempts.
    """
    if succeeded < 0 or attempted < 0 or succeeded > attempted:
        raise ValueError(f"succeeded={succeeded}, attempted={attempted}: need 0 <= succeeded <= attempted")
    return None if attempted == 0 else 100.0 * succeeded / attempted


def merged_downtime(outages: Iterable[tuple[float, float]], window_start: float, window_end: float) -> float:
    """Seconds of ``[window_start, window_end]`` covered by the union of the ``(begin, end)`` outages.

    Overlapping outages count once; parts outside the window do not count.

    :raises ValueError: the window ends before it starts.
    """
    if window_end < window_start:
        raise ValueError(f"window_end {window_end} is before window_start {window_start}")
    clipped = sorted(
        (max(b, window_start), min(e, window_end)) for b, e in outages if min(e, window_end) > max(b, window_start)
    )
    total, current_begin, current_end = 0.0, None, None
    for begin, end in clipped:
        if current_end is None or begin > current_end:
            if current_end is not None and current_begin is not None:
                total += current_end - current_begin
            current_begin, current_end = begin, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_begin is not None:
        total += current_end - current_begin
    return total


def time_availability(outages: Iterable[tuple[float, float]], window_start: float, window_end: float
                      ) -> float | None:
    """Percent of the window not covered by an outage; None for an empty window."""
    if window_end <= window_start:
        return None
    return availability_from_downtime(merged_downtime(outages, window_start, window_end), window_end - window_start)


def burn_rate(bad_fraction: float, availability_percent: float) -> float:
    """How fast a window spends the error budget: its bad fraction over the allowed one.

    1.0 spends exactly the budget over the SLO period; 14.4 over an hour spends 2% of a
    30-day budget. ``bad_fraction`` is a fraction (0..1): failed requests over requests,
    or downtime over the window.

    :raises ValueError: ``bad_fraction`` outside [0, 1] or a percentage outside (0, 100).
    """
    _check_percent(availability_percent)
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction: {bad_fraction!r} must be a fraction between 0 and 1")
    return bad_fraction / ((100.0 - availability_percent) / 100.0)


def budget_fraction(downtime_s: float, availability_percent: float, period_s: float = SECONDS_PER_YEAR) -> float:
    """The share of the period's error budget ``downtime_s`` uses (above 1: the budget is blown)."""
    return max(downtime_s, 0.0) / budget_seconds(availability_percent, period_s)
