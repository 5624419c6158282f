"""The timing rules of validity (enough steps, long enough, stable, warmed up, no straggler, --until-stable windows
that agree) on the raw step times [ranks, steps], and the input path's checks on stats.input_shares."""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mpirunner.bench import STABLE_WINDOWS, windows_agree
from mpirunner.checks.check import failed, passed
from mpirunner.checks.noise import lag1_autocorrelation, median_standard_error, robust_sigma, step_to_step_noise
from mpirunner.stats import rank_cv_percents

STRAGGLER_PERCENT = 25.0
MIN_TIMED_SECONDS = 1.0      # without --min-duration, a shorter timed window is "too short" (no extra steps run)
WARMUP_NOISE_SIGMAS = 3.0    # first vs last third: a difference beyond this many standard errors (noise.py) ...
WARMUP_MIN_PERCENT = 2.0     # ... and beyond this share of the median ...
WARMUP_NOISE_SHARE = 0.5     # ... and beyond this share of the step-to-step noise is a trend, not noise
WARM_START_STEPS = 3         # with this many warm-up steps or more, a slow first third can be told from warm-up
HOST_GAP_LIMIT = 0.02      # more of a rank's window between steps than this: the runner measured itself
DEVICE_BUSY_LIMIT = 0.8    # less of a rank's window in batch latency than this: the device waited for input


@dataclass(frozen=True)
class ValidityRules:
    """The limits a run must meet (--min-iterations, --max-cv, --min-duration, --until-stable ...)."""

    min_iterations: int = 1
    max_cv_percent: float = float("inf")
    min_duration: Optional[float] = None
    until_stable: bool = False
    window_steps: int = 0          # steps per --until-stable window (--iterations)
    stability_percentage: float = 10.0
    max_windows: int = 0

    @classmethod
    def from_config(cls, config):
        return cls(min_iterations=config.min_iterations, max_cv_percent=config.max_cv,
                   min_duration=config.min_duration, until_stable=config.until_stable,
                   window_steps=config.iterations, stability_percentage=config.stability_percentage,
                   max_windows=config.max_windows)


def rank_name(rank, hosts, bracketed=False):
    """'rank 1 on node-b', bracketed 'rank 1 (node-b)', 'rank 1' where the host is not known."""
    if hosts is None or rank >= len(hosts):
        return f"rank {rank}"
    return f"rank {rank} ({hosts[rank]})" if bracketed else f"rank {rank} on {hosts[rank]}"


def enough_steps(steps, rules):
    counts = np.count_nonzero(~np.isnan(steps), axis=1) if steps.size else np.zeros(1, dtype=int)
    fewest = int(counts.min())
    if fewest < rules.min_iterations:
        return failed("min_iterations", f"too few timed steps: {fewest} < --min-iterations {rules.min_iterations} "
                                        f"(remedy: --iterations {rules.min_iterations} or more)")
    return passed("min_iterations")


def long_enough(timed_seconds, rules):
    """The timed window lasts at least --min-duration, or MIN_TIMED_SECONDS when that flag is not given."""
    minimum = rules.min_duration or MIN_TIMED_SECONDS
    if timed_seconds < minimum:
        given = f"--min-duration {minimum:g} s" if rules.min_duration else f"the minimum {minimum:g} s"
        return failed("min_duration",
                      f"too short: timed {timed_seconds:.3g} s < {given} (remedy: --min-duration {minimum:g} to "
                      f"extend the run, or more --iterations)")
    return passed("min_duration")


def stable_steps(steps, rules, hosts):
    """The rank with the largest step-time cv (stats.rank_cv_percents, as the `max cv %` column), above --max-cv."""
    percents = rank_cv_percents(steps)
    if np.any(np.isfinite(percents)):
        worst = int(np.nanargmax(percents))  # the first of equals, as the column's maximum
        worst_cv = float(percents[worst])
        if worst_cv > rules.max_cv_percent:
            where = f" on {rank_name(worst, hosts)}" if steps.shape[0] > 1 else ""
            return failed("step_cv", f"unstable: step-time cv {worst_cv:.1f}%{where} > --max-cv "
                                     f"{rules.max_cv_percent:g}% (remedy: --until-stable, more --iterations, "
                                     f"or a quieter machine)")
    return passed("step_cv")


def _step_series(steps):
    """Per step, the median over ranks (finite steps only)."""
    series = np.nanmedian(steps, axis=0) if steps.size else np.zeros(0)
    return series[np.isfinite(series)]


def warm_before(warmup_seconds, first_median, last_median):
    """The warm-up's median step (or None): given when it lies nearer the last third's median than the first
    third's, i.e. the runner was already at speed before the timed window, so a slower first third is the
    machine's speed changing, not warm-up. None with fewer than WARM_START_STEPS warm-up steps."""
    if warmup_seconds is None:
        return None
    series = _step_series(np.atleast_2d(np.asarray(warmup_seconds, dtype=np.float64)))
    if series.size < WARM_START_STEPS:
        return None
    warm = float(np.median(series))
    return warm if warm - last_median < (first_median - last_median) / 2 else None


def warmed_up(steps, warmup_seconds=None):
    """The median step of the first third against the last third: a monotone trend beyond the noise fails
    (docs/methodology-and-validity.md). The noise is measured on the two thirds the suspected trend leaves alone;
    monotone: the middle third is not the slowest, so a burst of load mid-run is not a trend. A slow first third
    after a warm-up that already ran at the last third's pace (warm_before) is named a change of speed."""
    series = _step_series(steps)
    third = series.size // 3
    if third < 2:
        return passed("warm_up")
    thirds = series[:third], series[third:-third], series[-third:]
    first, middle, last = thirds
    first_median, middle_median, last_median = np.median(first), np.median(middle), np.median(last)
    steady = (middle, last) if first_median > last_median else (first, middle)
    correlation, sigma = lag1_autocorrelation(steady), robust_sigma(steady)
    first_error, middle_error, last_error = (median_standard_error(part.size, sigma, correlation) for part in thirds)
    noise = WARMUP_NOISE_SIGMAS * np.hypot(first_error, last_error)
    floor = max(WARMUP_MIN_PERCENT / 100.0, WARMUP_NOISE_SHARE * step_to_step_noise(np.concatenate(steady)))
    slack = WARMUP_NOISE_SIGMAS * np.hypot(middle_error, max(first_error, last_error))  # middle vs an end
    monotone = middle_median <= max(first_median, last_median) + slack
    difference = first_median - last_median
    if monotone and abs(difference) > noise and abs(difference) > floor * last_median:
        if difference > 0:
            slow_start = (f"first third {100 * difference / last_median:.1f}% slower than the last (median step "
                          f"{1e3 * first_median:.3f} ms vs {1e3 * last_median:.3f} ms, beyond the noise)")
            warm = warm_before(warmup_seconds, first_median, last_median)
            if warm is not None:
                return failed("warm_up", f"speed changed: {slow_start}, though the warm-up ran at {1e3 * warm:.3f} "
                                         f"ms: not a warm-up (remedy: a quieter machine; --until-stable)")
            return failed("warm_up", f"not warmed up: {slow_start} (remedy: more --warmup-iterations, "
                                     f"--min-duration or --until-stable)")
        return failed("warm_up", f"slowing down: last third {100 * -difference / first_median:.1f}% slower than "
                                 f"the first (median step {1e3 * last_median:.3f} ms vs {1e3 * first_median:.3f} ms, "
                                 f"beyond the noise) (remedy: check for thermal throttling or other load; "
                                 f"--until-stable)")
    return passed("warm_up")


def _median_error(row):
    """Standard error of one rank's median step, over its effective number of independent steps."""
    row = row[np.isfinite(row)]
    return median_standard_error(row.size, robust_sigma([row]), lag1_autocorrelation([row])) if row.size else np.nan


def stragglers(steps, hosts):
    """One failed check per rank whose median step is STRAGGLER_PERCENT above the others' median and beyond
    WARMUP_NOISE_SIGMAS standard errors of the difference (docs/methodology-and-validity.md)."""
    found = []
    if steps.shape[0] > 1:
        medians = np.nanmedian(steps, axis=1)
        errors = np.array([_median_error(row) for row in steps])
        for rank, median in enumerate(medians):
            others = np.median(np.delete(medians, rank))
            noise = WARMUP_NOISE_SIGMAS * np.hypot(errors[rank], np.nanmedian(np.delete(errors, rank)))
            if others > 0 and median > (1 + STRAGGLER_PERCENT / 100.0) * others and not median - others <= noise:
                found.append(failed("straggler", f"straggler: {rank_name(rank, hosts)} median step {1e3 * median:.3f} "
                                                 f"ms vs {1e3 * others:.3f} ms on the others "
                                                 f"(+{100 * (median / others - 1):.0f}%) (remedy: check "
                                                 f"that host's other load and the rank's placement, /ranks cpus; "
                                                 f"--numa-aware yes, --cpus-per-rank)"))
    return found or [passed("straggler")]


def windows_stable(steps, rules, windows, hosts):
    """--until-stable: the last STABLE_WINDOWS windows were measured and agree on every rank."""
    if not (rules.until_stable and rules.window_steps > 0):
        return passed("until_stable")
    if steps.shape[1] < STABLE_WINDOWS * rules.window_steps:
        return failed("until_stable", f"not stable: only {windows} window(s) measured (--max-windows "
                                      f"{rules.max_windows}); {STABLE_WINDOWS} must agree (remedy: a larger "
                                      f"--max-windows)")
    kept = steps[:, -STABLE_WINDOWS * rules.window_steps:]
    unstable = [rank for rank, row in enumerate(kept)
                if not windows_agree(np.split(row, STABLE_WINDOWS), rules.stability_percentage)]
    if unstable:
        return failed("until_stable", f"not stable: the last {STABLE_WINDOWS} of {windows} windows (--max-windows "
                                      f"{rules.max_windows}) differ by more than --stability-percentage "
                                      f"{rules.stability_percentage:g}% on "
                                      + ", ".join(rank_name(rank, hosts) for rank in unstable)
                                      + " (remedy: a larger --max-windows or --stability-percentage)")
    return passed("until_stable")


def timing_checks(step_seconds, rules, *, timed_seconds, windows=0, hosts=None, warmup_seconds=None):
    """Every timing rule's Checks, in the order their reasons are listed (warmup_seconds: see warmed_up)."""
    steps = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    return [enough_steps(steps, rules), long_enough(timed_seconds, rules), stable_steps(steps, rules, hosts),
            warmed_up(steps, warmup_seconds), *stragglers(steps, hosts), windows_stable(steps, rules, windows, hosts)]


def input_path_checks(host_gap=None, device_busy=None, hosts=None):
    """host_gap fails when a rank spent more than HOST_GAP_LIMIT of its window between steps, device_busy below
    DEVICE_BUSY_LIMIT (None: nothing to judge); each names the worst rank."""
    checks = [passed("host_gap"), passed("device_busy")]
    if host_gap is not None and np.any(np.asarray(host_gap) > HOST_GAP_LIMIT):
        rank = int(np.nanargmax(host_gap))
        checks[0] = failed("host_gap", f"runner overhead: {100 * host_gap[rank]:.1f}% of the window between steps "
                                       f"on {rank_name(rank, hosts, bracketed=True)} (remedy: larger --batch-size or "
                                       f"--device-iterations, --data generated to rule out the input)")
    if device_busy is not None and np.any(np.asarray(device_busy) < DEVICE_BUSY_LIMIT):
        rank = int(np.nanargmin(device_busy))
        checks[1] = failed("device_busy", f"input-bound: device busy {100 * device_busy[rank]:.0f}% of the window "
                                          f"on {rank_name(rank, hosts, bracketed=True)} (remedy: --data generated, "
                                          f"a larger --input-pool-mib, or more CPUs per rank for decoding)")
    return checks
