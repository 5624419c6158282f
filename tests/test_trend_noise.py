"""The warm-up / slowing-down rule judges a trend against the noise the run's own steps show.

Step times of a shared host wander: a burst of other load slows many steps in a row. Series with such
noise (seeded AR(1) noise and a few outlier steps) must pass; a real warm-up and a real slowdown of the
same noise must still fail."""
import numpy as np
import pytest

from mpirunner.checks.noise import effective_size, lag1_autocorrelation, step_to_step_noise
from mpirunner.checks.rules import ValidityRules, stragglers, timing_checks, warmed_up
from benchmarks.trend_rule_power import wandering

STEPS = 200           # a 3-s run of 15-ms steps
MEDIAN = 0.015


def _wandering(seed, steps=STEPS, sigma=0.04, phi=0.7, outliers=0.03):
    """One rank's steps: log-normal AR(1) noise (lag-1 correlation phi, spread sigma) and a few steps
    2-8x slower (another process took the core); the generator benchmarks/trend_rule_power.py measures with."""
    return wandering(seed, steps, sigma=sigma, phi=phi, outliers=outliers, median=MEDIAN)


def _warming_up(seed):
    """The first third ~15% slower on average, decaying towards the steady state."""
    steps = _wandering(seed)
    third = STEPS // 3
    decay = np.exp(-np.arange(third) / (third / 2))
    steps[0, :third] *= 1 + 0.15 * decay / decay.mean()
    return steps


def _slowing_down(seed):
    """The last third 10% slower, sustained (throttling, a neighbour that stays)."""
    steps = _wandering(seed)
    steps[0, -(STEPS // 3):] *= 1.10
    return steps


@pytest.mark.parametrize("seed", range(20))
def test_wandering_noise_with_outliers_is_warmed_up(seed):
    check = warmed_up(_wandering(seed))
    assert check.passed, check.reason


@pytest.mark.parametrize("seed", range(20))
def test_a_real_warm_up_is_not_warmed_up(seed):
    check = warmed_up(_warming_up(seed))
    assert not check.passed and check.reason.startswith("not warmed up: first third"), check.reason


@pytest.mark.parametrize("seed", range(20))
def test_a_real_slowdown_is_slowing_down(seed):
    check = warmed_up(_slowing_down(seed))
    assert not check.passed and check.reason.startswith("slowing down: last third"), check.reason


def test_a_burst_of_load_in_the_middle_is_not_a_trend():
    steps = _wandering(3, phi=0.0, sigma=0.02)
    third = STEPS // 3
    steps[0, third // 2: 2 * third] *= 1.3   # from the middle of the first third to the end of the middle one
    assert warmed_up(steps).passed


def _warm_up_steps(level, count=5):
    """Timed warm-up steps of one rank at `level` x the steady median."""
    return np.full((1, count), MEDIAN * level)


@pytest.mark.parametrize("seed", range(5))
def test_a_slow_start_after_a_warm_up_at_speed_is_a_change_of_speed(seed):
    """The warm-up ran at the last third's pace, so the slower first third is the machine's speed changing."""
    check = warmed_up(_warming_up(seed), warmup_seconds=_warm_up_steps(1.0))
    assert not check.passed and check.reason.startswith("speed changed: first third"), check.reason
    assert "though the warm-up ran at 15.000 ms" in check.reason and "a quieter machine" in check.reason


@pytest.mark.parametrize("warmup", [_warm_up_steps(1.3), _warm_up_steps(1.0, count=2), None])
def test_a_slow_start_after_a_slower_or_short_warm_up_is_not_warmed_up(warmup):
    """A warm-up still slower than the first third is a warm-up curve; with 2 warm-up steps nothing is known."""
    check = warmed_up(_warming_up(0), warmup_seconds=warmup)
    assert not check.passed and check.reason.startswith("not warmed up: first third"), check.reason


def test_a_slowdown_stays_slowing_down_whatever_the_warm_up():
    check = warmed_up(_slowing_down(0), warmup_seconds=_warm_up_steps(1.0))
    assert not check.passed and check.reason.startswith("slowing down"), check.reason


def test_the_noise_is_measured_from_the_steps():
    quiet = _wandering(0, phi=0.0, sigma=0.02, outliers=0.0)[0]
    wandering = _wandering(0, steps=2000, phi=0.7, outliers=0.0)[0]
    assert lag1_autocorrelation([quiet]) < 0.3
    assert 0.55 < lag1_autocorrelation([wandering]) < 0.85
    assert effective_size(200, 0.7) == pytest.approx(200 * 0.3 / 1.7)
    assert step_to_step_noise(quiet) == pytest.approx(0.02, rel=0.3)  # white noise: one step's spread


def test_the_rule_is_one_of_the_timing_checks_with_two_ranks():
    steps = np.vstack([_slowing_down(1), _slowing_down(2)])
    reasons = [check.reason for check in timing_checks(steps, ValidityRules(), timed_seconds=3.0)
               if not check.passed]
    assert any(reason.startswith("slowing down") for reason in reasons), reasons


def _two_ranks(seed, steps, sigma, phi=0.7, outliers=0.1):
    return np.vstack([_wandering(2 * seed, steps, sigma, phi, outliers), _wandering(2 * seed + 1, steps, sigma, phi,
                                                                                     outliers)])


@pytest.mark.parametrize("seed", range(20))
def test_a_rank_whose_median_wandered_on_a_loaded_host_is_no_straggler(seed):
    steps = _two_ranks(seed, 30, sigma=0.3)  # 30 steps, 30% spread, correlated: medians differ by chance
    assert stragglers(steps, None)[0].passed


@pytest.mark.parametrize("seed", range(20))
def test_a_rank_40_percent_slower_with_ordinary_noise_is_a_straggler(seed):
    steps = _two_ranks(seed, 60, sigma=0.04)
    steps[1] *= 1.4
    found = stragglers(steps, ["node-a", "node-b"])
    assert len(found) == 1 and found[0].reason.startswith("straggler: rank 1 on node-b"), found
