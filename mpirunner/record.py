"""The typed record of one measured run (one batch size), built once on rank 0 from what every rank
gathered; results.py alone flattens it into the run group's attributes and datasets."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from mpirunner.checks import Check, Validity


@dataclass(frozen=True)
class RunPoint:
    """What was asked for: one point of the sweep, as the run group's attributes name it."""

    batch_size: int
    device_iterations: int
    local_replicas: int
    model: str
    data: str
    precision: str
    dtype: str
    image_size: int
    iterations_requested: int
    warmup: int
    input_pool_limit_bytes: int

    @classmethod
    def of(cls, config, local_replicas, image_size, batch_size, dtype):
        return cls(batch_size=batch_size, device_iterations=config.device_iterations, local_replicas=local_replicas,
                   model=config.model, data=config.data, precision=config.precision, dtype=dtype,
                   image_size=image_size, iterations_requested=config.iterations, warmup=config.warmup_iterations,
                   input_pool_limit_bytes=config.input_pool_mib << 20)

    @property
    def micro_batches_per_step(self):
        return self.device_iterations * self.local_replicas

    @property
    def samples_per_step(self):
        return self.batch_size * self.micro_batches_per_step


@dataclass
class InputPath:
    """Where the steps' inputs came from and what they cost: per-rank shares and the ready-made pool."""

    host_gap: np.ndarray      # [ranks] share of the window between steps
    device_busy: np.ndarray   # [ranks] share of the window in batch latency (NaN: not device time)
    pool_steps: int
    pool_bytes: int           # the largest rank's pool


@dataclass
class ScenarioRecord:
    """A single-stream or server run's queries (every rank's, one entry per query) and their summary
    (scenarios.summarize_queries, with intervals); stored as the run group's `queries/` datasets."""

    attrs: dict
    queries: Dict[str, np.ndarray]


@dataclass
class RunRecord:
    """One run as rank 0 holds it. timings: gathered [ranks, ...] arrays (step_seconds, step_start,
    batch_latency) and compile_seconds [ranks]; summary: stats.summarize; device: the backend's run
    report (attrs from rank 0, per_rank values gathered from every rank); compute: FLOP attributes."""

    name: str
    point: RunPoint
    timings: Dict[str, np.ndarray]
    measured_steps: int
    windows: int               # --until-stable windows measured (0 without it)
    windows_kept: int
    barrier_wait_seconds: np.ndarray
    summary: dict
    histogram_counts: np.ndarray
    histogram_edges: np.ndarray
    input_path: InputPath
    checks: List[Check]
    validity: Validity
    device_attrs: dict = field(default_factory=dict)
    device_per_rank: Dict[str, list] = field(default_factory=dict)
    compute: dict = field(default_factory=dict)
    scenario: Optional[ScenarioRecord] = None


def rank_values_row(host, barrier_wait_seconds, source, report):
    """This rank's entry of build_run_record's rank_values: its host, its barrier wait, its input pool
    (source: a data.py input source) and its backend's per-rank values (report: backend.run_report)."""
    return {"host": host, "barrier_wait_seconds": barrier_wait_seconds, "pool_steps": len(source.pool),
            "pool_bytes": source.pool_bytes, **report.per_rank}


def reference_throughput_spread(step_seconds, samples_per_step):
    """min, max and std of the reference harness's per-step throughputs (all instances' samples over the slowest
    instance's step time; graphcore/examples 32fc7bd inference/run_benchmark.py, benchmark()), whose mean is
    stats' throughput_reference; over mpirunner's timed steps (the reference drops its first two instead)."""
    seconds = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    done = np.count_nonzero(~np.isnan(seconds), axis=0)
    if not np.any(done):
        return {}
    per_step = samples_per_step * done[done > 0] / np.nanmax(seconds[:, done > 0], axis=0)
    return {"throughput_reference_min": float(per_step.min()), "throughput_reference_max": float(per_step.max()),
            "throughput_reference_std": float(per_step.std())}


def build_run_record(name, point, rules, gathered, *, measured_steps, windows, windows_kept, rank_values, checks,
                     device_attrs, batch_latency_is_device_time, flops_per_sample, roofs=None, scenario=None,
                     scenario_checks=None):
    """Everything rank 0 derives from the gathered timings, once: summary, histogram, input shares, validity.

    rank_values: one dict per rank with host, barrier_wait_seconds, pool_steps, pool_bytes and the
    backend's per-rank values (every other key). roofs: roofline.Roofs (--measure-peak) or None.
    scenario: a ScenarioRecord (single-stream, server); its throughput* attrs replace the step-based
    ones. scenario_checks (server): judged instead of the step-time and input-path rules, since a
    server's steps follow its arrivals (mixed batch sizes, an idle device between them).
    """
    from mpirunner.checks import decide_validity
    from mpirunner.flops import utilization_attrs
    from mpirunner.roofline import broken_roof, roof_attrs
    from mpirunner.stats import input_shares, log_histogram, per_rank_throughput, summarize

    own = {"host", "barrier_wait_seconds", "pool_steps", "pool_bytes"}
    hosts = [row["host"] for row in rank_values]
    waits = np.asarray([row["barrier_wait_seconds"] for row in rank_values], dtype=np.float64)
    starts, seconds, latencies = gathered["step_start"], gathered["step_seconds"], gathered["batch_latency"]
    summary = summarize(starts, seconds, latencies, point.samples_per_step,
                        barrier_skew_seconds=float(waits.max() - waits.min()))
    if scenario is not None and "throughput" in scenario.attrs:  # server: served samples, not steps x size
        summary = {key: value for key, value in summary.items() if not key.startswith("throughput_ci95")}
        summary.update(throughput=scenario.attrs["throughput"], throughput_sum=scenario.attrs["throughput_sum"])
    if "latency_reference_ms" in device_attrs:  # IPU offline runs: the reference harness's throughput spread
        device_attrs = {**device_attrs, **reference_throughput_spread(seconds, point.samples_per_step)}
    host_gap, device_busy = input_shares(starts, seconds, latencies)
    if not batch_latency_is_device_time:
        device_busy = np.full_like(device_busy, np.nan)
    judged_busy = device_busy if np.any(np.isfinite(device_busy)) else None
    checks = [check for check in checks if check is not None]
    validity = decide_validity(seconds, rules, checks, timed_seconds=summary["timed_seconds"], windows=windows,
                               hosts=hosts, host_gap=host_gap, device_busy=judged_busy, scenario_checks=scenario_checks)
    counts, edges = log_histogram(latencies[~np.isnan(latencies)])
    rank_throughputs = per_rank_throughput(starts, seconds, point.samples_per_step)
    compute = utilization_attrs(flops_per_sample, summary["throughput"], list(rank_throughputs), hosts,
                                roofs.peak_flops if roofs else None)
    if roofs:
        compute = broken_roof({**compute, **roof_attrs(flops_per_sample, compute["achieved_flops"], hosts, roofs,
                                                       point.batch_size)})
    return RunRecord(
        name=name, point=point, timings=gathered, measured_steps=measured_steps, windows=windows,
        windows_kept=windows_kept, barrier_wait_seconds=waits, summary=summary, histogram_counts=counts,
        histogram_edges=edges,
        input_path=InputPath(host_gap=host_gap, device_busy=device_busy, pool_steps=int(rank_values[0]["pool_steps"]),
                             pool_bytes=int(max(row["pool_bytes"] for row in rank_values))),
        checks=validity.checks, validity=validity, device_attrs=dict(device_attrs),
        device_per_rank={key: [row[key] for row in rank_values] for key in rank_values[0] if key not in own},
        compute=compute, scenario=scenario)
