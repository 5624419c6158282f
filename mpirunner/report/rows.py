"""Every read of a result file in mpirunner-report, and the rows its tables, CSV and JSON are made of.

Files are read through mpirunner.runfile.hdf5 only (the one module that imports h5py). One file
(`mpirunner-report FILE`, compare): the typed Job, each run's numbers recomputed from its raw per-step
arrays through mpirunner.stats, so the report is also a check of the summary the runner stored. Many files
(`summary`): the root and run-group attributes alone (and, for the page, each run's stored histogram; for
trends, step_seconds alone), so hundreds of files summarise in seconds; a file that cannot be read is
skipped with its reason. Never torch or mpi4py.
"""
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpirunner import stats
from mpirunner.errors import UsageError
from mpirunner.report.variation import ROOT_ATTRS as KEY_ROOT_ATTRS, RUN_ATTRS as KEY_RUN_ATTRS, configuration_key
from mpirunner.roofline import broken_roof
from mpirunner.runfile import hdf5, shown
from mpirunner.runfile.block import finite_number, text_value  # noqa: F401 (the one test of a number to show)
from mpirunner.runfile.names import exported, unit_name, value_of
from mpirunner.runfile.run import Run

RESULT_SUFFIXES = (".h5", ".hdf5")
# The summary fields every CSV/JSON row of `mpirunner-report FILE` starts with, in this order; other attributes follow.
ROW_FIELDS = ("file", "run", "batch_size", "samples_per_step", "device_iterations", "model", "precision",
              "dtype", "backend", "device_name", "world_size", "iterations", "throughput", "throughput_sum",
              "latency_min", "latency_mean", "latency_p50", "latency_p90", "latency_p95", "latency_p99",
              "latency_p99.9", "latency_max", "latency_std", "latency_cv", "step_cv", "step_cv_rank_max",
              "compile_seconds_max", "valid", "validity_reason")
# (column in CSV/JSON, with its unit; key of the row) of `summary`: latencies in ms, throughput in samples/s,
# utilization in percent, as in the file's unit-named twins and `mpirunner-report FILE --csv`.
# latency_* is batch latency for every run; single-stream and server runs add their query columns (runfile/shown.py:
# achieved and offered QPS, query percentiles, the bound), empty for offline runs.
_UNIT_KEYS = ("throughput", "throughput_ci95_low", "throughput_ci95_high", "latency_p50", "latency_p50_ci95_low",
              "latency_p50_ci95_high", "latency_p99", "latency_p99_ci95_low", "latency_p99_ci95_high", "utilization",
              *shown.QUERY_COLUMNS)
COLUMNS = (("file", "file"), ("run", "run"), ("model", "model"), ("precision", "precision"), ("dtype", "dtype"),
           ("backend", "backend"), ("device_name", "device_name"), ("world_size", "world_size"),
           ("hosts", "hosts"), ("batch_size", "batch_size"), ("samples_per_step", "samples_per_step"),
           *((unit_name(key), key) for key in _UNIT_KEYS), ("valid", "valid"), ("validity_reason", "validity_reason"),
           ("created_utc", "created"), ("git_commit", "git_commit"))
RUN_KEYS = tuple(key for _column, key in COLUMNS
                 if key not in ("file", "run", "backend", "device_name", "world_size", "hosts", "created", "git_commit"))
ROOT_KEYS = ("backend", "device_name", "world_size", "hosts", "created", "git_commit", "dtype")
RUN_ATTRS = RUN_KEYS + ("dtype", "valid", "validity_reason", "latency_count", "query_latency_p50_ci95_low",
                        "query_latency_p50_ci95_high", "query_latency_p99_ci95_low", "query_latency_p99_ci95_high")


# ----------------------------------------------------------------------------------- one file

def load(path):
    """One results file as a Job (runfile/run.py), or UsageError with one clear line (missing, foreign, newer,
    damaged). Its failed runs (status 'failed': no arrays) are listed by the report, never summarised."""
    return hdf5.load_job(path)


def sorted_runs(job):
    """The measured runs of a Job ordered by batch size (then name), the order of a sweep."""
    return sorted(job.measured_runs, key=lambda run: (run.point.batch_size or 0, run.name))


def first_run(job):
    """The first measured run in sweep order (None when the file holds none): its model, precision, data."""
    runs = sorted_runs(job)
    return runs[0] if runs else None


class RunRow(dict):
    """A summary row (the CSV/JSON cells) that also carries its Run (`.run`) and the raw arrays compare reads.

    The arrays (step_seconds, step_start, batch_latency) are not cells: CSV/JSON never see them,
    while compare.judge_groups, which needs the per-step timings, reads them from the row.
    """

    arrays = None
    run = None


def finite_rows(array):
    """A [ranks, n] array (NaN-padded by the gather) -> one 1-D array of finite values per rank; [] when not stored."""
    if array is None:
        return []
    table = np.atleast_2d(np.asarray(array, dtype=np.float64))
    return [row[np.isfinite(row)] for row in table]


def _flat(array):
    rows = finite_rows(array)
    return np.concatenate(rows) if rows else np.zeros(0)


def run_latency(run):
    """All batch latencies of a run over every rank (s): batch_latency, else step_seconds per micro-batch."""
    latency = _flat(run.arrays.batch_latency)
    if latency.size == 0:
        latency = _flat(run.arrays.step_seconds) / max(int(run.point.device_iterations or 1), 1)
    return latency


def rank_throughputs(run):
    """Throughput of each rank (samples/s) over its own window, from step_start and step_seconds; a single-stream
    or server run: its achieved rate shared out by the queries each rank served (the batches are not its steps)."""
    queries = run.arrays.queries if shown.scenario_of(run) is not None else {}
    if "rank" in queries and "served" in queries and finite_number(run.summary.throughput):
        served = np.asarray(queries["rank"])[np.asarray(queries["served"], dtype=bool)]
        counts = np.bincount(served.astype(np.int64), minlength=len(finite_rows(run.arrays.step_seconds)))
        return run.summary.throughput * counts / max(int(counts.sum()), 1)
    samples, arrays = run.point.samples_per_step, run.arrays.read("step_seconds", "step_start")
    if len(arrays) < 2 or not samples:
        return np.zeros(0)
    out = []
    for start, seconds in zip(finite_rows(arrays["step_start"]), finite_rows(arrays["step_seconds"])):
        n = min(start.size, seconds.size)
        out.append(stats.per_rank_throughput(start[:n], seconds[:n], samples)[0] if n else float("nan"))
    return np.asarray(out, dtype=np.float64)


def summary_row(job, run):
    """One CSV/JSON row of a run (a Run or its name): its stored attributes, then the values recomputed from its
    arrays."""
    run = job.run(run) if isinstance(run, str) else run
    attrs, root = run.attrs(), job.attrs()
    arrays = run.arrays.read("step_seconds", "step_start", "batch_latency", "compile_seconds")
    row = {"file": job.path, "run": run.name}
    for key in ("backend", "device_name", "world_size"):
        row[key] = root.get(key, "")
    for key, value in broken_roof(dict(attrs)).items():  # an older file's utilisation above 1: a broken roof
        row[key] = _scalar(value)
    if "dtype" not in row:
        row["dtype"] = root.get("dtype", "")
    samples = run.point.samples_per_step
    if "step_seconds" in arrays and "step_start" in arrays and samples:
        starts, seconds = _flat(arrays["step_start"]), _flat(arrays["step_seconds"])
        if seconds.size and seconds.size == starts.size:
            skew = float(attrs.get("barrier_skew_seconds", 0.0) or 0.0)  # widens the window (stats.throughput)
            row["throughput"] = (stats.throughput(starts, seconds, samples, skew) if skew
                                 else stats.throughput(starts, seconds, samples))
            row["throughput_sum"] = float(np.nansum(rank_throughputs(run)))
            row["step_cv"] = stats.step_cv(seconds)
            row["step_cv_rank_max"] = stats.max_rank_cv(arrays["step_seconds"])
    latency = run_latency(run)
    if latency.size:
        row.update(stats.latency_summary(latency))
    shown_by_rule(row, row.get("latency_count"))
    query = shown.query_columns(run)
    if query:  # single-stream, server: the achieved rate as stored (the runner's line), the query columns
        row = {key: value for key, value in row.items() if not key.startswith("throughput_reference")}
        row.update(throughput=run.summary.throughput, throughput_sum=run.summary.throughput_sum, **query)
    if arrays.get("compile_seconds") is not None and np.size(arrays["compile_seconds"]):
        row["compile_seconds_max"] = float(np.nanmax(arrays["compile_seconds"]))
    row["validity_reason"] = text_value(attrs.get("validity_reason", ""))
    row["valid"] = bool(attrs.get("valid", True))
    ordered = RunRow({key: row.get(key, "") for key in ROW_FIELDS[:ROW_FIELDS.index("throughput_sum") + 1]})
    ordered.update({key: row[key] for key in shown.QUERY_COLUMNS if key in query})
    ordered.update({key: row.get(key, "") for key in ROW_FIELDS if key not in ordered})
    ordered.update({key: row[key] for key in sorted(row) if key not in ordered})
    ordered.arrays = {key: arrays.get(key) for key in ("step_seconds", "step_start", "batch_latency")}
    ordered.run = run
    return ordered


def shown_by_rule(row, count):
    """Blank (None) the batch latency percentiles of a row, and their intervals, that `count` latencies cannot give
    (stats.minimum_count: the one percentile rule); an unknown count leaves them."""
    for name, q in stats.PERCENTILES.items():
        if not shown.enough(count, q):
            keys = (f"latency_{name}", *(f"latency_{name}{end}" for end in ("_ci95", "_ci95_low", "_ci95_high")))
            row.update({key: None for key in keys if key in row or key == f"latency_{name}"})


def _scalar(value):
    """An attribute as a CSV/JSON cell: numbers and strings stay, arrays and lists become '; '-joined text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return text_value([_scalar(item) for item in np.asarray(value).ravel().tolist()]) if np.size(value) else ""
    return value


# ------------------------------------------------------------------------- many files: attributes only

@dataclass
class SummaryRun:
    """One run group: its table row, its attributes and its file's as stored, its histogram when asked for."""

    row: dict
    attrs: dict
    root: dict
    histogram: tuple = None  # (counts, edges in s), or None
    key: dict = None  # its configuration key (variation.py) when read with keys=True


@dataclass
class Summary:
    """What a summary read: the runs, the files it skipped with their reasons, and how many other files it passed."""

    runs: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (path, reason)
    other_files: int = 0


def find_files(paths):
    """(result files, count of other files): each PATH as given, each folder searched recursively for *.h5 / *.hdf5.

    A file named on the command line is always tried, whatever its name; in folders only the result suffixes
    count (other files are counted, not read). UsageError for a PATH that does not exist (a typo, not a damaged
    result)."""
    files, others = [], 0
    for path in map(Path, paths):
        if path.is_dir():
            for candidate in sorted(path.rglob("*")):
                if not candidate.is_file():
                    continue
                if candidate.suffix.lower() in RESULT_SUFFIXES and not candidate.name.startswith("."):
                    files.append(candidate)
                else:
                    others += 1
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return list(dict.fromkeys(files)), others


def read_file(path, histograms=False, keys=False):
    """The SummaryRuns of one file, in run-group order; UsageError with the reason it cannot be read.

    Only the attributes the table needs are read (each read costs ~0.1 ms), all of them for the page;
    keys: also what the configuration key needs (the stored settings and a few attributes; trends)."""
    light = hdf5.read_light(path, root_names=None if histograms else ROOT_KEYS + (KEY_ROOT_ATTRS if keys else ()),
                            run_names=None if histograms else RUN_ATTRS + (KEY_RUN_ATTRS if keys else ()),
                            histograms=histograms, config=keys, twins=RUN_KEYS)
    root = light.root
    found = []
    for run in light.runs:
        attrs = run.attrs
        row = {"file": str(path), "run": run.name}
        for key in ("backend", "device_name", "world_size", "created", "git_commit"):
            row[key] = root.get(key, "")
        row["hosts"] = text_value(root.get("hosts", ""))
        for key in RUN_KEYS:
            row[key] = value_of(attrs, key, "")  # a file without the old name: its unit-named twin
        row["dtype"] = attrs.get("dtype", root.get("dtype", ""))
        row["valid"] = bool(attrs.get("valid", True))
        row["validity_reason"] = text_value(attrs.get("validity_reason", ""))
        shown_by_rule(row, value_of(attrs, "latency_count"))
        row.update({name: "" if value is None else value
                    for name, value in shown.query_columns(Run.from_attrs(run.name, attrs)).items()})
        key = configuration_key(root, attrs) if keys else None
        found.append(SummaryRun(row=row, attrs=attrs, root=root, histogram=run.histogram, key=key))
    return found


def read_step_seconds(path, name):
    """Run group `name`'s step_seconds ([ranks, steps], s; None when it has none): what a trend's rule needs."""
    return hdf5.read_step_seconds(path, name)


def read_summary(paths, histograms=False, keys=False):
    """Every run of every result file under PATHS; unreadable files go to `skipped` with their reason.

    keys: each run also carries its configuration key (what trends pair runs by)."""
    files, others = find_files(paths)
    summary = Summary(other_files=others)
    for path in files:
        try:
            summary.runs.extend(read_file(path, histograms=histograms, keys=keys))
        except UsageError as error:
            reason, prefix = str(error), f"{path}: "
            summary.skipped.append((str(path), reason[len(prefix):] if reason.startswith(prefix) else reason))
    return summary


# ------------------------------------------------------------------------------------ file output

def write_rows(rows, path, kind):
    """Write rows as CSV or JSON to PATH ('-': stdout). Non-finite numbers become empty / null.

    Column names carry their unit (runfile/names.py: `latency_p50_ms`, `step_cv_percent`); unit-less aliases
    are left out."""
    rows = [exported(row) for row in rows]
    columns = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    clean = [{key: _cell(row.get(key, "")) for key in columns} for row in rows]
    handle = sys.stdout if str(path) == "-" else None
    try:
        if handle is None:
            handle = open(path, "w", newline="", encoding="utf-8")
        if kind == "csv":
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in clean)
        else:
            json.dump(clean, handle, indent=1)
            handle.write("\n")
    except BrokenPipeError:
        raise  # the reader went away (`| head`): not an error of the path; main() ends quietly
    except OSError as error:
        raise UsageError(f"cannot write --{kind} {path}: {error.strerror or error}")
    finally:
        if handle is not None and handle is not sys.stdout:
            handle.close()


def _cell(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
