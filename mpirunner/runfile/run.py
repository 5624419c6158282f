"""The typed model of a results file: a Job (the file's root and /ranks) and its Runs (one per run group).

A Run is the only shape of a run from the moment rank 0 builds it (build.py) to every reader: the block
the runner prints, --strict, --resume, and mpirunner-report. Its nested parts are typed; a field that is
None was not stored (an older file, a failed run, a run without that part). names.py maps a Run to the
run group's flat attributes and back (`run.attrs()`, `Run.from_attrs`); the big arrays load lazily from
the file on first access (RunArrays). numpy only: no h5py, torch or mpi4py here.
"""
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from mpirunner.runfile import names

Scalar = Union[bool, int, float, str]
AttrValue = Union[Scalar, Tuple[Scalar, ...], np.ndarray]


def _tuple(value):
    """A stored list attribute as a tuple ('' is how an empty list is stored)."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return tuple(value)


def _make(cls, values):
    """cls from a {field: value} dict of names.split_attrs (None when the part stored nothing)."""
    if values is None:
        return None
    known = {item.name for item in fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in known})


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

    @classmethod
    def of(cls, values):
        values = dict(values)
        latency = _make(LatencyStats, values.pop("latency", {}))
        spans = values.pop("intervals", {})
        intervals = Intervals(**{key: _make(Interval, value) for key, value in spans.items()})
        return cls(latency=latency, intervals=intervals, **values)


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
    share_over_bound: Optional[float] = None
    drain_seconds: Optional[float] = None
    max_batch_wait_ms: Optional[float] = None
    prepared_batch_sizes: Optional[Tuple[int, ...]] = None
    peak_search: Optional[bool] = None
    peak_point: Optional[int] = None
    peak_qps: Optional[float] = None
    intervals: ScenarioIntervals = field(default_factory=ScenarioIntervals)

    @classmethod
    def of(cls, values):
        values = dict(values)
        spans = values.pop("intervals", {})
        if "prepared_batch_sizes" in values:
            values["prepared_batch_sizes"] = _tuple(values["prepared_batch_sizes"])
        return cls(intervals=ScenarioIntervals(**{key: _make(Interval, value) for key, value in spans.items()}),
                   **values)


@dataclass(frozen=True)
class Accuracy:
    """Top-1 / top-5 accuracy on labelled real data (a measurement; fractions)."""

    samples: Optional[int] = None
    top1_correct: Optional[int] = None
    top5_correct: Optional[int] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    classes: Optional[int] = None
    class_map: Optional[str] = None
    model_classes: Optional[int] = None
    weights: Optional[str] = None


DeviceReport = Dict[str, AttrValue]  # a backend's run report, name -> value (backends' RunReport.attrs)

TIMING_ARRAYS = ("step_seconds", "step_start", "batch_latency")


class RunArrays:
    """A run group's datasets by name ('histogram/counts', 'queries/start', per-rank values, ...), read from the
    file on first access (`loader(names)` -> {name: array}); a run built in memory holds them already."""

    def __init__(self, arrays=None, names_=None, loader: Optional[Callable] = None):
        self._arrays = dict(arrays or {})
        self._names = tuple(names_) if names_ is not None else tuple(self._arrays)
        self._loader = loader

    def names(self):
        return self._names

    def __contains__(self, name):
        return name in self._names

    def get(self, name, default=None):
        """The dataset `name`, or `default` when the run has none (a failed run has no arrays)."""
        if name not in self._names:
            return default
        if name not in self._arrays:
            self._load((name,))
        return self._arrays[name]

    def read(self, *wanted):
        """{name: array} of the wanted datasets the run has, reading only those (one open of the file)."""
        self._load(tuple(name for name in wanted if name in self._names))
        return {name: self._arrays[name] for name in wanted if name in self._names}

    def all(self):
        """Every dataset, read at once: what --resume writes back byte for byte."""
        self._load(self._names)
        return {name: self._arrays[name] for name in self._names}

    def _load(self, wanted):
        missing = [name for name in wanted if name not in self._arrays]
        if missing and self._loader is not None:
            self._arrays.update(self._loader(tuple(missing)))

    @property
    def step_seconds(self):
        return self.get("step_seconds")

    @property
    def step_start(self):
        return self.get("step_start")

    @property
    def batch_latency(self):
        return self.get("batch_latency")

    @property
    def compile_seconds(self):
        return self.get("compile_seconds")

    @property
    def histogram(self):
        """(counts, edges in s) of the stored log histogram, or None."""
        if "histogram/counts" not in self._names:
            return None
        found = self.read("histogram/counts", "histogram/edges")
        return found["histogram/counts"], found["histogram/edges"]

    @property
    def queries(self):
        """The scenario's per-query datasets {name: array} ({} for an offline run)."""
        wanted = [name for name in self._names if name.startswith("queries/")]
        return {name[len("queries/"):]: value for name, value in self.read(*wanted).items()}


@dataclass
class Run:
    """One run group. status 'measured' or 'failed' (a failed run has its point, verdict and reason only)."""

    name: str
    point: RunPoint
    status: Optional[str] = None
    failure_reason: Optional[str] = None
    verdict: Verdict = field(default_factory=Verdict)
    summary: Optional[Summary] = None
    input: Optional[InputPath] = None
    compute: Optional[Compute] = None
    scenario: Optional[ScenarioSummary] = None
    accuracy: Optional[Accuracy] = None
    device: DeviceReport = field(default_factory=dict)
    extra: Dict[str, AttrValue] = field(default_factory=dict)  # every other stored attribute, verbatim
    arrays: RunArrays = field(default_factory=RunArrays, repr=False)
    twins: bool = True  # its unit-named twins are stored (files written before them have none)

    @property
    def failed(self):
        return self.status == "failed"

    @property
    def batch_size(self):
        return self.point.batch_size

    def attrs(self):
        """The run group's attributes exactly as stored (names.py)."""
        return names.run_attrs(self)

    def get(self, name, default=None):
        """One stored attribute by its name (what a table column or a CSV cell names)."""
        return self.attrs().get(name, default)

    @classmethod
    def from_attrs(cls, name, attrs, arrays=None):
        """The Run of a run group's attributes (plain Python, names.plain) and its datasets (RunArrays or dict)."""
        nested, device, extra, twins = names.split_attrs(attrs)
        point = dict(nested.get("point", {}))
        point.setdefault("batch_size", 0)
        inputs = nested.get("input")
        if inputs and "pool_limit_bytes" in inputs:
            point["input_pool_limit_bytes"] = inputs["pool_limit_bytes"]
        verdict = nested.get("verdict", {})
        compute = nested.get("compute")
        if compute:
            compute = {**compute, **{key: _tuple(compute[key]) for key in ("utilization_hosts", "utilization_per_host")
                                     if key in compute}}
        if not isinstance(arrays, RunArrays):
            arrays = RunArrays(arrays)
        return cls(name=name, point=RunPoint(**point), status=nested.get("status"),
                   failure_reason=nested.get("failure_reason"),
                   verdict=Verdict(valid=bool(verdict.get("valid", True)),
                                   reasons=tuple(str(reason) for reason in _tuple(verdict.get("reasons", ())))),
                   summary=Summary.of(nested["summary"]) if "summary" in nested else None,
                   input=_make(InputPath, inputs), compute=_make(Compute, compute),
                   scenario=ScenarioSummary.of(nested["scenario"]) if "scenario" in nested else None,
                   accuracy=_make(Accuracy, nested.get("accuracy")), device=device, extra=extra,
                   arrays=arrays, twins=twins)

    def amended(self, attrs):
        """This run with `attrs` set (a peak search's points, once the peak is known), its arrays kept."""
        return Run.from_attrs(self.name, {**self.attrs(), **attrs}, self.arrays)


@dataclass
class RankRow:
    """One row of /ranks: where a rank ran. `extra`: every other column (placement, backend, roofs)."""

    rank: int
    host: str = ""
    local_rank: Optional[int] = None
    numa_node: Optional[int] = None
    cpus: Optional[str] = None
    device: Optional[str] = None
    threads: Optional[int] = None
    extra: Dict[str, Scalar] = field(default_factory=dict)
    columns: Tuple[str, ...] = ()  # its keys in stored order

    @classmethod
    def of(cls, row: Mapping, index=0):
        typed = {key: row[key] for key in names.RANK_FIELDS if key in row}
        typed.setdefault("rank", index)
        return cls(**typed, extra={key: value for key, value in row.items() if key not in names.RANK_FIELDS},
                   columns=tuple(row))

    def as_dict(self):
        """The row as /ranks stores it (a rank gathered without a column has it filled in on writing)."""
        values = {**{key: getattr(self, key) for key in names.RANK_FIELDS}, **self.extra}
        return {key: values[key] for key in (self.columns or values) if key in values}

    def get(self, name, default=None):
        return self.as_dict().get(name, default)


@dataclass
class Job:
    """A results file: its root attributes (typed where known, `extra` verbatim), /ranks and runs (sorted by name)."""

    path: Optional[str] = None
    schema: str = ""
    created: str = ""
    argv: str = ""
    config_text: str = ""
    config_name: str = ""
    config_file_text: str = ""
    world_size: Optional[int] = None
    hosts: Tuple[str, ...] = ()
    backend: str = ""
    device_name: str = ""
    dtype: str = ""
    image_size: Optional[int] = None
    launcher: str = ""
    slurm_job_id: str = ""
    git_commit: str = ""
    versions: Dict[str, str] = field(default_factory=dict)  # mpirunner, torch, mpi, poptorch
    gpu_total_memory_bytes: Optional[int] = None
    resumed: Dict[str, Tuple[str, ...]] = field(default_factory=dict)  # argv, created, hosts: one per --resume
    extra: Dict[str, AttrValue] = field(default_factory=dict)
    root_names: Tuple[str, ...] = ()  # the root attributes stored, in order
    ranks: List[RankRow] = field(default_factory=list)
    runs: List[Run] = field(default_factory=list)

    @property
    def settings(self):
        """The settings the runner stored (root `config`, YAML text) as a dict; {} when absent or unreadable."""
        return names.parse_settings(self.config_text)

    def run(self, name):
        return next(run for run in self.runs if run.name == name)

    @property
    def measured_runs(self):
        return [run for run in self.runs if not run.failed]

    @property
    def failed_runs(self):
        return [run for run in self.runs if run.failed]

    @classmethod
    def from_attrs(cls, attrs, rank_rows=(), runs=(), path=None):
        """The Job of root attributes (as built or as read: a dict `config` becomes its YAML text) and /ranks."""
        values = {key: names.stored_text(value) for key, value in attrs.items()}
        job = cls(path=None if path is None else str(path), root_names=tuple(values),
                  ranks=[RankRow.of(row, index) for index, row in enumerate(rank_rows)], runs=sorted(runs, key=_name))
        for key, value in values.items():
            if key == "config":
                job.config_text = value
            elif key.endswith("_version"):
                job.versions[key[:-len("_version")]] = value
            elif key.startswith("resumed_"):
                job.resumed[key[len("resumed_"):]] = _tuple(value)
            elif key == "hosts":
                job.hosts = _tuple(value)
            elif key in names.ROOT_FIELDS:
                setattr(job, key, value)
            else:
                job.extra[key] = value
        return job

    def attrs(self):
        """The root attributes exactly as stored."""
        values = {"config": self.config_text, "hosts": list(self.hosts), **self.extra,
                  **{f"{key}_version": value for key, value in self.versions.items()},
                  **{f"resumed_{key}": list(value) for key, value in self.resumed.items()},
                  **{key: getattr(self, key) for key in names.ROOT_FIELDS}}
        order = self.root_names or tuple(values)
        return {key: values[key] for key in order if key in values}

    def with_runs(self, runs):
        return replace(self, runs=sorted(runs, key=_name))


def _name(run):
    return run.name
