"""How much a run's step times wander on their own: the noise that the trend and straggler rules judge against.

Step times on a shared host are not independent draws: a burst of other load slows several steps in a
row, so neighbouring steps correlate, and the median of n such steps is less certain than the median of
n independent ones. Everything here is measured from the run's own steps, robustly (ranks and median
absolute deviations), so that a few outlier steps do not decide:

- lag1_autocorrelation: the rank correlation of each step with the next, pooled over segments (each
  less its own median, so a level shift between segments is not counted), small-sample bias corrected;
- robust_sigma: the steps' spread from their MAD, pooled over segments;
- median_standard_error: the standard error of a median of n steps over the effective number of
  independent steps n (1 - r) / (1 + r) (an AR(1) process with lag-1 correlation r);
- step_to_step_noise: the typical relative change from one step to the next (MAD of successive
  differences / sqrt 2, over the median), the noise a single step carries.
"""
import numpy as np

MAX_AUTOCORRELATION = 0.9   # beyond this n_eff is 5% of n or less: the series says little, not nothing
MIN_PAIRS = 12              # fewer neighbouring pairs cannot show a correlation: the steps count as independent


def _ranks(values):
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    return ranks


def centred(segment):
    """The finite steps of a segment less their median."""
    segment = np.asarray(segment, dtype=np.float64)
    segment = segment[np.isfinite(segment)]
    return segment - np.median(segment) if segment.size else segment


def lag1_autocorrelation(segments):
    """Lag-1 rank autocorrelation of steps, pooled over segments (each less its median), clipped
    to [0, MAX_AUTOCORRELATION]; 0 with fewer than MIN_PAIRS pairs. Pairs never span two segments.
    Bias-corrected to first order for short segments (Marriott and Pope: E[r] ~ r - (1 + 4 r) / n)."""
    segments = [centred(segment) for segment in segments]
    segments = [segment for segment in segments if segment.size >= 3]
    if not segments:
        return 0.0
    ranks = _ranks(np.concatenate(segments))
    pairs, start = [], 0
    for segment in segments:
        part = ranks[start:start + segment.size]
        pairs.append(np.stack([part[:-1], part[1:]]))
        start += segment.size
    before, after = np.concatenate(pairs, axis=1)
    if before.size < MIN_PAIRS or np.std(before) == 0 or np.std(after) == 0:
        return 0.0
    estimate = float(np.corrcoef(before, after)[0, 1])
    length = np.mean([segment.size for segment in segments])
    corrected = estimate + (1.0 + 4.0 * estimate) / length   # first order: tame for segments of a few steps
    return float(np.clip(corrected, 0.0, MAX_AUTOCORRELATION))


def effective_size(size, autocorrelation):
    """How many independent steps `size` steps with this lag-1 correlation are worth (at least 1)."""
    return max(1.0, size * (1.0 - autocorrelation) / (1.0 + autocorrelation))


def robust_sigma(segments):
    """The steps' standard deviation from their MAD (1.4826 MAD), each segment less its own median."""
    pooled = np.concatenate([centred(segment) for segment in segments])
    return float(1.4826 * np.median(np.abs(pooled))) if pooled.size else float("nan")


def median_standard_error(size, sigma, autocorrelation=0.0):
    """Standard error of the median of `size` steps of this sigma (normal approximation 1.2533 sigma /
    sqrt(n)), with n the effective number of independent steps."""
    return float(1.2533 * sigma / np.sqrt(effective_size(size, autocorrelation)))


def step_to_step_noise(series):
    """The typical relative change between neighbouring steps: 1.4826 MAD(diff) / sqrt(2) / median
    (0 for fewer than 3 steps)."""
    series = np.asarray(series, dtype=np.float64)
    series = series[np.isfinite(series)]
    median = np.median(series) if series.size else 0.0
    if series.size < 3 or median <= 0:
        return 0.0
    changes = np.diff(series)
    return float(1.4826 * np.median(np.abs(changes - np.median(changes))) / np.sqrt(2.0) / median)
