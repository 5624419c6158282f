"""Readable ticks and few-sample bins for log axes: plain numbers with their unit (0.5 ms, 1 ms, 2 ms, 5 ms),
never 10^k labels that read as a linear scale, and histogram bins chosen from the sample count.

The tick and bin choice is numpy only, so the PNG (matplotlib, imported only by readable_log_axis) and the
HTML page (hand-written SVG) share the same ticks.
"""
import math

import numpy as np

# Mantissas per decade, coarse to fine: the first series giving at least `minimum` ticks in range is used.
SERIES = ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0))
MIN_BINS, MAX_BINS = 5, 80


def log_ticks(low, high, minimum=3, maximum=12):
    """Round tick values within [low, high] (> 0) for a log axis: the coarsest 1-2-5 style series that gives
    at least `minimum` ticks and at most `maximum`; over a narrow range (under a 1.25x span) evenly spaced round values."""
    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high)):
        return []
    low, high = min(low, high), max(low, high)
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    best = []
    for series in SERIES:
        ticks = [m * 10.0 ** d for d in decades for m in series if low * (1 - 1e-9) <= m * 10.0 ** d <= high * (1 + 1e-9)]
        if len(ticks) > maximum and best:
            return best
        best = ticks
        if len(ticks) >= minimum:
            return ticks
    return _linear_ticks(low, high, minimum) if len(best) < minimum else best


def _linear_ticks(low, high, minimum):
    """Evenly spaced round values (step 1, 2 or 5 x 10^k) inside [low, high], at least `minimum` of them if possible."""
    span = high - low
    if span <= 0:
        return [low]
    step = 10.0 ** math.floor(math.log10(span))
    for factor in (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01):
        ticks = np.arange(math.ceil(low / (step * factor)), math.floor(high / (step * factor)) + 1) * step * factor
        if ticks.size >= minimum:
            return [float(f"{tick:.12g}") for tick in ticks]
    return [low, high]


def tick_label(value, unit):
    """A tick as a plain number and its unit: '0.5 ms', '12 ms', '1500 QPS'."""
    return f"{value:g} {unit}".strip()


def sample_bins(count):
    """How many histogram bins `count` samples deserve: about 2 x count^(1/3) (Rice's rule), 5 to 80.
    20 samples -> 5 bins, 1,000 -> 20, 100,000 -> 80."""
    return int(min(MAX_BINS, max(MIN_BINS, round(2.0 * count ** (1.0 / 3.0))))) if count > 0 else MIN_BINS


def log_bin_edges(values):
    """Log-spaced bin edges spanning exactly the positive `values`, as many bins as sample_bins says."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return np.zeros(0)
    low, high = float(values.min()), float(values.max())
    if high <= low * 1.001:  # all (nearly) equal: one narrow range around them
        low, high = low / 1.05, high * 1.05
    return np.logspace(math.log10(low), math.log10(high), sample_bins(values.size) + 1)


def readable_log_axis(axis, low, high, unit):
    """Ticks of a log axis as plain round numbers with their unit (0.5 ms, 1 ms, 2 ms), none as 10^k."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    axis.set_major_locator(FixedLocator(log_ticks(low, high)))
    axis.set_major_formatter(FuncFormatter(lambda value, _position: tick_label(value, unit)))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def batch_size_axis(axes, sizes):
    """A log2 x axis with a tick at each batch size, labelled as the plain number (8, 16, 32), no minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axes.set_xscale("log", base=2)
    if sizes:
        axes.set_xticks(sizes)
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())
