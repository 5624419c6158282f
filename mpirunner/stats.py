"""Statistics derived from the raw timing arrays: throughput, latency percentiles, histograms.

Nothing here is accumulated during the run; every value is recomputed from the stored arrays, so
a reader of the HDF5 file can check each one (report.py does exactly that). No torch, no MPI.
"""
import numpy as np

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}


def throughput(step_start, step_seconds, samples_per_step):
    """Headline throughput: all samples of all ranks / (latest step end - earliest step start)."""
    step_start = np.atleast_2d(step_start)
    step_seconds = np.atleast_2d(step_seconds)
    window = float(np.max(step_start + step_seconds) - np.min(step_start))
    total_samples = samples_per_step * step_seconds.size
    return total_samples / window if window > 0 else float("nan")


def per_rank_throughput(step_start, step_seconds, samples_per_step):
    """Throughput of each rank over its own first-start-to-last-end window."""
    step_start = np.atleast_2d(step_start)
    step_seconds = np.atleast_2d(step_seconds)
    windows = np.max(step_start + step_seconds, axis=1) - np.min(step_start, axis=1)
    return samples_per_step * step_seconds.shape[1] / windows


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


def summarize(step_start, step_seconds, batch_latency, samples_per_step):
    """The attributes of one run group, derived from the gathered arrays ([ranks, steps])."""
    summary = {
        "throughput": throughput(step_start, step_seconds, samples_per_step),
        "throughput_sum": float(np.sum(per_rank_throughput(step_start, step_seconds, samples_per_step))),
        "step_cv": step_cv(step_seconds),
        "timed_seconds": float(np.max(np.atleast_2d(step_start) + np.atleast_2d(step_seconds))
                               - np.min(step_start)),
    }
    summary.update(latency_summary(batch_latency))
    summary["cv"] = summary["step_cv"]
    summary["std"] = summary.get("latency_std", 0.0)
    return summary
