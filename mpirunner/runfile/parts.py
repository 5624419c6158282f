"""The typed nested parts of a Run (run.py) and the run group's datasets (read on first access).
A field that is None was not stored (an older file, a failed run, a run without that part). numpy only.
"""
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Callable, Dict, Optional, Tuple, Union, get_args, get_origin

import numpy as np

Scalar = Union[bool, int, float, str]
AttrValue = Union[Scalar, Tuple[Scalar, ...], np.ndarray]


def as_tuple(value):
    """A stored list attribute as a tuple ('' is how an empty list is stored)."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return tuple(value)


def make(cls, values):
    """cls from a nested {field: value} dict of names.split_attrs (None when the part stored nothing)."""
    if values is None:
        return None
    made = {}
    for item in fields(cls):
        if item.name in values:
            kind = get_args(item.type)[0] if get_origin(item.type) is Union else item.type  # X of Optional[X]
            value = values[item.name]
            made[item.name] = (make(kind, value) if is_dataclass(kind) else
                               as_tuple(value) if get_origin(kind) is tuple else value)
    return cls(**made)


@dataclass(frozen=True)
class RunPoint:
    """What was asked for: one point of the sweep, as the run group's attributes name it."""

    batch_size: int
    device_iterations: Optional[int] = None
    local_replicas: Optional[int] = None
    samples_per_step: Optional[int] = None
    model: Optional[str] = None
    data: Optional[str] = None
    precision: Optional[str] = None
    dtype: Optional[str] = None
    image_size: Optional[int] = None
    iterations_requested: Optional[int] = None
    warmup: Optional[int] = None
    input_pool_limit_bytes: Optional[int] = None  # stored with the input path's attributes (measured runs)

    @classmethod
    def of(cls, config, local_replicas, image_size, batch_size, dtype):
        return cls(batch_size=batch_size, device_iterations=config.device_iterations, local_replicas=local_replicas,
                   samples_per_step=batch_size * config.device_iterations * local_replicas,
                   model=config.model, data=config.data, precision=config.precision, dtype=dtype,
                   image_size=image_size, iterations_requested=config.iterations, warmup=config.warmup_iterations,
                   input_pool_limit_bytes=config.input_pool_mib << 20)

    @property
    def micro_batches_per_step(self):
        return self.device_iterations * self.local_replicas


@dataclass(frozen=True)
class Verdict:
    """The stored validity verdict: valid (an older file without one reads as valid) and its reasons."""

    valid: bool = True
    reasons: Tuple[str, ...] = ()
    stored: bool = field(default=True, compare=False)  # False: the file has neither attribute (written as it was)


@dataclass(frozen=True)
class Interval:
    """A stored 95% interval: its ends and the half-width of `x ± h` (older files may hold the half-width alone)."""

    low: Optional[float] = None
    high: Optional[float] = None
    half_width: Optional[float] = None


@dataclass(frozen=True)
class LatencyStats:
    """Batch latency over every rank, in ms (cv a fraction; count: how many latencies)."""

    mean: Optional[float] = None
    min: Optional[float] = None
    p50: Optional[float] = None
    p90: Optional[float] = None
    p95: Optional[float] = None
    p99: Optional[float] = None
    p99_9: Optional[float] = None
    max: Optional[float] = None
    std: Optional[float] = None
    cv: Optional[float] = None
    count: Optional[int] = None


@dataclass(frozen=True)
class Intervals:
    throughput: Optional[Interval] = None
    latency_p50: Optional[Interval] = None
    latency_p99: Optional[Interval] = None


@dataclass(frozen=True)
class Summary:
    """The measured numbers of a run: steps, throughput (samples/s), step-time cv (fractions), latency, intervals."""

    iterations: Optional[int] = None
    measured_steps: Optional[int] = None
    windows: Optional[int] = None
    windows_kept: Optional[int] = None
    compile_seconds_max: Optional[float] = None
    throughput: Optional[float] = None
    throughput_sum: Optional[float] = None
    throughput_reference: Optional[float] = None
    step_cv: Optional[float] = None
    step_cv_rank_max: Optional[float] = None
    timed_seconds: Optional[float] = None
    barrier_skew_seconds: Optional[float] = None
    ci_method: Optional[str] = None
    ci_unavailable: Optional[str] = None
    latency: LatencyStats = field(default_factory=LatencyStats)
    intervals: Intervals = field(default_factory=Intervals)


@dataclass(frozen=True)
class InputPath:
    """Where the steps' inputs came from: the worst shares of the window (fractions) and the ready-made pool."""

    host_gap_max: Optional[float] = None
    device_busy_min: Optional[float] = None  # NaN: batch latency is not device time
    pool_steps: Optional[int] = None
    pool_bytes: Optional[int] = None   # the largest rank's pool
    pool_limit_bytes: Optional[int] = None


@dataclass(frozen=True)
class Compute:
    """FLOPs per sample, achieved FLOP/s and, with --measure-peak, the roofs and utilisation (fractions)."""

    flops_per_sample: Optional[int] = None
    achieved_flops: Optional[float] = None
    peak_flops: Optional[float] = None
    peak_flops_median: Optional[float] = None
    utilization: Optional[float] = None
    utilization_hosts: Optional[Tuple[str, ...]] = None
    utilization_per_host: Optional[Tuple[float, ...]] = None
    peak_memory_bandwidth: Optional[float] = None
    bytes_per_sample_estimate: Optional[float] = None
    arithmetic_intensity_estimate: Optional[float] = None
    binding_roof: Optional[str] = None
    roof_flops: Optional[float] = None
    roof_utilization: Optional[float] = None
    roof_broken: Optional[bool] = None
    achieved_over_roof: Optional[float] = None


@dataclass(frozen=True)
class ScenarioIntervals:
    query_latency_p50: Optional[Interval] = None
    query_latency_p99: Optional[Interval] = None


@dataclass(frozen=True)
class ScenarioSummary:
    """A single-stream or server run's queries (docs/scenarios.md): counts, query latency (ms), the load."""

    scenario: Optional[str] = None
    queries: Optional[int] = None
    queries_served: Optional[int] = None
    queries_unserved: Optional[int] = None
    query_latency_mean: Optional[float] = None
    query_latency_p50: Optional[float] = None
    query_latency_p90: Optional[float] = None
    query_latency_p99: Optional[float] = None
    query_wait_mean: Optional[float] = None
    padding_share: Optional[float] = None
    duration_seconds: Optional[float] = None
    target_qps: Optional[float] = None
    offered_qps: Optional[float] = None
    achieved_qps: Optional[float] = None
    keep_up: Optional[float] = None
    latency_bound: Optional[float] = None
    bound_percentile: Optional[float] = None
    bound_latency: Optional[float] = None
    bound_latency_upper: Optional[float] = None
    queries_over_bound: Optional[int] = None
    share_over_bound: Optional[float] = None
    drain_seconds: Optional[float] = None
    max_batch_wait_ms: Optional[float] = None
    prepared_batch_sizes: Optional[Tuple[int, ...]] = None
    peak_search: Optional[bool] = None
    peak_point: Optional[int] = None
    peak_qps: Optional[float] = None
    peak_qps_high: Optional[float] = None
    completed_while_issuing: Optional[int] = None  # server: queries done within the schedule's duration
    in_flight_allowance: Optional[int] = None  # server: the queries keep-up allows to be still in flight then
    intervals: ScenarioIntervals = field(default_factory=ScenarioIntervals)


@dataclass(frozen=True)
class Accuracy:
    """Top-1 / top-5 accuracy on labelled real data (a measurement; fractions)."""

    samples: Optional[int] = None
    top1_correct: Optional[int] = None
    top5_correct: Optional[int] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    images: Optional[int] = None  # decoded images, all ranks together
    classes: Optional[int] = None
    class_map: Optional[str] = None
    model_classes: Optional[int] = None
    weights: Optional[str] = None


DeviceReport = Dict[str, AttrValue]  # a backend's run report, name -> value (backends' RunReport.attrs)

TIMING_ARRAYS = ("step_seconds", "step_start", "batch_latency", "warmup_seconds")


class RunArrays:
    """A run group's datasets by name ('histogram/counts', 'queries/start', per-rank values, ...), read from the
    file on first access (`loader(names)` -> {name: array}); a run built in memory holds them already."""

    def __init__(self, arrays=None, names_=None, loader: Optional[Callable] = None):
        self._arrays = dict(arrays or {})
        self._names = tuple(names_) if names_ is not None else tuple(self._arrays)
        self._loader = loader

    def __contains__(self, name):
        return name in self._names

    def get(self, name, default=None):
        """The dataset `name`, or `default` when the run has none (a failed run has no arrays)."""
        return self.read(name).get(name, default)

    def read(self, *wanted):
        """{name: array} of the wanted datasets the run has, reading only those (one open of the file)."""
        missing = tuple(name for name in wanted if name in self._names and name not in self._arrays)
        if missing and self._loader is not None:
            self._arrays.update(self._loader(missing))
        return {name: self._arrays[name] for name in wanted if name in self._names}

    def all(self):
        """Every dataset, read at once: what --resume writes back byte for byte."""
        return self.read(*self._names)

    @property
    def step_seconds(self):
        return self.get("step_seconds")

    @property
    def batch_latency(self):
        return self.get("batch_latency")

    @property
    def queries(self):
        """The scenario's per-query datasets {name: array} ({} for an offline run)."""
        wanted = [name for name in self._names if name.startswith("queries/")]
        return {name[len("queries/"):]: value for name, value in self.read(*wanted).items()}
