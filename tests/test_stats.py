"""Confidence intervals and the clock: checked on generated timing arrays, no model needed."""
import numpy as np
import pytest

from mpirunner import stats

SIMULATIONS = 200


def _contiguous_steps(durations):
    """step_start for steps run back to back from 0."""
    return np.concatenate([[0.0], np.cumsum(durations)[:-1]])


def test_throughput_interval_covers_the_true_rate_about_95_percent_of_the_time():
    true_step_seconds, samples_per_step = 0.01, 4
    true_throughput = samples_per_step / true_step_seconds
    covered = 0
    for seed in range(SIMULATIONS):
        durations = np.random.default_rng(seed).gamma(25.0, true_step_seconds / 25.0, 200)
        low, high = stats.throughput_interval(_contiguous_steps(durations), durations, samples_per_step)
        covered += low <= true_throughput <= high
    assert 0.88 <= covered / SIMULATIONS <= 0.99


def test_p50_interval_covers_the_true_median_about_95_percent_of_the_time():
    true_median_ms = 5.0
    covered = 0
    for seed in range(SIMULATIONS):
        latency_ms = np.random.default_rng(1000 + seed).lognormal(np.log(true_median_ms), 0.2, 200)
        low, high = stats.percentile_interval(latency_ms, 50)
        covered += low <= true_median_ms <= high
    assert 0.88 <= covered / SIMULATIONS <= 0.99


def test_intervals_contain_their_estimate_and_narrow_with_more_steps():
    rng = np.random.default_rng(7)
    widths = []
    for steps in (20, 2000):
        durations = rng.gamma(25.0, 0.01 / 25.0, (2, steps))
        starts = np.vstack([_contiguous_steps(row) for row in durations])
        ci = stats.confidence(starts, durations, durations, samples_per_step=8)
        estimate = stats.throughput(starts, durations, 8)
        assert ci["throughput_ci95_low"] < estimate < ci["throughput_ci95_high"]
        p50 = np.percentile(durations * 1e3, 50)
        assert ci["latency_p50_ci95_low"] <= p50 <= ci["latency_p50_ci95_high"]
        if steps == 20:  # 40 latencies are too few for a p99 interval: left out, with the reason
            assert "latency_p99_ci95_low" not in ci and "p99: 40 latencies" in ci["ci_unavailable"]
        else:
            assert ci["latency_p99_ci95_low"] <= np.percentile(durations * 1e3, 99) <= ci["latency_p99_ci95_high"]
        widths.append(ci["throughput_ci95"] / estimate)
    assert widths[1] < widths[0] / 4


def test_bootstrap_is_seeded_so_the_same_file_gives_the_same_interval():
    values = np.random.default_rng(3).lognormal(0, 0.5, 500)
    assert stats.percentile_interval(values, 99) == stats.percentile_interval(values, 99)
    assert stats.percentile_interval(values, 99, seed=1) != stats.percentile_interval(values, 99)


def test_large_samples_use_the_bounded_bootstrap_with_a_sensible_width():
    values = np.random.default_rng(4).normal(10.0, 1.0, 100_000)
    low, high = stats.percentile_interval(values, 50, resamples=200)
    # standard error of a normal median: 1.2533 * sigma / sqrt(n) ~= 0.004; 95% half-width ~= 0.0078
    assert 0.004 < (high - low) / 2 < 0.015
    assert low < np.median(values) < high


def test_too_few_steps_give_no_interval():
    low, high = stats.throughput_interval(np.array([[0.0]]), np.array([[0.01]]), 1)
    assert np.isnan(low) and np.isnan(high)
    assert all(np.isnan(stats.percentile_interval(np.array([1.0]), 50)))


def test_barrier_skew_widens_the_throughput_window():
    durations = np.full((2, 10), 0.01)
    starts = np.vstack([_contiguous_steps(row) for row in durations])
    assert stats.throughput(starts, durations, 4) == pytest.approx(2 * 10 * 4 / 0.1)
    assert stats.throughput(starts, durations, 4, barrier_skew_seconds=0.01) == pytest.approx(2 * 10 * 4 / 0.11)
    summary = stats.summarize(starts, durations, durations, 4, barrier_skew_seconds=0.01)
    assert summary["barrier_skew_seconds"] == 0.01
    assert summary["throughput"] == pytest.approx(2 * 10 * 4 / 0.11)
