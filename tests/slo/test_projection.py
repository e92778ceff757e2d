"""The Monte Carlo projection: known distributions give known answers; seeds reproduce."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.slo.budget import SECONDS_PER_YEAR, budget_seconds
from orchestrator.slo.projection import Source, Strength, Verdict, headroom_seconds, project


def _src(name: str, rate: float, samples: tuple[float, ...], **kw: object) -> Source:
    return Source(name=name, rate_per_year=rate, rto_samples=samples, newest_age_days=1.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rate", "rto"), [
    pytest.param(12.0, 3.0, id="12-crashes-3s"),
    pytest.param(0.2, 600.0, id="rare-long"),
    pytest.param(50.0, 0.5, id="frequent-short"),
])
def test_constant_rto_mean_downtime_is_rate_times_rto(rate: float, rto: float) -> None:
    p = project("c", [_src("k", rate, (rto,) * 5)], target_percent=99.99, seed=1, years=200_000)
    # Poisson mean = rate; standard error of the mean downtime is rto*sqrt(rate/years)
    tolerance = 5 * rto * (rate / 200_000) ** 0.5
    assert p.mean_downtime_s == pytest.approx(rate * rto, abs=tolerance)
    assert p.availability_mean == pytest.approx(100 * (1 - rate * rto / SECONDS_PER_YEAR), abs=1e-6)


def test_empirical_distribution_mean_is_rate_times_sample_mean() -> None:
    samples = (1.0, 2.0, 9.0)
    p = project("c", [_src("k", 20, samples)], target_percent=99.99, seed=3, years=200_000)
    assert p.mean_downtime_s == pytest.approx(20 * 4.0, rel=0.01)


def test_sources_add_up_and_the_dominant_one_is_named() -> None:
    p = project("c", [_src("small", 2, (1.0,) * 5), _src("big", 10, (30.0,) * 5)], target_percent=99.99,
                seed=5, years=100_000)
    by = {s.name: s for s in p.sources}
    assert p.dominant == "big"
    assert by["big"].share_of_downtime == pytest.approx(300 / 302, abs=0.01)
    assert (by["big"].mean_downtime_s or 0) + (by["small"].mean_downtime_s or 0) == pytest.approx(p.mean_downtime_s)
    assert by["big"].share_of_budget == pytest.approx(300 / budget_seconds(99.99), rel=0.02)


def test_verdicts() -> None:
    # 12 x 0.3 s a year: far inside 52.56 min even in a bad year
    assert project("c", [_src("k", 12, (0.3,) * 5)], target_percent=99.99, seed=0, years=20_000
                   ).verdict is Verdict.MEETS
    # 2 x 1200 s: mean 2400 s fits 3153.6 s, but a year with 3+ incidents does not
    assert project("c", [_src("k", 2, (1200.0,) * 5)], target_percent=99.99, seed=0, years=20_000
                   ).verdict is Verdict.MEETS_ON_AVERAGE
    assert project("c", [_src("k", 12, (600.0,) * 5)], target_percent=99.99, seed=0, years=20_000
                   ).verdict is Verdict.MISSES


def test_unmeasured_kind_is_left_out_and_said_loudly() -> None:
    p = project("c", [_src("crash", 12, (1.0,) * 6), Source(name="region-loss", rate_per_year=0.2)],
                target_percent=99.99, seed=0, years=10_000)
    region = next(s for s in p.sources if s.name == "region-loss")
    assert region.strength is Strength.UNMEASURED and region.mean_downtime_s is None
    assert not p.complete and "INCOMPLETE: no drill measured region-loss" in p.headline()
    assert headroom_seconds(p, 0.2) == pytest.approx((budget_seconds(99.99) - p.mean_downtime_s) / 0.2)


@pytest.mark.parametrize(("source", "strength", "words"), [
    pytest.param(_src("k", 1, (1.0,) * 3), Strength.WEAK, "only 3 drill(s), fewer than 5", id="too-few"),
    pytest.param(Source(name="k", rate_per_year=1, rto_samples=(1.0,) * 6, newest_age_days=120), Strength.WEAK,
                 "newest drill 120 days old", id="too-old"),
    pytest.param(_src("k", 1, (1.0,) * 6, unrecovered=1), Strength.WEAK, "did not recover", id="unrecovered"),
    pytest.param(_src("k", 1, (1.0,) * 6), Strength.STRONG, "6 drill(s)", id="strong"),
])
def test_evidence_strength(source: Source, strength: Strength, words: str) -> None:
    got, why = source.strength(5, 90)
    assert got is strength and words in why


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="years"):
        project("c", [], target_percent=99.99, seed=0, years=0)
    with pytest.raises(ValueError, match="negative"):
        project("c", [_src("k", 1, (-1.0,))], target_percent=99.99, seed=0, years=10)


samples = st.lists(st.floats(0, 1000), min_size=1, max_size=8).map(tuple)


@settings(max_examples=30)
@given(st.integers(0, 2**32), st.floats(0, 30), samples)
def test_same_seed_same_projection(seed: int, rate: float, rtos: tuple[float, ...]) -> None:
    a = project("c", [_src("k", rate, rtos)], target_percent=99.99, seed=seed, years=500)
    b = project("c", [_src("k", rate, rtos)], target_percent=99.99, seed=seed, years=500)
    assert a == b


@settings(max_examples=30)
@given(st.integers(0, 2**32), st.floats(0.1, 30), samples, st.floats(0.1, 10))
def test_scaling_every_rto_scales_the_downtime(seed: int, rate: float, rtos: tuple[float, ...], k: float) -> None:
    a = project("c", [_src("k", rate, rtos)], target_percent=99.99, seed=seed, years=300)
    b = project("c", [_src("k", rate, tuple(k * r for r in rtos))], target_percent=99.99, seed=seed, years=300)
    assert b.mean_downtime_s == pytest.approx(k * a.mean_downtime_s, rel=1e-9, abs=1e-9)
    assert a.availability_low <= a.availability_high
    assert 0 <= a.share_of_years_meeting <= 1


def test_years_whose_downtimes_differ_by_a_denormal_still_project() -> None:
    # Found by hypothesis: numpy cannot cut a 5e-324 s range into bins.
    result = project("c", [_src("k", 1.0, (5e-324,))], target_percent=99.99, seed=0, years=300)
    assert result.mean_downtime_s == pytest.approx(0.0, abs=1e-9)
    assert sum(count for _, _, count in result.histogram) == 300


@pytest.mark.parametrize(("percent", "shown"), [
    (99.9991, "99.9991"), (99.99997, "99.99997"), (99.9, "99.9000"), (100.0, "100.0000"), (99.999999995, "99.99999999"),
])
def test_the_headline_has_enough_decimals_to_show_the_unavailability(percent: float, shown: str) -> None:
    from orchestrator.slo.projection import _decimals

    assert f"{percent:.{_decimals(percent)}f}" == shown
