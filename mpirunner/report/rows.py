"""Every read of a result file in mpirunner-report, and the rows its tables, CSV and JSON are made of. One file: the
numbers recomputed from its arrays; many files (summary): attributes alone, so hundreds read in seconds."""
import csv
import json
import math
import sys
from contextlib import nullcontext
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
from mpirunner.runfile.parts import Summary as StoredSummary  # rows.Summary is the many-file table
from mpirunner.runfile.run import Job, Run

RESULT_SUFFIXES = (".h5", ".hdf5")
# The summary fields every CSV/JSON row of `mpirunner-report FILE` starts with, in this order; other attributes follow.
ROW_FIELDS = ("file", "run", "batch_size", "samples_per_step", "device_iterations", "model", "precision",
              "dtype", "backend", "device_name", "world_size", "iterations", "throughput", "throughput_sum",
              "latency_min", "latency_mean", "latency_p50", "latency_p90", "latency_p95", "latency_p99",
              "latency_p99.9", "latency_max", "latency_std", "latency_cv", "step_cv", "step_cv_rank_max",
              "compile_seconds_max", "valid", "validity_reason")
# (column in CSV/JSON, with its unit; key of the row) of `summary`; scenario runs add their query columns (shown.py).
_UNIT_KEYS = ("throughput", "throughput_ci95_low", "throughput_ci95_high", "latency_p50", "latency_p50_ci95_low",
              "latency_p50_ci95_high", "latency_p99", "latency_p99_ci95_low", "latency_p99_ci95_high", "utilization",
              *shown.QUERY_COLUMNS)
COLUMNS = (*((key, key) for key in ("file", "run", "model", "precision", "dtype", "backend", "device_name",
                                    "world_size", "hosts", "batch_size", "samples_per_step")),
           *((unit_name(key), key) for key in _UNIT_KEYS), ("valid", "valid"), ("validity_reason", "validity_reason"),
           ("created_utc", "created"), ("git_commit", "git_commit"))
ROOT_KEYS = ("backend", "device_name", "world_size", "hosts", "created", "git_commit", "dtype")
RUN_KEYS = tuple(key for _column, key in COLUMNS if key == "dtype" or key not in ("file", "run", *ROOT_KEYS))
RUN_ATTRS = RUN_KEYS + ("dtype", "valid", "validity_reason", "latency_count", "query_latency_p50_ci95_low",
                        "query_latency_p50_ci95_high", "query_latency_p99_ci95_low", "query_latency_p99_ci95_high")
load = hdf5.load_job  # one results file as a Job, or UsageError with one clear line (missing, foreign, newer, damaged)


def sorted_runs(job):
    """The measured runs of a Job ordered by batch size (then name), the order of a sweep."""
    return sorted(job.measured_runs, key=lambda run: (run.point.batch_size or 0, run.name))


def first_attrs(job):
    """The attributes of the first measured run in sweep order ({} when the file holds none)."""
    runs = sorted_runs(job)
    return runs[0].attrs() if runs else {}


class RunRow(dict):
    """A summary row (the CSV/JSON cells) that also carries its Run (`.run`) and the arrays compare reads."""

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
    """One CSV/JSON row of a run: its stored attributes, then the values recomputed from its arrays."""
    attrs, root = run.attrs(), job.attrs()
    arrays = run.arrays.read("step_seconds", "step_start", "batch_latency", "compile_seconds")
    row = {"file": job.path, "run": run.name}
    row.update({key: root.get(key, "") for key in ("backend", "device_name", "world_size")})
    row.update({key: _scalar(value) for key, value in broken_roof(dict(attrs)).items()})  # utilisation > 1: broken
    row.setdefault("dtype", root.get("dtype", ""))
    samples = run.point.samples_per_step
    if "step_seconds" in arrays and "step_start" in arrays and samples:
        starts, seconds = _flat(arrays["step_start"]), _flat(arrays["step_seconds"])
        if seconds.size and seconds.size == starts.size:
            skew = float(attrs.get("barrier_skew_seconds", 0.0) or 0.0)  # widens the window (stats.throughput)
            row["throughput"] = stats.throughput(starts, seconds, samples, skew)
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
        stored = run.summary or StoredSummary()  # none stored: the rate is blank, not recomputed
        row.update(throughput=stored.throughput, throughput_sum=stored.throughput_sum, **query)
    if arrays.get("compile_seconds") is not None and np.size(arrays["compile_seconds"]):
        row["compile_seconds_max"] = float(np.nanmax(arrays["compile_seconds"]))
    row.update(validity_reason=text_value(attrs.get("validity_reason", "")), valid=bool(attrs.get("valid", True)))
    ordered = RunRow({key: row.get(key, "") for key in ROW_FIELDS[:ROW_FIELDS.index("throughput_sum") + 1]})
    ordered.update({key: row[key] for key in shown.QUERY_COLUMNS if key in query})
    ordered.update({key: row.get(key, "") for key in ROW_FIELDS if key not in ordered})
    ordered.update({key: row[key] for key in sorted(row) if key not in ordered})
    ordered.arrays = {key: arrays.get(key) for key in ("step_seconds", "step_start", "batch_latency")}
    ordered.run = run
    return ordered


def shown_by_rule(row, count):
    """Blank (None) the batch latency percentiles and intervals that `count` latencies cannot give."""
    for name, q in stats.PERCENTILES.items():
        if not shown.enough(count, q):
            keys = (f"latency_{name}", *(f"latency_{name}{end}" for end in ("_ci95", "_ci95_low", "_ci95_high")))
            row.update({key: None for key in keys if key in row or key == f"latency_{name}"})


def number_text(value, spec, width=0, missing="-"):
    """A finite number formatted (`spec`, right-aligned in `width`), else `missing`."""
    return f"{value:>{width}{spec}}" if finite_number(value) else f"{missing:>{width}}"


def _scalar(value):
    """An attribute as a CSV/JSON cell: numbers and strings stay, arrays and lists become '; '-joined text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return text_value([_scalar(item) for item in np.asarray(value).ravel().tolist()]) if np.size(value) else ""
    return value


@dataclass
class SummaryRun:
    """One run group of a summary: its table row, the Run and Job of its attributes, its histogram when asked for."""

    row: dict
    run: Run
    job: Job
    attrs: dict  # as stored: what the page lists for a run too odd for its block
    histogram: tuple = None  # (counts, edges in s), or None
    key: dict = None  # its configuration key (variation.py) when read with keys=True


@dataclass
class Summary:
    """What a summary read: the runs, the files it skipped with their reasons, and how many other files it passed."""

    runs: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (path, reason)
    other_files: int = 0


def find_files(paths):
    """(result files, count of other files): each PATH as given, folders searched for *.h5 / *.hdf5."""
    files, others = [], 0
    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if not path.is_dir():
            files.append(path)  # named on the command line: always tried, whatever its name
            continue
        found = sorted(item for item in path.rglob("*") if item.is_file())
        results = [item for item in found if item.suffix.lower() in RESULT_SUFFIXES and not item.name.startswith(".")]
        files.extend(results)
        others += len(found) - len(results)
    return list(dict.fromkeys(files)), others


def read_file(path, histograms=False, keys=False):
    """The SummaryRuns of one file: only the attributes the table (keys: and the key) needs, all for the page."""
    light = hdf5.read_light(path, root_names=None if histograms else ROOT_KEYS + (KEY_ROOT_ATTRS if keys else ()),
                            run_names=None if histograms else RUN_ATTRS + (KEY_RUN_ATTRS if keys else ()),
                            histograms=histograms, config=keys, twins=RUN_KEYS)
    root, job = light.root, Job.from_attrs(light.root, path=path)
    found = []
    for light_run in light.runs:
        attrs, run = light_run.attrs, Run.from_attrs(light_run.name, light_run.attrs)
        row = {"file": str(path), "run": run.name,
               **{key: root.get(key, "") for key in ("backend", "device_name", "world_size", "created", "git_commit")},
               "hosts": text_value(root.get("hosts", "")),
               **{key: value_of(attrs, key, "") for key in RUN_KEYS}}  # a file without the old name: its twin
        row.update(dtype=attrs.get("dtype", root.get("dtype", "")), valid=run.verdict.valid,
                   validity_reason=text_value(attrs.get("validity_reason", "")))
        shown_by_rule(row, value_of(attrs, "latency_count"))
        row.update({name: "" if value is None else value for name, value in shown.query_columns(run).items()})
        key = configuration_key(root, attrs) if keys else None
        found.append(SummaryRun(row=row, run=run, job=job, attrs=attrs, histogram=light_run.histogram, key=key))
    return found


def read_summary(paths, histograms=False, keys=False):
    """Every run of every result file under PATHS; unreadable files go to `skipped` with their reason."""
    files, others = find_files(paths)
    summary = Summary(other_files=others)
    for path in files:
        try:
            summary.runs.extend(read_file(path, histograms=histograms, keys=keys))
        except UsageError as error:
            summary.skipped.append((str(path), str(error).removeprefix(f"{path}: ")))
    return summary


def write_rows(rows, path, kind):
    """Write rows as CSV or JSON to PATH ('-': stdout), names with their unit; non-finite numbers empty / null."""
    rows = [exported(row) for row in rows]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[(key, row.get(key, "")) for key in columns] for row in rows]
    clean = [{key: None if isinstance(v, float) and not math.isfinite(v) else v for key, v in row} for row in cells]
    try:
        with nullcontext(sys.stdout) if str(path) == "-" else open(path, "w", newline="", encoding="utf-8") as handle:
            if kind == "csv":  # the csv module writes None as an empty cell
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(clean)
            else:
                json.dump(clean, handle, indent=1)
                handle.write("\n")
    except BrokenPipeError:
        raise  # the reader went away (`| head`): not an error of the path; main() ends quietly
    except OSError as error:
        raise UsageError(f"cannot write --{kind} {path}: {error.strerror or error}")
