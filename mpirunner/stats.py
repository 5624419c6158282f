"""Statistics recomputed from the raw timing arrays (so a reader of the file can check each one): throughput,
latency percentiles, histograms, 95% intervals (docs/methodology-and-validity.md) and the input path's shares."""
import numpy as np

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_MAX_VALUES = 20000
MAX_BLOCKS = 2000            # at most this many blocks per rank (longer blocks beyond), bounds the cost
MIN_INTERVAL_STEPS = 5
MIN_INTERVAL_VALUES = 10
CI_METHOD = (f"throughput: block bootstrap of each rank's window ({BOOTSTRAP_RESAMPLES} resamples, seed "
             f"{BOOTSTRAP_SEED}, blocks of ~n^(1/3) steps, percentile interval); latency p50/p99: percentile "
             f"bootstrap on log latency ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})")


def throughput(step_start, step_seconds, samples_per_step, barrier_skew_seconds=0.0):
    """Headline throughput: all samples of all ranks / (latest step end - earliest step start + barrier skew).
    The barrier that aligns the ranks' clocks does not exit at once: the skew keeps the headline from gaining."""
    step_start, step_seconds = np.atleast_2d(step_start, step_seconds)
    window = float(np.nanmax(step_start + step_seconds) - np.nanmin(step_start)) + barrier_skew_seconds
    total_samples = samples_per_step * int(np.count_nonzero(~np.isnan(step_seconds)))
    return total_samples / window if window > 0 else float("nan")


def reference_throughput(step_seconds, samples_per_step):
    """The reference harness's figure: per step, all ranks' samples over the slowest rank's step time,
    averaged over the timed steps (comparable with Graphcore's published tables, not our headline)."""
    seconds = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    ranks_done = np.count_nonzero(~np.isnan(seconds), axis=0)
    usable = ranks_done > 0
    if not np.any(usable):
        return float("nan")
    slowest = np.nanmax(seconds[:, usable], axis=0)
    return float(np.mean(samples_per_step * ranks_done[usable] / slowest))


def per_rank_throughput(step_start, step_seconds, samples_per_step):
    """Throughput of each rank over its own first-start-to-last-end window."""
    step_start, step_seconds = np.atleast_2d(step_start, step_seconds)
    windows = np.max(step_start + step_seconds, axis=1) - np.min(step_start, axis=1)
    return samples_per_step * step_seconds.shape[1] / windows


def input_shares(step_start, step_seconds, batch_latency):
    """(host_gap, device_busy) per rank over its own window: the share between steps (the runner's own cost)
    and the rank's batch latencies over the window (how much the device worked)."""
    starts, durations, latencies = (np.atleast_2d(np.asarray(values, dtype=np.float64))
                                    for values in (step_start, step_seconds, batch_latency))
    windows = np.nanmax(starts + durations, axis=1) - np.nanmin(starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        host_gap = np.clip(1.0 - np.nansum(durations, axis=1) / windows, 0.0, 1.0)
        device_busy = np.nansum(latencies, axis=1) / windows
    return np.where(windows > 0, host_gap, np.nan), np.where(windows > 0, device_busy, np.nan)


def latency_summary(latency_seconds):
    """mean/min/max/std and percentiles in milliseconds, plus the coefficient of variation."""
    values_ms = np.asarray(latency_seconds, dtype=np.float64).ravel() * 1e3
    values_ms = values_ms[~np.isnan(values_ms)]  # the NaN padding of ranks with fewer values (server runs)
    if values_ms.size == 0:
        return {}
    summary = {"latency_count": int(values_ms.size), "latency_mean": float(values_ms.mean()),
               "latency_min": float(values_ms.min()), "latency_max": float(values_ms.max()),
               "latency_std": float(values_ms.std(ddof=1)) if values_ms.size > 1 else 0.0,
               **{f"latency_{name}": float(np.percentile(values_ms, q)) for name, q in PERCENTILES.items()}}
    summary["latency_cv"] = summary["latency_std"] / summary["latency_mean"] if summary["latency_mean"] else 0.0
    return summary


def step_cv(step_seconds):
    """Coefficient of variation of step times over all ranks."""
    values = np.asarray(step_seconds, dtype=np.float64).ravel()
    if values.size < 2 or values.mean() == 0:
        return 0.0
    return float(values.std(ddof=1) / values.mean())


def rank_cv_percents(step_seconds):
    """Per rank, 100 * std(ddof=1) / mean of its timed steps: the one formula of the --max-cv rule and the
    `max cv %` column. NaN where a rank is not judged (fewer than 2 steps, an infinite step, a mean <= 0)."""
    table = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    percents = np.full(table.shape[0], np.nan)
    for rank, row in enumerate(table):
        row = row[~np.isnan(row)]
        if row.size >= 2 and np.all(np.isfinite(row)) and row.mean() > 0:
            percents[rank] = 100.0 * row.std(ddof=1) / row.mean()
    return percents


def max_rank_cv(step_seconds):
    """The largest per-rank cv as a fraction (0 when no rank is judged)."""
    percents = rank_cv_percents(step_seconds)
    return float(np.nanmax(percents)) / 100.0 if np.any(np.isfinite(percents)) else 0.0


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


PERCENTILE_CONFIDENCE = 0.99  # MLPerf LoadGen's early-stopping confidence


def minimum_count(q, confidence=PERCENTILE_CONFIDENCE):
    """The fewest values whose largest bounds the q-th percentile at `confidence`: (q/100)^n <= 1 - confidence
    (p99: 459, LoadGen's minimum). The one rule for showing a percentile anywhere and for judging a bound."""
    if q >= 100 or q <= 0:
        return 1
    return int(np.ceil(np.log(1.0 - confidence) / np.log(q / 100.0) - 1e-9))


def enough_for_percentile(count, q):
    return q < 100 and count >= minimum_count(q)


def upper_bound_rank(count, q, confidence=PERCENTILE_CONFIDENCE):
    """The smallest 1-based k with P(Binomial(count, q/100) >= k) <= 1 - confidence: the order statistic that
    bounds the q-th percentile from above (LoadGen's early-stopping test); None when none does."""
    if count <= 0 or not enough_for_percentile(count, q):
        return None
    p = q / 100.0
    k = np.arange(count + 1, dtype=np.float64)
    log_pmf = count * np.log1p(-p) + np.concatenate(
        [[0.0], np.cumsum(np.log((count - k[:-1]) / (k[:-1] + 1.0)))]) + k * np.log(p / (1.0 - p))
    pmf = np.exp(log_pmf - log_pmf.max())
    tail = np.cumsum(pmf[::-1])[::-1] / pmf.sum()  # tail[k] = P(X >= k)
    (ranks,) = np.nonzero(tail <= 1.0 - confidence)
    return int(ranks[0]) if ranks.size else None


def percentile_upper_bound(values, q, confidence=PERCENTILE_CONFIDENCE):
    """upper_bound_rank's order statistic of `values` (+inf: over any bound); NaN with too few values."""
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
    ordered = ordered[~np.isnan(ordered)]
    rank = upper_bound_rank(ordered.size, q, confidence)
    return float(ordered[rank - 1]) if rank is not None else float("nan")


def throughput_interval(step_start, step_seconds, samples_per_step, barrier_skew_seconds=0.0,
                        resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """95% block-bootstrap interval of the headline throughput; (nan, nan) with too few steps."""
    starts, durations = (np.atleast_2d(np.asarray(values, dtype=np.float64)) for values in (step_start, step_seconds))
    origin = np.nanmin(starts)
    rng = np.random.default_rng(seed)
    samples, window = np.zeros(resamples), np.zeros(resamples)
    for rank_starts, rank_seconds in zip(starts, durations):
        keep = np.isfinite(rank_starts) & np.isfinite(rank_seconds)
        rank_starts, rank_seconds = rank_starts[keep], rank_seconds[keep]
        n = rank_seconds.size
        if n < MIN_INTERVAL_STEPS:
            return float("nan"), float("nan")
        occupancy = np.append(np.diff(rank_starts), rank_seconds[-1])
        block_steps = max(int(round(n ** (1.0 / 3.0))), int(np.ceil(n / MAX_BLOCKS)))
        parts = np.array_split(occupancy, max(1, int(np.ceil(n / block_steps))))
        sums, counts = np.array([part.sum() for part in parts]), np.array([part.size for part in parts])
        picks = rng.integers(0, sums.size, size=(resamples, sums.size))
        samples += samples_per_step * counts[picks].sum(axis=1)
        window = np.maximum(window, rank_starts[0] - origin + sums[picks].sum(axis=1))
    rates = samples / (window + barrier_skew_seconds)
    low, high = np.percentile(rates, [2.5, 97.5])
    headline = throughput(starts, durations, samples_per_step, barrier_skew_seconds)
    return float(min(low, headline)), float(max(high, headline))


def percentile_interval(values, q, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, max_values=BOOTSTRAP_MAX_VALUES):
    """95% bootstrap interval of the q-th percentile of positive values, on a log scale (or nans)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values) & (values > 0)]
    n = values.size
    if n < MIN_INTERVAL_VALUES or not enough_for_percentile(n, q):
        return float("nan"), float("nan")
    logs = np.log(values)
    estimate = np.percentile(logs, q)
    drawn = min(n, max_values)
    rng = np.random.default_rng(seed)
    per_chunk = max(1, 4_000_000 // drawn)
    boot = []
    for first in range(0, resamples, per_chunk):
        rows = min(per_chunk, resamples - first)
        boot.append(np.percentile(logs[rng.integers(0, n, size=(rows, drawn))], q, axis=1))
    deviations = (np.concatenate(boot) - estimate) * np.sqrt(drawn / n)
    low, high = np.percentile(deviations, [2.5, 97.5])
    return float(np.exp(estimate + min(low, 0.0))), float(np.exp(estimate + max(high, 0.0)))


def half_width(estimate, low, high):
    """The y of `x ± y`: the larger distance from the estimate to an end of its interval."""
    return float(max(estimate - low, high - estimate))


def confidence(step_start, step_seconds, batch_latency, samples_per_step, barrier_skew_seconds=0.0):
    """The interval attributes of a run group: <name>_ci95_low/_high and <name>_ci95 (± half-width); one that
    cannot be given is left out and named in `ci_unavailable` with its reason (never stored as NaN)."""
    result = {"ci_method": CI_METHOD}
    missing = []
    estimate = throughput(step_start, step_seconds, samples_per_step, barrier_skew_seconds)
    low, high = throughput_interval(step_start, step_seconds, samples_per_step, barrier_skew_seconds)
    if np.isfinite(low) and np.isfinite(estimate):
        result.update(throughput_ci95_low=low, throughput_ci95_high=high,
                      throughput_ci95=half_width(estimate, low, high))
    else:
        missing.append(f"throughput: fewer than {MIN_INTERVAL_STEPS} timed steps on a rank")
    latency_ms = np.asarray(batch_latency, dtype=np.float64).ravel() * 1e3
    latency_ms = latency_ms[np.isfinite(latency_ms)]
    for name in ("p50", "p99"):
        q = PERCENTILES[name]
        estimate = float(np.percentile(latency_ms, q)) if latency_ms.size else float("nan")
        low, high = percentile_interval(latency_ms, q)
        if np.isfinite(low) and np.isfinite(estimate):
            result.update({f"latency_{name}_ci95_low": low, f"latency_{name}_ci95_high": high,
                           f"latency_{name}_ci95": half_width(estimate, low, high)})
        else:
            needed = max(MIN_INTERVAL_VALUES, minimum_count(q))
            missing.append(f"{name}: {latency_ms.size} latencies < {needed}")
    if missing:
        result["ci_unavailable"] = "; ".join(missing)
    return result


def summarize(step_start, step_seconds, batch_latency, samples_per_step, barrier_skew_seconds=0.0):
    """The attributes of one run group, derived from the gathered arrays ([ranks, steps])."""
    summary = {
        "throughput": throughput(step_start, step_seconds, samples_per_step, barrier_skew_seconds),
        "throughput_sum": float(np.sum(per_rank_throughput(step_start, step_seconds, samples_per_step))),
        "throughput_reference": reference_throughput(step_seconds, samples_per_step),
        "step_cv": step_cv(step_seconds),
        "step_cv_rank_max": max_rank_cv(step_seconds),
        "timed_seconds": float(np.nanmax(np.atleast_2d(step_start) + np.atleast_2d(step_seconds))
                               - np.nanmin(step_start)),
        "barrier_skew_seconds": float(barrier_skew_seconds),
    }
    summary.update(latency_summary(batch_latency))
    summary["cv"] = summary["step_cv"]
    summary["std"] = summary.get("latency_std", 0.0)
    summary.update(confidence(step_start, step_seconds, batch_latency, samples_per_step, barrier_skew_seconds))
    return summary


def accuracy_attrs(gathered, weights=None):
    """Top-1 / top-5 accuracy on labelled real data, every rank's counts summed (never a verdict)."""
    samples, top1, top5 = (sum(row[key] for row in gathered) for key in ("samples", "top1", "top5"))
    classes = gathered[0]["classes"]
    return {
        "accuracy_samples": samples, "accuracy_top1_correct": top1, "accuracy_top5_correct": top5,
        "accuracy_top1": top1 / samples if samples else float("nan"),
        "accuracy_top5": top5 / samples if samples else float("nan"),
        "accuracy_images": sum(row["images"] for row in gathered),  # decoded images, all ranks together
        "accuracy_classes": len(classes),
        "accuracy_class_map": "; ".join(f"{name}={index}" for index, name in enumerate(classes)),
        "accuracy_model_classes": max(row["model_classes"] for row in gathered),
        "accuracy_weights": weights or "random",
    }
