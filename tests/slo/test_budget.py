"""SLO arithmetic: tables of known answers and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.slo.budget import (
    SECONDS_PER_YEAR,
    availability_from_downtime,
    budget_fraction,
    budget_minutes_per_year,
    budget_seconds,
    burn_rate,
    merged_downtime,
    request_availability,
    time_availability,
)

percent = st.floats(min_value=50, max_value=99.9999)


@pytest.mark.parametrize(("target", "minutes"), [
    pytest.param(99.99, 52.56, id="four-nines"),
    pytest.param(99.9, 525.6, id="three-nines"),
    pytest.param(99.999, 5.256, id="five-nines"),
    pytest.param(99.0, 5256.0, id="two-nines"),
])
def test_budget_minutes_per_year(target: float, minutes: float) -> None:
    assert budget_minutes_per_year(target) == pytest.approx(minutes)


@pytest.mark.parametrize(("bad", "target", "rate"), [
    pytest.param(0.0001, 99.99, 1.0, id="at-budget"),
    pytest.param(0.00144, 99.99, 14.4, id="fast-burn"),
    pytest.param(0.0, 99.99, 0.0, id="perfect"),
    pytest.param(0.01, 99.0, 1.0, id="two-nines-at-budget"),
])
def test_burn_rate(bad: float, target: float, rate: float) -> None:
    assert burn_rate(bad, target) == pytest.approx(rate)


@pytest.mark.parametrize(("outages", "expected"), [
    pytest.param([], 0.0, id="none"),
    pytest.param([(10, 12)], 2.0, id="one"),
    pytest.param([(10, 12), (11, 13)], 3.0, id="overlap-counts-once"),
    pytest.param([(10, 12), (12, 13)], 3.0, id="touching"),
    pytest.param([(-5, 1)], 1.0, id="clipped-at-start"),
    pytest.param([(99, 200)], 1.0, id="clipped-at-end"),
    pytest.param([(200, 300)], 0.0, id="outside"),
    pytest.param([(10, 20), (12, 14), (30, 31)], 11.0, id="nested"),
])
def test_merged_downtime(outages: list[tuple[float, float]], expected: float) -> None:
    assert merged_downtime(outages, 0, 100) == pytest.approx(expected)


def test_request_and_time_availability() -> None:
    assert request_availability(9_999, 10_000) == pytest.approx(99.99)
    assert request_availability(0, 0) is None
    assert time_availability([(0, 1)], 0, 100) == pytest.approx(99.0)
    assert time_availability([], 5, 5) is None
    assert budget_fraction(budget_seconds(99.99) / 2, 99.99) == pytest.approx(0.5)


@pytest.mark.parametrize("call", [
    pytest.param(lambda: budget_seconds(100), id="hundred-percent"),
    pytest.param(lambda: budget_seconds(0), id="zero-percent"),
    pytest.param(lambda: burn_rate(1.5, 99.9), id="fraction-above-one"),
    pytest.param(lambda: request_availability(3, 2), id="more-successes-than-attempts"),
    pytest.param(lambda: merged_downtime([], 2, 1), id="window-backwards"),
])
def test_bad_input_is_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


@given(percent)
def test_spending_the_budget_gives_the_target_back(target: float) -> None:
    assert availability_from_downtime(budget_seconds(target)) == pytest.approx(target, abs=1e-9)
    assert burn_rate(budget_seconds(target) / SECONDS_PER_YEAR, target) == pytest.approx(1.0)


@given(st.lists(st.tuples(st.floats(-50, 150), st.floats(0, 60)), max_size=20))
def test_merged_downtime_is_bounded_and_monotone(raw: list[tuple[float, float]]) -> None:
    outages = [(b, b + d) for b, d in raw]
    total = merged_downtime(outages, 0, 100)
    assert 0 <= total <= 100
    assert total <= sum(max(0.0, min(e, 100) - max(b, 0)) for b, e in outages) + 1e-9
    # adding an outage never reduces downtime
    assert merged_downtime([*outages, (40, 41)], 0, 100) >= total - 1e-9
    availability = time_availability(outages, 0, 100)
    assert availability is not None and math.isclose(availability, 100 - total, abs_tol=1e-9)
