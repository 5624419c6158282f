"""Rank 0 builds a run's Run, once, from what every rank gathered: summary, histogram, input shares, validity.
A Run built here and the same Run read back from its file are equal (names.py maps both ways)."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from mpirunner.runfile.names import POINT, unit_twins
from mpirunner.runfile.parts import TIMING_ARRAYS, RunPoint
from mpirunner.runfile.run import Run


def _stack_rows(rows):
    """Rows of possibly different lengths -> 2-D float64 array, NaN-padded on the right."""
    width = max((row.size for row in rows), default=0)
    table = np.full((len(rows), width), np.nan)
    for index, row in enumerate(rows):
        table[index, :row.size] = row
    return table


def gather_timings(world, timings):
    """Gather this rank's Timings to rank 0 -> a dict of [ranks, ...] arrays there, else None. Each rank packs
    [compile_seconds, the TIMING_ARRAYS' lengths, the arrays] into one float64 row: one message per rank."""
    arrays = [np.asarray(getattr(timings, name), dtype=np.float64).ravel() for name in TIMING_ARRAYS]
    packed = np.concatenate([[timings.compile_seconds], [array.size for array in arrays], *arrays])
    rows = world.gather_rows(packed)
    if rows is None:
        return None
    count = len(TIMING_ARRAYS)
    pieces = [np.split(row[1 + count:], np.cumsum(row[1:1 + count].astype(np.int64))[:-1]) for row in rows]
    result = {name: _stack_rows([row[index] for row in pieces]) for index, name in enumerate(TIMING_ARRAYS)}
    result["compile_seconds"] = np.array([row[0] for row in rows])
    return result


def rank_values_row(host, barrier_wait_seconds, source, report):
    """This rank's entry of Gathered.rank_values (source: a data.py input source, report: backend.run_report)."""
    return {"host": host, "barrier_wait_seconds": barrier_wait_seconds, "pool_steps": len(source.pool),
            "pool_bytes": source.pool_bytes, **report.per_rank}


@dataclass
class Gathered:
    """What every rank measured, on rank 0: gather_timings' arrays, one rank_values_row per rank, the step counts."""

    timings: Dict[str, np.ndarray]
    rank_values: List[dict]
    measured_steps: int
    windows: int = 0        # --until-stable windows measured (0 without it)
    windows_kept: int = 0
    accuracy: Optional[dict] = None  # top-1/top-5 on labelled data (stats.accuracy_attrs): a measurement


@dataclass
class DeviceFacts:
    """What the device says about the run (roofs: roofline.Roofs with --measure-peak, else None)."""

    attrs: dict
    latency_is_device_time: bool
    flops_per_sample: int
    roofs: object = None


@dataclass
class Judging:
    """How the run is judged: checks.ValidityRules, the checks measured with it (the output check), and for a server
    the scenario's checks instead of the step-time and input-path rules (its steps follow its arrivals)."""

    rules: object
    checks: list = field(default_factory=list)
    scenario_checks: Optional[list] = None


@dataclass
class ScenarioRecord:
    """A single-stream or server run's queries (every rank's; the `queries/` datasets) and their summary attrs."""

    attrs: dict
    queries: Dict[str, np.ndarray]


def reference_throughput_spread(step_seconds, samples_per_step):
    """min, max and std of the reference harness's per-step throughputs (stats' throughput_reference is their mean),
    over mpirunner's timed steps (graphcore/examples 32fc7bd inference/run_benchmark.py drops its first two)."""
    seconds = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    done = np.count_nonzero(~np.isnan(seconds), axis=0)
    if not np.any(done):
        return {}
    per_step = samples_per_step * done[done > 0] / np.nanmax(seconds[:, done > 0], axis=0)
    return {"throughput_reference_min": float(per_step.min()), "throughput_reference_max": float(per_step.max()),
            "throughput_reference_std": float(per_step.std())}


def scenario_throughput(summary, scenario_attrs, samples_per_step):
    """A scenario run's throughput is its achieved rate in samples/s (docs/reports.md); the step-based reference
    harness figure does not apply, and a server's batches are not its steps, so their bootstrap interval goes too."""
    summary = {key: value for key, value in summary.items() if not key.startswith("throughput_reference")}
    server = scenario_attrs.get("scenario") == "server"
    if "throughput" in scenario_attrs:  # the server (serve.py) stores its rate itself
        rate = scenario_attrs["throughput"]
        rate_sum = scenario_attrs.get("throughput_sum", rate)
    else:
        achieved = scenario_attrs.get("achieved_qps")
        if not isinstance(achieved, (int, float)) or achieved != achieved:
            return summary
        rate = float(achieved) * (1 if server else samples_per_step)
        rate_sum = rate if server else summary.get("throughput_sum", rate)  # single-stream: ranks' own windows, summed
    if server:
        summary = {key: value for key, value in summary.items() if not key.startswith("throughput_ci95")}
    summary.update(throughput=rate, throughput_sum=rate_sum)
    return summary


def point_attrs(point):
    """What was asked for (the RunPoint), as every run group names it, measured or failed."""
    return {name: getattr(point, name) for name, _path in POINT}


def build_run(name, point: RunPoint, gathered: Gathered, device: DeviceFacts, judging: Judging,
              scenario: Optional[ScenarioRecord] = None):
    """The Run of one measured point (a scenario's throughput* attrs replace the step-based ones)."""
    from mpirunner.checks import decide_validity
    from mpirunner.flops import utilization_attrs
    from mpirunner.roofline import broken_roof, roof_attrs
    from mpirunner.stats import input_shares, log_histogram, per_rank_throughput, summarize

    rank_values, timings = gathered.rank_values, gathered.timings
    own = {"host", "barrier_wait_seconds", "pool_steps", "pool_bytes"}
    hosts = [row["host"] for row in rank_values]
    waits = np.asarray([row["barrier_wait_seconds"] for row in rank_values], dtype=np.float64)
    starts, seconds, latencies = timings["step_start"], timings["step_seconds"], timings["batch_latency"]
    summary = summarize(starts, seconds, latencies, point.samples_per_step,
                        barrier_skew_seconds=float(waits.max() - waits.min()))
    if scenario is not None:
        summary = scenario_throughput(summary, scenario.attrs, point.samples_per_step)
    device_attrs = dict(device.attrs)
    if "latency_reference_ms" in device_attrs:  # IPU offline runs: the reference harness's throughput spread
        device_attrs.update(reference_throughput_spread(seconds, point.samples_per_step))
    host_gap, device_busy = input_shares(starts, seconds, latencies)
    if not device.latency_is_device_time:
        device_busy = np.full_like(device_busy, np.nan)
    judged_busy = device_busy if np.any(np.isfinite(device_busy)) else None
    checks = [check for check in judging.checks if check is not None]
    validity = decide_validity(seconds, judging.rules, checks, timed_seconds=summary["timed_seconds"],
                               windows=gathered.windows, hosts=hosts, host_gap=host_gap, device_busy=judged_busy,
                               scenario_checks=judging.scenario_checks, warmup_seconds=timings["warmup_seconds"])
    counts, edges = log_histogram(latencies[~np.isnan(latencies)])
    rank_throughputs = per_rank_throughput(starts, seconds, point.samples_per_step)
    compute = utilization_attrs(device.flops_per_sample, summary["throughput"], list(rank_throughputs), hosts,
                                device.roofs.peak_flops if device.roofs else None)
    if device.roofs:
        compute = broken_roof({**compute, **roof_attrs(device.flops_per_sample, compute["achieved_flops"], hosts,
                                                       device.roofs, point.batch_size)})
    attrs = {
        **point_attrs(point),
        "input_pool_steps": int(rank_values[0]["pool_steps"]),
        "input_pool_bytes": int(max(row["pool_bytes"] for row in rank_values)),
        "input_pool_limit_bytes": point.input_pool_limit_bytes,
        "host_gap_max": float(np.nanmax(host_gap)),
        "device_busy_min": float(np.nanmin(device_busy)) if np.any(np.isfinite(device_busy)) else float("nan"),
        "iterations": int(seconds.shape[1]),
        "measured_steps": gathered.measured_steps, "windows": gathered.windows, "windows_kept": gathered.windows_kept,
        "compile_seconds_max": float(np.max(timings["compile_seconds"])),
        "status": "measured", "failure_reason": "",
        "valid": validity.valid, "validity_reason": list(validity.reasons),
        **summary, **device_attrs,
    }
    for later in (gathered.accuracy or {}, *(check.attrs for check in validity.checks), compute,
                  scenario.attrs if scenario is not None else {}):
        attrs.update(later)  # in this order: a later source's value wins
    attrs.update(unit_twins(attrs))  # latency_p50 -> latency_p50_ms, step_cv -> step_cv_percent (names.py)
    arrays = {**{key: timings[key] for key in (*TIMING_ARRAYS, "compile_seconds")},
              "histogram/counts": counts, "histogram/edges": edges, "barrier_wait_seconds": waits,
              "host_gap": np.asarray(host_gap, dtype=np.float64),
              "device_busy": np.asarray(device_busy, dtype=np.float64),
              **{key: np.asarray([row[key] for row in rank_values]) for key in rank_values[0] if key not in own},
              **({f"queries/{key}": np.asarray(values) for key, values in scenario.queries.items()}
                 if scenario is not None else {})}
    return Run.from_attrs(name, attrs, arrays)


def failed_run(name, point, reason):
    """The run group of a point that could not be measured (out of memory): what was asked, why it failed."""
    from mpirunner.checks import failed_run_validity

    verdict = failed_run_validity(reason)
    return Run.from_attrs(name, {**point_attrs(point), "status": "failed", "failure_reason": reason,
                                 "valid": verdict.valid, "validity_reason": list(verdict.reasons)})
