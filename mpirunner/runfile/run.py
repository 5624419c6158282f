"""The typed model of a results file: a Job (the file's root and /ranks) and its Runs (one per run group); names.py
maps a Run to its run group's flat attributes and back. numpy only: no h5py, torch or mpi4py here.
"""
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Dict, List, Mapping, Optional, Tuple

from mpirunner.runfile import names
from mpirunner.runfile.parts import (  # noqa: F401 (RunPoint: imported from here too)
    Accuracy, AttrValue, Compute, DeviceReport, InputPath, RunArrays, RunPoint, Scalar, ScenarioSummary, Summary,
    Verdict, as_tuple, make)


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

    def attrs(self):
        """The run group's attributes exactly as stored (names.py)."""
        return names.run_attrs(self)

    @classmethod
    def from_attrs(cls, name, attrs, arrays=None):
        """The Run of a run group's attributes (plain Python, names.plain) and its datasets (RunArrays or dict)."""
        nested, device, extra, twins = names.split_attrs(attrs)
        inputs, verdict = nested.get("input") or {}, nested.get("verdict", {})
        point = {"batch_size": 0, **nested.get("point", {}),
                 **({"input_pool_limit_bytes": inputs["pool_limit_bytes"]} if "pool_limit_bytes" in inputs else {})}
        verdict = {"valid": bool(verdict.get("valid", True)), "stored": bool(verdict),
                   "reasons": tuple(str(reason) for reason in as_tuple(verdict.get("reasons", ())))}
        return make(cls, {**nested, "name": name, "point": point, "verdict": verdict, "device": device, "extra": extra,
                          "twins": twins, "arrays": arrays if isinstance(arrays, RunArrays) else RunArrays(arrays)})

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
                  ranks=[RankRow.of(row, index) for index, row in enumerate(rank_rows)]).with_runs(runs)
        for key, value in values.items():
            if key == "config":
                job.config_text = value
            elif key.endswith("_version"):
                job.versions[key[:-len("_version")]] = value
            elif key.startswith("resumed_"):
                job.resumed[key[len("resumed_"):]] = as_tuple(value)
            elif key == "hosts":
                job.hosts = as_tuple(value)
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
        return replace(self, runs=sorted(runs, key=attrgetter("name")))
