"""How much a run's step times wander on their own: the noise the trend and straggler rules judge against. Steps
of a shared host correlate (a burst of load slows several in a row), so their median is less certain than that
of independent ones. Measured robustly (ranks and MADs), so that a few outlier steps do not decide."""
import numpy as np

MAX_AUTOCORRELATION = 0.9   # beyond this n_eff is 5% of n or less: the series says little, not nothing
MIN_PAIRS = 12              # fewer neighbouring pairs cannot show a correlation: the steps count as independent


def centred(segment):
    segment = np.asarray(segment, dtype=np.float64)
    segment = segment[np.isfinite(segment)]
    return segment - np.median(segment) if segment.size else segment


def lag1_autocorrelation(segments):
    """Lag-1 rank autocorrelation of steps, pooled over segments (each less its median, so a level shift between
    them is not counted; pairs never span two), clipped to [0, MAX_AUTOCORRELATION]; 0 with fewer than MIN_PAIRS
    pairs. Bias-corrected to first order for short segments (Marriott and Pope: E[r] ~ r - (1 + 4 r) / n)."""
    segments = [centred(segment) for segment in segments]
    segments = [segment for segment in segments if segment.size >= 3]
    if not segments:
        return 0.0
    ranks = np.argsort(np.argsort(np.concatenate(segments), kind="stable")).astype(np.float64)
    parts = np.split(ranks, np.cumsum([segment.size for segment in segments])[:-1])  # pairs never span two segments
    before, after = np.concatenate([part[:-1] for part in parts]), np.concatenate([part[1:] for part in parts])
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
    """Standard error of the median of `size` steps of this sigma (1.2533 sigma / sqrt(n)), n the effective
    number of independent steps (an AR(1) process with lag-1 correlation r: n (1 - r) / (1 + r))."""
    return float(1.2533 * sigma / np.sqrt(effective_size(size, autocorrelation)))


def step_to_step_noise(series):
    """The typical relative change between neighbouring steps (0 for fewer than 3 steps)."""
    series = np.asarray(series, dtype=np.float64)
    series = series[np.isfinite(series)]
    median = np.median(series) if series.size else 0.0
    if series.size < 3 or median <= 0:
        return 0.0
    changes = np.diff(series)
    return float(1.4826 * np.median(np.abs(changes - np.median(changes))) / np.sqrt(2.0) / median)
