"""A results file as plain dicts and lists, for tests and scripts: write_results and read_results over
write_job and read_job (hdf5.py)."""
from dataclasses import dataclass, field

import numpy as np

from mpirunner.runfile.hdf5 import read_job, write_job
from mpirunner.runfile.parts import TIMING_ARRAYS
from mpirunner.runfile.run import Job, Run


@dataclass
class RunResult:
    """A run group given as plain attributes and arrays (tests and scripts write files this way)."""

    name: str
    attrs: dict
    step_seconds: np.ndarray = None
    step_start: np.ndarray = None
    batch_latency: np.ndarray = None
    compile_seconds: np.ndarray = None
    warmup_seconds: np.ndarray = None
    extra_datasets: dict = field(default_factory=dict)

    def run(self):
        arrays = {name: getattr(self, name) for name in (*TIMING_ARRAYS, "compile_seconds")
                  if getattr(self, name) is not None}
        return Run.from_attrs(self.name, self.attrs, {**arrays, **self.extra_datasets})


def write_results(path, root_attrs, rank_rows, runs):
    """write_job of plain root attributes, /ranks rows and RunResults (or Runs)."""
    runs = [run.run() if isinstance(run, RunResult) else run for run in runs]
    return write_job(path, Job.from_attrs(root_attrs, rank_rows, runs))


def read_results(path):
    """The whole file as plain Python: {'attrs', 'ranks' (list of dicts), 'runs' {name: {'attrs', arrays...}}}."""
    job = read_job(path)
    return {"attrs": job.attrs(), "ranks": [row.as_dict() for row in job.ranks],
            "runs": {run.name: {"attrs": run.attrs(), **run.arrays.all()} for run in job.runs}}
