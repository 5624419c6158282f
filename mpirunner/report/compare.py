"""Regression check for `mpirunner-report compare`: did NEW get slower than BASE, beyond noise?

Runs are matched by batch size; each pair is judged by compare_runs, which the summary's trends
(report/trends.py) call too, so both say the same. The rule, on the raw per-step timings:
- Validity first: a pair with an INVALID run is left out of the verdict ("invalid-new" when NEW is
  INVALID, "excluded-invalid" when only BASE is), unless include_invalid.
- Same world size: per-rank time per sample. Each NEW rank's median step time per sample is
  compared with the same rank's in BASE; the rank whose ratio is worst decides, so one rank that
  got slower is a regression even when the pooled median hides it.
- Different world sizes: whole-job throughput, (world size x samples per step) / the step time of
  the slowest rank, since per-rank time per sample says nothing about a job that has more ranks.
Intervals are 95% seeded bootstrap intervals (numpy only) of the ratio NEW/BASE of the quantity
that decided. Regressed: the ratio is worse than the threshold AND the whole interval is on the
worse side of 1 (the change is larger than the threshold and not explained by noise); improved
symmetrically. The numbers only: mpirunner.report.text prints them.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np

from mpirunner.report.rows import finite_rows, first_run_attrs, run_latency, sorted_runs, summary_row

RESAMPLES = 2000
CONFIDENCE = 0.95
CHUNK_ELEMENTS = 2_000_000  # bounds the memory of one block of resamples
CACHED_ELEMENTS = 4_000_000  # resamplings up to this size (8 MB) are kept for the next pair of the same sizes
COMPARED_METADATA = ("backend", "device_name", "world_size")
COMPARED_RUN_METADATA = ("model", "precision", "dtype", "image_size", "device_iterations", "data")
PER_RANK = "per-rank time per sample"
WHOLE_JOB = "whole-job throughput"
STATUSES = ("improved", "same", "regressed", "excluded-invalid", "invalid-new", "no-timings")


@dataclass
class PairResult:
    """The judgement of one BASE/NEW pair.

    status: improved / same / regressed / excluded-invalid / invalid-new / no-timings.
    decided_by: the quantity compared (PER_RANK or WHOLE_JOB); ratio, low, high: NEW/BASE of that
    quantity with its 95% interval (for time, above 1 is slower; for throughput, above 1 is faster).
    rank: for PER_RANK, the NEW rank that decided (the slowest). note: what a reader must know.
    """

    status: str
    decided_by: str
    ratio: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    note: str = ""
    rank: int = -1


def _rank_rows(attrs, step_seconds):
    """Per rank: its finite step times divided by samples per step (s per sample)."""
    samples = attrs.get("samples_per_step") or 1
    return [row / samples for row in finite_rows(step_seconds) if row.size]


def _job_step_seconds(step_seconds):
    """Per step, the slowest rank's time: the step time of the whole (synchronous) job."""
    table = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    with np.errstate(all="ignore"):
        job = np.nanmax(table, axis=0) if table.size else np.zeros(0)
    return job[np.isfinite(job)]


def resampled_medians(values, rng, resamples=RESAMPLES):
    """Medians of `resamples` bootstrap resamples (with replacement) of values."""
    return _medians(values, _draw_counts(rng, values.size, resamples))


def _draw_counts(rng, size, resamples):
    """The resamples of `size` values as counts, block by block (a generator: one block in memory at a time).

    A block is [size, rows]: how often each value was drawn in each resample. The draws are
    rng.integers in blocks of CHUNK_ELEMENTS, as the plain bootstrap drew them, so the intervals
    are those of np.median over values[picks].
    """
    rows_per_block = max(1, CHUNK_ELEMENTS // max(size, 1))
    done = 0
    while done < resamples:
        count = min(rows_per_block, resamples - done)
        picks = rng.integers(0, size, size=(count, size))
        flat = (picks + size * np.arange(count)[:, None]).ravel()
        yield np.ascontiguousarray(np.bincount(flat, minlength=count * size).reshape(count, size).T,
                                   dtype=np.int16 if size <= np.iinfo(np.int16).max else np.int32)
        done += count


def _medians(values, blocks):
    """The median of each resample, from its counts: exactly np.median of the resampled values, without sorting them.

    In value order, a row's k-th smallest value is the first whose running count exceeds k.
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    middle = [(values.size - 1) // 2, values.size // 2]  # the same index twice for an odd count
    medians = []
    for counts in blocks:
        running = np.cumsum(counts[order], axis=0, dtype=counts.dtype)  # a count never exceeds the size
        low, high = ((running <= k).sum(axis=0) for k in middle)
        medians.append((ordered[low] + ordered[high]) / 2 if middle[0] != middle[1] else ordered[low])
    return np.concatenate(medians)


@functools.lru_cache(maxsize=4)  # at most 32 MB
def _pair_counts(seed, resamples, new_size, base_size):
    """The counts of the NEW then the BASE resamples drawn from one seeded rng (they depend on the sizes alone)."""
    rng = np.random.default_rng(seed)
    return list(_draw_counts(rng, new_size, resamples)), list(_draw_counts(rng, base_size, resamples))


def time_ratio_interval(base_values, new_values, seed=0, resamples=RESAMPLES, confidence=CONFIDENCE):
    """(median ratio NEW/BASE, interval low, interval high) of per-sample step time, by seeded bootstrap.

    The resampling depends only on the seed and the sizes, so it is drawn once per (seed, sizes)
    and kept for the next pair of the same sizes (a trend's steps); large ones are drawn each time.
    """
    if isinstance(seed, int) and (new_values.size + base_values.size) * resamples <= CACHED_ELEMENTS:
        new_counts, base_counts = _pair_counts(seed, resamples, new_values.size, base_values.size)
        ratios = _medians(new_values, new_counts) / _medians(base_values, base_counts)
    else:  # NEW's medians are all drawn before BASE's, one block at a time
        rng = np.random.default_rng(seed)
        ratios = resampled_medians(new_values, rng, resamples) / resampled_medians(base_values, rng, resamples)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(np.median(new_values) / np.median(base_values)), float(low), float(high)


def regression_verdict(ratio, low, high, threshold):
    """'regressed', 'improved' or 'same' from a TIME ratio, its interval and the threshold (a fraction)."""
    if ratio > 1.0 + threshold and low > 1.0:
        return "regressed"
    if ratio < 1.0 / (1.0 + threshold) and high < 1.0:
        return "improved"
    return "same"


def _invalid_status(base_row, new_row, include_invalid):
    """(status or None, note): whether validity keeps this pair out of the verdict."""
    base_ok, new_ok = bool(base_row.get("valid", True)), bool(new_row.get("valid", True))
    if base_ok and new_ok:
        return None, ""
    which = " and ".join(name for name, ok in (("base", base_ok), ("new", new_ok)) if not ok)
    reasons = "; ".join(f"{name}: {row.get('validity_reason', '')}" for name, row, ok
                        in (("base", base_row, base_ok), ("new", new_row, new_ok)) if not ok)
    if include_invalid:
        return None, f"{which} INVALID, compared anyway (--include-invalid): {reasons}"
    return ("invalid-new" if not new_ok else "excluded-invalid"), f"{which} INVALID ({reasons})"


def compare_runs(base_row, new_row, threshold_percent, include_invalid=False, seed=0):
    """Judge NEW against BASE: two rows as report/rows.py's summary_row builds them (with their arrays)."""
    threshold = threshold_percent / 100.0
    base_world, new_world = _world_size(base_row), _world_size(new_row)
    decided_by = PER_RANK if base_world == new_world else WHOLE_JOB
    status, note = _invalid_status(base_row, new_row, include_invalid)
    if status is not None:
        return PairResult(status, decided_by, note=note)
    if decided_by == WHOLE_JOB:
        note = "; ".join(part for part in (note, f"world size differs ({base_world} vs {new_world}): "
                                                 "decided on whole-job throughput") if part)
    base_arrays, new_arrays = _arrays(base_row), _arrays(new_row)
    base_rows = _rank_rows(base_row, base_arrays.get("step_seconds"))
    new_rows = _rank_rows(new_row, new_arrays.get("step_seconds"))
    if not base_rows or not new_rows:
        return PairResult("no-timings", decided_by, note="; ".join(p for p in (note, "no per-step timings") if p))
    if decided_by == PER_RANK and len(base_rows) != len(new_rows):  # a rank without timings: judge the job
        decided_by = WHOLE_JOB
    if decided_by == PER_RANK:
        # rank r against rank r: a rank that was already slow in BASE is no regression of NEW
        judged = [time_ratio_interval(base, new, seed=seed) for base, new in zip(base_rows, new_rows)]
        rank = int(np.argmax([ratio for ratio, _low, _high in judged]))
        ratio, low, high = judged[rank]
        if len(new_rows) > 1:
            note = "; ".join(p for p in (note, f"rank {rank} (worst new/base ratio) decided") if p)
        return PairResult(regression_verdict(ratio, low, high, threshold), decided_by, ratio, low, high, note, rank)
    # whole job: time per sample of the job = slowest rank's step / (ranks x samples per step)
    base_job = _job_step_seconds(base_arrays["step_seconds"]) / (base_world * (base_row.get("samples_per_step") or 1))
    new_job = _job_step_seconds(new_arrays["step_seconds"]) / (new_world * (new_row.get("samples_per_step") or 1))
    time_ratio, time_low, time_high = time_ratio_interval(base_job, new_job, seed=seed)
    status = regression_verdict(time_ratio, time_low, time_high, threshold)
    return PairResult(status, decided_by, 1.0 / time_ratio, 1.0 / time_high, 1.0 / time_low, note)


def _world_size(row):
    try:
        return int(row.get("world_size") or 1)
    except (TypeError, ValueError):
        return 1


def _arrays(row):
    return getattr(row, "arrays", None) or {}


def _by_batch_size(data):
    matched = {}
    for name in sorted_runs(data):
        matched.setdefault(data["runs"][name]["attrs"].get("batch_size"), name)
    return matched


def compare_files(base, new, threshold, seed=0, include_invalid=False):
    """One result dict per batch size in either file: 'pair' (a PairResult) or 'regression_verdict' 'only in ...'.

    threshold is a fraction (0.05 = 5%).
    """
    base_runs, new_runs = _by_batch_size(base), _by_batch_size(new)
    results = []
    for batch_size in sorted(set(base_runs) | set(new_runs), key=lambda size: (size is None, size)):
        if batch_size not in new_runs or batch_size not in base_runs:
            results.append({"batch_size": batch_size,
                            "regression_verdict": "only in base" if batch_size in base_runs else "only in new"})
            continue
        base_run, new_run = base["runs"][base_runs[batch_size]], new["runs"][new_runs[batch_size]]
        base_row, new_row = summary_row(base, base_runs[batch_size]), summary_row(new, new_runs[batch_size])
        pair = compare_runs(base_row, new_row, 100.0 * threshold, include_invalid=include_invalid, seed=seed)
        result = {"batch_size": batch_size, "pair": pair, "regression_verdict": pair.status,
                  "base_valid": bool(base_row.get("valid", True)), "new_valid": bool(new_row.get("valid", True)),
                  "base_throughput": base_row["throughput"], "new_throughput": new_row["throughput"],
                  "throughput_ratio": _ratio(new_row["throughput"], base_row["throughput"]),
                  "time_ratio": pair.ratio, "low": pair.low, "high": pair.high}
        base_latency, new_latency = run_latency(base_run), run_latency(new_run)
        for name, q in (("p50", 50), ("p99", 99)):
            result[f"{name}_ratio"] = (_ratio(np.percentile(new_latency, q), np.percentile(base_latency, q))
                                       if base_latency.size and new_latency.size else float("nan"))
        results.append(result)
    return results


def _ratio(new, base):
    try:
        value = float(new) / float(base) if float(base) else float("nan")
    except (TypeError, ValueError):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def metadata_differences(base, new):
    """(key, base value, new value) for what differs beyond timing (a comparison across them may be unfair)."""
    differences = [(key, base["attrs"].get(key, "?"), new["attrs"].get(key, "?")) for key in COMPARED_METADATA
                   if str(base["attrs"].get(key, "")) != str(new["attrs"].get(key, ""))]
    base_first, new_first = first_run_attrs(base), first_run_attrs(new)
    differences += [(key, base_first.get(key, "?"), new_first.get(key, "?")) for key in COMPARED_RUN_METADATA
                    if str(base_first.get(key, "")) != str(new_first.get(key, ""))]
    return differences
