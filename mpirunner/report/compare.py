"""Regression check for `mpirunner-report compare`: did NEW get slower than BASE, beyond noise?

Runs are matched by batch size. The decision uses the raw per-step timings, not the summaries:
the time per sample of each step (step_seconds / samples_per_step, every rank) is resampled with
a seeded bootstrap (numpy only, no scipy) to get a 95% interval of median(NEW) / median(BASE).
A run has regressed when that ratio exceeds 1 + threshold AND the whole interval lies above 1
(the slow-down is larger than the threshold and not explained by noise); improved symmetrically.
The numbers only: mpirunner.report.text prints them.
"""
import numpy as np

from mpirunner.report.rows import finite_rows, first_run_attrs, run_latency, sorted_runs, summary_row

RESAMPLES = 2000
CONFIDENCE = 0.95
CHUNK_ELEMENTS = 2_000_000  # bounds the memory of one block of resamples
COMPARED_METADATA = ("backend", "device_name", "world_size")
COMPARED_RUN_METADATA = ("model", "precision", "dtype", "image_size", "device_iterations", "data")


def per_sample_seconds(run):
    """Each step's time per sample (s), all ranks flattened, padding dropped."""
    samples = run["attrs"].get("samples_per_step") or 1
    if run.get("step_seconds") is None:
        return np.zeros(0)
    rows = finite_rows(run["step_seconds"])
    return np.concatenate(rows) / samples if rows else np.zeros(0)


def resampled_medians(values, rng, resamples=RESAMPLES):
    """Medians of `resamples` bootstrap resamples (with replacement) of values."""
    rows_per_block = max(1, CHUNK_ELEMENTS // max(values.size, 1))
    medians = []
    done = 0
    while done < resamples:
        count = min(rows_per_block, resamples - done)
        picks = rng.integers(0, values.size, size=(count, values.size))
        medians.append(np.median(values[picks], axis=1))
        done += count
    return np.concatenate(medians)


def time_ratio_interval(base_values, new_values, seed=0, resamples=RESAMPLES, confidence=CONFIDENCE):
    """(median ratio NEW/BASE, interval low, interval high) of per-sample step time, by seeded bootstrap."""
    rng = np.random.default_rng(seed)
    ratios = resampled_medians(new_values, rng, resamples) / resampled_medians(base_values, rng, resamples)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(np.median(new_values) / np.median(base_values)), float(low), float(high)


def regression_verdict(ratio, low, high, threshold):
    """'regressed', 'improved' or 'same' from the time ratio, its interval and the threshold (a fraction)."""
    if ratio > 1.0 + threshold and low > 1.0:
        return "regressed"
    if ratio < 1.0 / (1.0 + threshold) and high < 1.0:
        return "improved"
    return "same"


def _by_batch_size(data):
    matched = {}
    for name in sorted_runs(data):
        matched.setdefault(data["runs"][name]["attrs"].get("batch_size"), name)
    return matched


def compare_files(base, new, threshold, seed=0):
    """One result dict per batch size in either file; 'regression_verdict': regressed / improved / same / only in ..."""
    base_runs, new_runs = _by_batch_size(base), _by_batch_size(new)
    results = []
    for batch_size in sorted(set(base_runs) | set(new_runs), key=lambda size: (size is None, size)):
        if batch_size not in new_runs or batch_size not in base_runs:
            results.append({"batch_size": batch_size,
                            "regression_verdict": "only in base" if batch_size in base_runs else "only in new"})
            continue
        base_run, new_run = base["runs"][base_runs[batch_size]], new["runs"][new_runs[batch_size]]
        base_row, new_row = summary_row(base, base_runs[batch_size]), summary_row(new, new_runs[batch_size])
        base_values, new_values = per_sample_seconds(base_run), per_sample_seconds(new_run)
        result = {"batch_size": batch_size, "base_throughput": base_row["throughput"],
                  "new_throughput": new_row["throughput"],
                  "throughput_ratio": _ratio(new_row["throughput"], base_row["throughput"])}
        base_latency, new_latency = run_latency(base_run), run_latency(new_run)
        for name, q in (("p50", 50), ("p99", 99)):
            result[f"{name}_ratio"] = (_ratio(np.percentile(new_latency, q), np.percentile(base_latency, q))
                                       if base_latency.size and new_latency.size else float("nan"))
        if base_values.size == 0 or new_values.size == 0:
            result.update(time_ratio=float("nan"), low=float("nan"), high=float("nan"), regression_verdict="no timings")
        else:
            ratio, low, high = time_ratio_interval(base_values, new_values, seed=seed)
            result.update(time_ratio=ratio, low=low, high=high,
                          regression_verdict=regression_verdict(ratio, low, high, threshold))
        results.append(result)
    return results


def _ratio(new, base):
    try:
        return float(new) / float(base) if float(base) else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def metadata_differences(base, new):
    """(key, base value, new value) for what differs beyond timing (a comparison across them may be unfair)."""
    differences = [(key, base["attrs"].get(key, "?"), new["attrs"].get(key, "?")) for key in COMPARED_METADATA
                   if str(base["attrs"].get(key, "")) != str(new["attrs"].get(key, ""))]
    base_first, new_first = first_run_attrs(base), first_run_attrs(new)
    differences += [(key, base_first.get(key, "?"), new_first.get(key, "?")) for key in COMPARED_RUN_METADATA
                    if str(base_first.get(key, "")) != str(new_first.get(key, ""))]
    return differences
