"""Regression check for `mpirunner-report compare` and each trend step: did NEW get slower than BASE, beyond noise?
judge_groups is the one rule for both (docs/reports.md, "compare"; docs/methodology-and-validity.md)."""
from dataclasses import dataclass

import numpy as np

from mpirunner import stats
from mpirunner.report.rows import RunRow, finite_number, finite_rows, run_latency, sorted_runs, summary_row
# CHUNK_ELEMENTS, CONFIDENCE, RESAMPLES and resampled_medians: the bootstrap's, read from here by tests and benchmarks
from mpirunner.report.variation import (CHUNK_ELEMENTS, CONFIDENCE, HISTORY_RUNS, NOISE_FLOOR_PERCENT,  # noqa: F401
                                        RESAMPLES, SCALING, between_runs, configuration_key, key_differences,
                                        resampled_medians, time_ratio_interval)
from mpirunner.runfile.hdf5 import read_step_seconds

PER_RANK = "per-rank time per sample"
WHOLE_JOB = "whole-job throughput"
BETWEEN_RUNS = "between-run spread"
NOISE_FLOOR = "noise floor"


@dataclass
class PairResult:
    """The judgement of one BASE/NEW pair: NEW/BASE of what decided, with its bootstrap and between-run intervals."""

    status: str
    decided_by: str
    ratio: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    note: str = ""
    rank: int = -1
    reason: str = ""
    decided_by_noise: str = ""
    between_low: float = float("nan")
    between_high: float = float("nan")
    between_run_percent: float = float("nan")
    base_runs: int = 1
    new_runs: int = 1


def _rank_rows(row):
    """Per rank: its finite step times divided by samples per step (s per sample)."""
    samples = row.get("samples_per_step") or 1
    return [times / samples for times in finite_rows(_arrays(row).get("step_seconds")) if times.size]


def _job_values(row):
    """The whole job's time per sample of each step: the slowest rank's step / (ranks x samples per step)."""
    table = np.atleast_2d(np.asarray(_arrays(row)["step_seconds"], dtype=np.float64))
    with np.errstate(all="ignore"):
        job = np.nanmax(table, axis=0) if table.size else np.zeros(0)
    return job[np.isfinite(job)] / (_world_size(row) * (row.get("samples_per_step") or 1))


def _validity(base_rows, new_rows, include_invalid):
    """(status or None, note, BASE rows, NEW rows to judge): whether validity keeps the pair out of the verdict."""
    bad = {name: [row for row in rows if not bool(row.get("valid", True))]
           for name, rows in (("base", base_rows), ("new", new_rows))}
    if not bad["base"] and not bad["new"]:
        return None, "", base_rows, new_rows
    which = " and ".join(name for name in ("base", "new") if bad[name])
    reasons = "; ".join(f"{name}: {row.get('validity_reason', '')}" for name in ("base", "new") for row in bad[name])
    if include_invalid:
        return None, f"{which} INVALID, compared anyway (--include-invalid): {reasons}", base_rows, new_rows
    kept_base, kept_new = ([row for row in rows if bool(row.get("valid", True))] for rows in (base_rows, new_rows))
    new_fails = bool(bad["new"]) and (len(new_rows) < 2 or 2 * len(kept_new) <= len(new_rows))
    if new_fails or not kept_base:
        return ("invalid-new" if new_fails else "excluded-invalid"), f"{which} INVALID ({reasons})", base_rows, new_rows
    left_out = [f"{len(bad[name])} INVALID {name} run(s)" for name in ("base", "new") if bad[name]]
    return None, f"{' and '.join(left_out)} left out ({reasons})", kept_base, kept_new


def judge_groups(base_rows, new_rows, threshold_percent, noise_floor_percent=NOISE_FLOOR_PERCENT,
                 include_invalid=False, seed=0, history=False):
    """Judge NEW against BASE rows (rows.summary_row's, with their arrays); history: BASE are a trend's earlier runs."""
    status, note, base_rows, new_rows = _validity(list(base_rows), list(new_rows), include_invalid)
    decided_by = PER_RANK if len({_world_size(row) for row in base_rows + new_rows}) == 1 else WHOLE_JOB
    counts = {"base_runs": len(base_rows), "new_runs": len(new_rows)}
    if status is not None:
        return PairResult(status, decided_by, note=note, **counts)
    if decided_by == WHOLE_JOB:
        base_sizes, new_sizes = ("/".join(map(str, sorted({_world_size(row) for row in rows})))
                                 for rows in (base_rows, new_rows))
        note = _join(note, f"world size differs ({base_sizes} vs {new_sizes}): decided on whole-job throughput")
    base_values, new_values = ([_rank_rows(row) for row in rows] for rows in (base_rows, new_rows))
    if not all(base_values + new_values):
        return PairResult("no-timings", decided_by, note=_join(note, "no per-step timings"), **counts)
    if decided_by == PER_RANK and len({len(values) for values in base_values + new_values}) > 1:
        decided_by = WHOLE_JOB  # a rank without timings: judge the job
    if decided_by == WHOLE_JOB:
        base_values, new_values = ([[_job_values(row)] for row in rows] for rows in (base_rows, new_rows))
    # rank r against rank r: a rank that was already slow in BASE is no regression of NEW
    judged = [_judge_rank([values[rank] for values in base_values], [values[rank] for values in new_values],
                          seed, history) for rank in range(len(base_values[0]))]
    rank = int(np.argmax([spread.ratio for spread, _interval in judged]))
    spread, (low, high) = judged[rank]
    if decided_by == PER_RANK and len(new_values[0]) > 1:
        note = _join(note, f"rank {rank} (worst new/base ratio) decided")
    status, reason, source = _verdict(spread, low, high, threshold_percent, noise_floor_percent, history)
    result = PairResult(status, decided_by, spread.ratio, low, high, note, rank if decided_by == PER_RANK else -1,
                        reason, source, spread.low, spread.high, spread.percent, **counts)
    if decided_by == WHOLE_JOB:  # time per sample -> throughput: the ratio and interval ends invert
        result.ratio, result.low, result.high = 1.0 / spread.ratio, 1.0 / high, 1.0 / low
        result.between_low, result.between_high = 1.0 / spread.high, 1.0 / spread.low
    return result


def _judge_rank(base_files, new_files, seed, history):
    """(between-run Spread, (bootstrap low, high)) of one rank's time per sample; a list of arrays per side."""
    spread = between_runs([np.median(values) for values in base_files], [np.median(values) for values in new_files])
    # a trend's step: against the latest earlier run's steps; compare: the steps pooled over each side's files
    base, new = (base_files[-1], new_files[-1]) if history else (np.concatenate(base_files), np.concatenate(new_files))
    ratio, low, high = time_ratio_interval(base, new, seed=seed)
    if len(base_files) == 1 and len(new_files) == 1:
        spread.ratio = ratio  # one run per side: exactly the medians' ratio
    return spread, (low, high)


def _verdict(spread, low, high, threshold_percent, noise_floor_percent, history):
    """(status, reason, noise source) of a TIME ratio: regressed/improved only past all three tests."""
    slower = spread.ratio >= 1.0

    def beyond(ratio_limit_percent):
        limit = 1.0 + ratio_limit_percent / 100.0
        return spread.ratio > limit if slower else spread.ratio < 1.0 / limit

    past_threshold = beyond(threshold_percent)
    past_bootstrap = low > 1.0 if slower else high < 1.0
    if spread.measured:  # whose spread: '3+3 runs' (base+new files) or, for a trend, '6 earlier runs'
        runs = f"{spread.base_runs} earlier runs" if history else f"{spread.base_runs}+{spread.new_runs} runs"
        half = f"±{spread.percent:.1f}%" if spread.percent < 999.95 else "±>999%"  # the runs barely agree on anything
        source, noise = BETWEEN_RUNS, f"run-to-run noise of {runs}: {half}"
        past_noise = spread.low > 1.0 if slower else spread.high < 1.0
        within = f"within {noise}"
    else:
        source, noise = NOISE_FLOOR, f"the {noise_floor_percent:g}% noise floor"
        past_noise = beyond(noise_floor_percent)
        within = f"below {noise}"
    if past_threshold and past_bootstrap and past_noise:
        return ("regressed" if slower else "improved"), f"beyond {noise}", source
    if not past_noise:
        return "same", within, source
    if not past_threshold:
        return "same", f"within the {threshold_percent:g}% threshold", source
    return "same", "within the runs' own step noise (bootstrap interval includes 1)", source


def compare_runs(base_row, new_row, threshold_percent, include_invalid=False, seed=0,
                 noise_floor_percent=NOISE_FLOOR_PERCENT):
    """Judge one NEW run against one BASE run (judge_groups with one file per side: the noise floor applies)."""
    return judge_groups([base_row], [new_row], threshold_percent, noise_floor_percent, include_invalid, seed)


def _join(*parts):
    return "; ".join(part for part in parts if part)


def _world_size(row):
    try:
        return int(row.get("world_size") or 1)
    except (TypeError, ValueError):
        return 1


def _arrays(row):
    return getattr(row, "arrays", None) or {}


def compare_files(bases, news, threshold, seed=0, include_invalid=False, noise_floor_percent=NOISE_FLOOR_PERCENT):
    """A result dict per batch size: 'pair', or 'differences', or only on one side; bases, news: lists of Jobs."""
    # each side's files, with each batch size's first run in sweep order
    sides = {side: [(job, {run.point.batch_size: run for run in reversed(sorted_runs(job))}) for job in jobs]
             for side, jobs in (("base", bases), ("new", news))}
    results = []
    sizes = {size for files in sides.values() for _job, runs in files for size in runs}
    for batch_size in sorted(sizes, key=lambda size: (size is None, size)):
        here = {side: [(job, runs[batch_size]) for job, runs in files if batch_size in runs]
                for side, files in sides.items()}
        if not here["base"] or not here["new"]:
            results.append({"batch_size": batch_size,
                            "regression_verdict": "only in base" if here["base"] else "only in new"})
            continue
        rows = {side: [summary_row(job, run) for job, run in pairs] for side, pairs in here.items()}
        result = {"batch_size": batch_size}
        for side, side_rows in rows.items():
            result.update({f"{side}_files": len(side_rows),
                           f"{side}_valid": all(bool(row.get("valid", True)) for row in side_rows),
                           f"{side}_throughput": _median(row["throughput"] for row in side_rows)})
        result["throughput_ratio"] = _ratio(result["new_throughput"], result["base_throughput"])
        differences = key_differences(*([configuration_key(job.attrs(), run.attrs()) for job, run in pairs]
                                        for pairs in here.values()), ignore=SCALING)
        if differences:
            result.update(regression_verdict="different-configuration", differences=differences)
            results.append(result)
            continue
        pair = judge_groups(rows["base"], rows["new"], 100.0 * threshold, noise_floor_percent, include_invalid, seed)
        result.update(pair=pair, regression_verdict=pair.status)
        base_latency, new_latency = (np.concatenate([run_latency(run) for _job, run in pairs])
                                     for pairs in here.values())
        for name, q in (("p50", 50), ("p99", 99)):
            enough = min(base_latency.size, new_latency.size) >= stats.minimum_count(q)  # the one percentile rule
            result[f"{name}_ratio"] = (_ratio(np.percentile(new_latency, q), np.percentile(base_latency, q))
                                       if enough else float("nan"))
        results.append(result)
    return results


def result_rows(results):
    """compare's results as flat rows for `compare --json`: one per batch size, the verdict and its numbers."""
    rows = []
    for result in results:
        row = {key: result.get(key) for key in ("batch_size", "regression_verdict", "base_files", "new_files",
                                                 "base_valid", "new_valid", "base_throughput", "new_throughput",
                                                 "throughput_ratio", "p50_ratio", "p99_ratio")}
        pair = result.get("pair")
        if pair is not None:
            row.update(decided_by=pair.decided_by, ratio=pair.ratio, ratio_ci95_low=pair.low,
                       ratio_ci95_high=pair.high, rank=pair.rank, reason=pair.reason,
                       decided_by_noise=pair.decided_by_noise, between_run_percent=pair.between_run_percent,
                       between_ci95_low=pair.between_low, between_ci95_high=pair.between_high, note=pair.note)
        row["differences"] = "; ".join(f"{key}: {base} vs {new}" for key, base, new in result.get("differences", ()))
        rows.append(row)
    return rows


def _median(values):
    numbers = [float(value) for value in values if finite_number(value)]
    return float(np.median(numbers)) if numbers else float("nan")


def _ratio(new, base):
    value = float(new) / float(base) if float(base) else float("nan")
    return value if finite_number(value) else float("nan")


def judge_trends(trends, by, threshold_percent, include_invalid=False, noise_floor_percent=NOISE_FLOOR_PERCENT):
    """Mark every step's row with its trend by compare's rule, against the latest HISTORY_RUNS earlier valid steps."""
    for trend in trends:
        earlier = []  # [run, its row or None until needed], oldest first
        for index, (label, run) in enumerate(trend.steps):
            run.row["trend_by"] = f"{by} {label}"
            row = None
            if index == 0:
                run.row.update(trend="first", trend_note="no earlier run to compare with")
            elif not earlier:
                run.row.update(trend="no-base", trend_note="no earlier valid run to compare with")
            else:
                for entry in earlier:
                    entry[1] = entry[1] if entry[1] is not None else _load_row(entry[0])
                row = _load_row(run)
                result = judge_groups([entry[1] for entry in earlier], [row], threshold_percent, noise_floor_percent,
                                      include_invalid=include_invalid, history=True)
                base = earlier[-1][0].row
                run.row.update(trend=result.status, trend_base=f"{base['file']}:{base['run']}",
                               trend_decided_by=result.decided_by, trend_ratio=result.ratio,
                               trend_ratio_ci95_low=result.low, trend_ratio_ci95_high=result.high,
                               trend_note=result.note or "", trend_reason=result.reason,
                               trend_decided_by_noise=result.decided_by_noise, trend_earlier_runs=result.base_runs,
                               trend_between_run_percent=result.between_run_percent,
                               trend_between_ci95_low=result.between_low, trend_between_ci95_high=result.between_high)
            if run.row["valid"] or include_invalid:
                earlier = (earlier + [[run, row]])[-HISTORY_RUNS:]
    return trends


def _load_row(run):
    """The row judge_groups reads: the table's row (validity, world size, samples per step) and step_seconds alone."""
    row = RunRow(run.row)
    row.arrays = {"step_seconds": read_step_seconds(run.row["file"], run.row["run"])}
    return row
