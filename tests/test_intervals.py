"""Intervals keep their shape: coverage on skewed, heavy-tailed and straggling step times, never below 0."""
import numpy as np
import pytest

from mpirunner import stats

SIMULATIONS = 200
SAMPLES_PER_STEP = 4


def _starts(durations):
    """step_start for each rank's steps run back to back from 0, [ranks, steps]."""
    durations = np.atleast_2d(durations)
    return np.hstack([np.zeros((durations.shape[0], 1)), np.cumsum(durations, axis=1)[:, :-1]])


def _coverage(draw, true_rate):
    covered = 0
    for seed in range(SIMULATIONS):
        durations = np.atleast_2d(draw(np.random.default_rng(seed)))
        low, high = stats.throughput_interval(_starts(durations), durations, SAMPLES_PER_STEP)
        assert 0 < low <= high
        covered += low <= true_rate <= high
    return covered / SIMULATIONS


MEAN = 0.01
SHAPES = {
    # name: (draw [ranks, steps], true throughput of the whole job)
    "symmetric": (lambda rng: rng.gamma(25.0, MEAN / 25.0, 200), SAMPLES_PER_STEP / MEAN),
    "skewed": (lambda rng: rng.gamma(1.5, MEAN / 1.5, 200), SAMPLES_PER_STEP / MEAN),
    # lognormal with sigma 1: a long right tail; mean = exp(mu + 1/2)
    "heavy-tailed": (lambda rng: rng.lognormal(np.log(MEAN) - 0.5, 1.0, 400), SAMPLES_PER_STEP / MEAN),
    # two ranks, rank 1 30% slower: the job ends with rank 1, so the rate is 2 ranks' samples over its steps
    "one straggler": (lambda rng: rng.gamma(10.0, MEAN / 10.0, (2, 200)) * np.array([[1.0], [1.3]]),
                      2 * SAMPLES_PER_STEP / (1.3 * MEAN)),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_throughput_interval_covers_the_true_rate_90_to_99_percent(shape):
    draw, true_rate = SHAPES[shape]
    assert 0.90 <= _coverage(draw, true_rate) <= 0.99


def test_a_two_second_stall_gives_a_lopsided_interval_not_a_negative_one():
    # the case: 2 ranks, 20 steps, rank 1 stalls 2 s at step 6
    durations = np.full((2, 20), 0.05)
    durations[1, 5] += 2.0
    starts = _starts(durations)
    estimate = stats.throughput(starts, durations, SAMPLES_PER_STEP)
    low, high = stats.throughput_interval(starts, durations, SAMPLES_PER_STEP)
    assert 0 < low < estimate < high
    assert high - estimate > 2 * (estimate - low)  # the stall may or may not recur: much more room upwards


def test_percentile_intervals_stay_positive_and_need_enough_samples():
    rng = np.random.default_rng(5)
    wide = rng.lognormal(0.0, 2.0, 150)  # latencies spread over decades
    low, high = stats.percentile_interval(wide, 50)
    assert 0 < low < np.percentile(wide, 50) < high
    assert all(np.isnan(stats.percentile_interval(wide[:40], 99)))  # p99 from 40 samples: none
    assert stats.enough_for_percentile(4603, 99.9) and not stats.enough_for_percentile(4602, 99.9)
    assert stats.enough_for_percentile(459, 99) and not stats.enough_for_percentile(458, 99)


def test_the_percentile_upper_bound_is_loadgens_early_stopping_estimate():
    """At 99% confidence the largest of n values bounds a p99 once 0.99^n <= 0.01 (459 values), and LoadGen's
    early stopping needs 2,010 queries to tolerate 10 over the bound: the bound is then the 2,000th value."""
    assert [stats.minimum_count(q) for q in (50, 90, 95, 99, 99.9)] == [7, 44, 90, 459, 4603]
    assert stats.upper_bound_rank(458, 99) is None and stats.upper_bound_rank(459, 99) == 459
    assert stats.upper_bound_rank(2010, 99) == 2000 and stats.upper_bound_rank(2009, 99) == 2000
    values = np.arange(1, 2011, dtype=float)
    assert stats.percentile_upper_bound(values, 99) == 2000.0
    assert np.isnan(stats.percentile_upper_bound(values[:458], 99))
    served = np.append(np.ones(1000), np.inf)  # one unserved query is over any bound, yet 1,001 tolerate it
    assert stats.percentile_upper_bound(served, 99) == 1.0
    assert stats.percentile_upper_bound(np.append(np.ones(459), np.inf), 99) == np.inf


def test_a_missing_interval_is_left_out_with_its_reason_never_stored_as_nan():
    durations = np.array([[0.01, 0.012]])
    ci = stats.confidence(_starts(durations), durations, durations, SAMPLES_PER_STEP)
    assert not any(key.startswith("throughput_ci95") or key.startswith("latency_p50_ci95") for key in ci)
    assert "throughput: fewer than" in ci["ci_unavailable"] and "p99: 2 latencies" in ci["ci_unavailable"]
    assert all(np.isfinite(value) for value in ci.values() if isinstance(value, float))
