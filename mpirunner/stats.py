"""Statistics derived from the raw timing arrays: throughput, latency percentiles, histograms,
95% confidence intervals and the input path's shares. Whether a run is valid is decided in checks/.

Nothing here is accumulated during the run; every value is recomputed from the stored arrays, so
a reader of the HDF5 file can check each one (mpirunner.report does exactly that). No torch, no MPI.

Confidence intervals (95%):
- throughput: batch means. The timed steps are cut, by step index, into BATCHES contiguous
  batches (fewer when there are fewer steps); each batch owns the time from its first step's
  earliest start to the next batch's earliest start, so the batches partition the headline window
  exactly. The headline is the ratio estimator sum(samples) / sum(window); its standard error comes
  from the batch residuals (delta method) and a Student t quantile with batches - 1 degrees of
  freedom. Deterministic; no random numbers.
- latency p50 / p99: percentile bootstrap over all micro-batch latencies (BOOTSTRAP_RESAMPLES
  resamples, numpy default_rng seeded with BOOTSTRAP_SEED, so the same file always gives the same
  interval). Above BOOTSTRAP_MAX_VALUES values each resample draws that many and its deviation from
  the estimate is scaled by sqrt(m / n) (m-out-of-n bootstrap), which bounds the cost.
"""
import numpy as np

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}

BATCHES = 10
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_MAX_VALUES = 20000
CI_METHOD = (f"throughput: batch means ({BATCHES} batches, ratio estimator, t quantile); latency p50/p99: "
             f"percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})")

# two-sided 95% Student t quantiles (0.975) for 1..30 degrees of freedom
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
          2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
          2.045, 2.042)


def _t_975(degrees_of_freedom):
    if degrees_of_freedom < 1:
        return float("nan")
    return _T_975[degrees_of_freedom - 1] if degrees_of_freedom <= len(_T_975) else 1.96


def throughput(step_start, step_seconds, samples_per_step, barrier_skew_seconds=0.0):
    """Headline throughput: all samples of all ranks / (latest step end - earliest step start + barrier skew).

    The ranks' clocks are aligned by a barrier whose exit is not simultaneous; widening the window
    by the measured skew keeps the headline from gaining from that misalignment (0 on one rank).
    """
    step_start = np.atleast_2d(step_start)
    step_seconds = np.atleast_2d(step_seconds)
    window = float(np.nanmax(step_start + step_seconds) - np.nanmin(step_start)) + barrier_skew_seconds
    total_samples = samples_per_step * int(np.count_nonzero(~np.isnan(step_seconds)))
    return total_samples / window if window > 0 else float("nan")


def per_rank_throughput(step_start, step_seconds, samples_per_step):
    """Throughput of each rank over its own first-start-to-last-end window."""
    step_start = np.atleast_2d(step_start)
    step_seconds = np.atleast_2d(step_seconds)
    windows = np.max(step_start + step_seconds, axis=1) - np.min(step_start, axis=1)
    return samples_per_step * step_seconds.shape[1] / windows


def input_shares(step_start, step_seconds, batch_latency):
    """(host_gap, device_busy), one value per rank, over each rank's own first-start-to-last-end window.

    host_gap: the share of the window between steps (the runner's own cost: fetching inputs, the loop).
    device_busy: the sum of the rank's batch latencies over its window (how much the device worked).
    """
    starts = np.atleast_2d(np.asarray(step_start, dtype=np.float64))
    durations = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    latencies = np.atleast_2d(np.asarray(batch_latency, dtype=np.float64))
    windows = np.nanmax(starts + durations, axis=1) - np.nanmin(starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        host_gap = np.clip(1.0 - np.nansum(durations, axis=1) / windows, 0.0, 1.0)
        device_busy = np.nansum(latencies, axis=1) / windows
    return np.where(windows > 0, host_gap, np.nan), np.where(windows > 0, device_busy, np.nan)


def latency_summary(latency_seconds):
    """mean/min/max/std and percentiles in milliseconds, plus the coefficient of variation."""
    values_ms = np.asarray(latency_seconds, dtype=np.float64).ravel() * 1e3
    if values_ms.size == 0:
        return {}
    summary = {
        "latency_mean": float(values_ms.mean()),
        "latency_min": float(values_ms.min()),
        "latency_max": float(values_ms.max()),
        "latency_std": float(values_ms.std(ddof=1)) if values_ms.size > 1 else 0.0,
    }
    for name, q in PERCENTILES.items():
        summary[f"latency_{name}"] = float(np.percentile(values_ms, q))
    summary["latency_cv"] = summary["latency_std"] / summary["latency_mean"] if summary["latency_mean"] else 0.0
    return summary


def step_cv(step_seconds):
    """Coefficient of variation of step times over all ranks."""
    values = np.asarray(step_seconds, dtype=np.float64).ravel()
    if values.size < 2 or values.mean() == 0:
        return 0.0
    return float(values.std(ddof=1) / values.mean())


def log_histogram(latency_seconds, bins_per_decade=20):
    """Counts over log-spaced bins that cover every latency; returns (counts int64, edges seconds)."""
    values = np.asarray(latency_seconds, dtype=np.float64).ravel()
    values = values[values > 0]
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.float64)
    low = np.floor(np.log10(values.min()) * bins_per_decade) / bins_per_decade
    high = np.ceil(np.log10(values.max()) * bins_per_decade) / bins_per_decade
    if high <= low:
        high = low + 1.0 / bins_per_decade
    bins = int(round((high - low) * bins_per_decade))
    edges = np.logspace(low, high, bins + 1)
    edges[0] = min(edges[0], values.min())
    edges[-1] = max(edges[-1], values.max())
    counts, _ = np.histogram(values, bins=edges)
    return counts.astype(np.int64), edges


def throughput_interval(step_start, step_seconds, samples_per_step, barrier_skew_seconds=0.0, batches=BATCHES):
    """95% interval (low, high) of the headline throughput by batch means; (nan, nan) below 2 steps."""
    starts = np.atleast_2d(np.asarray(step_start, dtype=np.float64))
    durations = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    steps = starts.shape[1]
    count = min(batches, steps)
    if count < 2:
        return float("nan"), float("nan")
    edges = [int(block[0]) for block in np.array_split(np.arange(steps), count)] + [steps]
    samples = np.empty(count)
    windows = np.empty(count)
    for b in range(count):
        first, stop = edges[b], edges[b + 1]
        samples[b] = samples_per_step * np.count_nonzero(~np.isnan(durations[:, first:stop]))
        end = np.nanmin(starts[:, stop]) if stop < steps else np.nanmax(starts + durations)
        windows[b] = end - np.nanmin(starts[:, first])
    if windows.sum() <= 0:
        return float("nan"), float("nan")
    ratio = samples.sum() / windows.sum()
    residuals = samples - ratio * windows
    standard_error = np.sqrt(np.sum(residuals ** 2) / (count * (count - 1))) / windows.mean()
    relative = _t_975(count - 1) * standard_error / ratio
    headline = throughput(starts, durations, samples_per_step, barrier_skew_seconds)
    return float(headline * (1 - relative)), float(headline * (1 + relative))


def percentile_interval(values, q, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED,
                        max_values=BOOTSTRAP_MAX_VALUES):
    """95% percentile-bootstrap interval (low, high) of the q-th percentile of values; (nan, nan) below 2 values."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    n = values.size
    if n < 2:
        return float("nan"), float("nan")
    estimate = np.percentile(values, q)
    drawn = min(n, max_values)
    rng = np.random.default_rng(seed)
    per_chunk = max(1, 4_000_000 // drawn)
    boot = []
    for first in range(0, resamples, per_chunk):
        rows = min(per_chunk, resamples - first)
        boot.append(np.percentile(values[rng.integers(0, n, size=(rows, drawn))], q, axis=1))
    deviations = (np.concatenate(boot) - estimate) * np.sqrt(drawn / n)
    low, high = np.percentile(deviations, [2.5, 97.5])
    return float(estimate + low), float(estimate + high)


def half_width(estimate, low, high):
    """The y of `x ± y`: the larger distance from the estimate to an end of its interval."""
    return float(max(estimate - low, high - estimate))


def confidence(step_start, step_seconds, batch_latency, samples_per_step, barrier_skew_seconds=0.0):
    """The interval attributes of a run group: <name>_ci95_low/_high and <name>_ci95 (± half-width).

    Throughput in samples/s, latencies in ms, as the estimates they belong to.
    """
    result = {"ci_method": CI_METHOD}
    estimate = throughput(step_start, step_seconds, samples_per_step, barrier_skew_seconds)
    low, high = throughput_interval(step_start, step_seconds, samples_per_step, barrier_skew_seconds)
    result.update(throughput_ci95_low=low, throughput_ci95_high=high, throughput_ci95=half_width(estimate, low, high))
    latency_ms = np.asarray(batch_latency, dtype=np.float64).ravel() * 1e3
    latency_ms = latency_ms[np.isfinite(latency_ms)]
    for name in ("p50", "p99"):
        q = PERCENTILES[name]
        estimate = float(np.percentile(latency_ms, q)) if latency_ms.size else float("nan")
        low, high = percentile_interval(latency_ms, q)
        result.update({f"latency_{name}_ci95_low": low, f"latency_{name}_ci95_high": high,
                       f"latency_{name}_ci95": half_width(estimate, low, high)})
    return result


def median_standard_error(values):
    """Standard error of a median from the MAD (normal approximation: 1.2533 * sigma / sqrt(n))."""
    sigma = 1.4826 * np.median(np.abs(values - np.median(values)))
    return 1.2533 * sigma / np.sqrt(values.size)


def summarize(step_start, step_seconds, batch_latency, samples_per_step, barrier_skew_seconds=0.0):
    """The attributes of one run group, derived from the gathered arrays ([ranks, steps])."""
    summary = {
        "throughput": throughput(step_start, step_seconds, samples_per_step, barrier_skew_seconds),
        "throughput_sum": float(np.sum(per_rank_throughput(step_start, step_seconds, samples_per_step))),
        "step_cv": step_cv(step_seconds),
        "timed_seconds": float(np.nanmax(np.atleast_2d(step_start) + np.atleast_2d(step_seconds))
                               - np.nanmin(step_start)),
        "barrier_skew_seconds": float(barrier_skew_seconds),
    }
    summary.update(latency_summary(batch_latency))
    summary["cv"] = summary["step_cv"]
    summary["std"] = summary.get("latency_std", 0.0)
    summary.update(confidence(step_start, step_seconds, batch_latency, samples_per_step, barrier_skew_seconds))
    return summary
