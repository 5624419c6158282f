"""Between-run variation: how far a statistic moves from one run (one process, one job) to the next.

A rerun is a new process, a new memory layout, a new moment of a shared host; the spread of
one run's steps does not show that. Each file gives one value per rank (compare.py: the median
step time per sample); the values are compared on a log scale, so a spread reads as a percentage:
- groups of runs on each side (`compare --base A1 A2 .. --new B1 B2 ..`): the difference of the
  means with a Welch t interval from each side's between-file spread; a side with one file
  borrows the other side's spread (then the interval is the prediction interval of that one run,
  sqrt(1/n + 1) standard deviations wide: what trends use against the earlier runs);
- one run per side: no spread is measured, and a difference must exceed NOISE_FLOOR_PERCENT
  (a minimum effect size, as criterion.rs's noise threshold) to count.
numpy only (no scipy): the t quantiles come from a table.
"""
import math
from dataclasses import dataclass

import numpy as np

# The smallest change between ONE run and ONE other run that counts, in percent (see
# docs/methodology-and-validity.md, "Between-run variation"; `--noise-floor` overrides it).
NOISE_FLOOR_PERCENT = 10.0
HISTORY_RUNS = 10  # trends: a new run is judged against at most this many earlier valid runs

# Two-sided 95% Student t quantiles (0.975) by degrees of freedom; between entries, linear in 1/df.
_T975 = ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447), (7, 2.365), (8, 2.306),
         (9, 2.262), (10, 2.228), (11, 2.201), (12, 2.179), (13, 2.160), (14, 2.145), (15, 2.131), (16, 2.120),
         (17, 2.110), (18, 2.101), (19, 2.093), (20, 2.086), (22, 2.074), (24, 2.064), (26, 2.056), (28, 2.048),
         (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))


def t_quantile_95(df):
    """The 0.975 quantile of Student's t with `df` (>= 1, may be fractional, Welch's) degrees of freedom."""
    if not df >= 1:
        df = 1.0
    for (low_df, low_t), (high_df, high_t) in zip(_T975, _T975[1:]):
        if low_df <= df <= high_df:
            if df == low_df:
                return low_t
            share = (1 / low_df - 1 / df) / (1 / low_df - (0 if math.isinf(high_df) else 1 / high_df))
            return low_t + share * (high_t - low_t)
    return _T975[-1][1]


@dataclass
class Spread:
    """The between-run comparison of one rank (or the whole job): NEW/BASE of the file values' geometric means.

    ratio, low, high: that ratio and its 95% between-run interval (NaN ends when no spread was measured:
    one run per side); percent: the interval's half-width in percent (±x%); base_runs, new_runs: files per side.
    """

    ratio: float
    low: float = float("nan")
    high: float = float("nan")
    percent: float = float("nan")
    base_runs: int = 1
    new_runs: int = 1

    @property
    def measured(self):
        return math.isfinite(self.low) and math.isfinite(self.high)


def between_runs(base_values, new_values):
    """Spread of NEW against BASE from one positive value per file on each side (e.g. median s per sample)."""
    base = np.log(np.asarray(base_values, dtype=np.float64))
    new = np.log(np.asarray(new_values, dtype=np.float64))
    n_base, n_new = base.size, new.size
    difference = float(new.mean() - base.mean())
    spread = Spread(ratio=math.exp(difference), base_runs=n_base, new_runs=n_new)
    if n_base < 2 and n_new < 2:
        return spread
    # each side's variance; a single file borrows the other side's, and then that one estimate's df is the df
    if n_base > 1 and n_new > 1:
        var_base, var_new = float(base.var(ddof=1)), float(new.var(ddof=1))
    else:
        var_base = var_new = float((base if n_base > 1 else new).var(ddof=1))
    base_term, new_term = var_base / n_base, var_new / n_new
    standard_error = math.sqrt(base_term + new_term)
    if n_base < 2 or n_new < 2:
        df = float(max(n_base, n_new) - 1)
    elif standard_error == 0.0:
        df = float(n_base + n_new - 2)
    else:  # Welch-Satterthwaite
        df = (base_term + new_term) ** 2 / (base_term ** 2 / (n_base - 1) + new_term ** 2 / (n_new - 1))
    half = t_quantile_95(df) * standard_error
    spread.low, spread.high = math.exp(difference - half), math.exp(difference + half)
    spread.percent = 100.0 * (math.exp(half) - 1.0)
    return spread


def runs_text(spread, history=False):
    """'3+3 runs' (base+new files) or, for a trend, '6 earlier runs': whose spread was measured."""
    return f"{spread.base_runs} earlier runs" if history else f"{spread.base_runs}+{spread.new_runs} runs"


def spread_text(percent):
    """'±4.1%' (the between-run interval's half-width); '±>999%' when the runs barely agree on anything."""
    return f"±{percent:.1f}%" if percent < 999.95 else "±>999%"
